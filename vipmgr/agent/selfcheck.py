"""The "datapath ready" criterion: the agent's own check of the kernel it needs.

The seed's third readiness criterion (cilium-agent Ready) becomes: the
interfaces this node would use are up with carrier, an egress route exists,
and the last dataplane reconcile succeeded (our nft table is in place).

What is wrong splits in two: what every gateway needs (the internal interface,
the default route) makes the node ineligible for all of them; what one gateway
needs (its egress interface, its address or VIP on it) makes the node
ineligible for that gateway alone — one bad gateway never moves another.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from pyroute2 import IPRoute

from vipmgr.dataplane.plan import egress_ip
from vipmgr.resources.models import MODE_VIP, EgressGateway, Node

IFF_UP = 0x1


@dataclass(frozen=True)
class KernelCheck:
    """One reading of the links this node uses and of its default route."""

    links: Mapping[str, str] = field(default_factory=dict)  # interface -> problem; absent: fine
    default_route: bool = True

    def problems_of(self, interfaces: Iterable[str]) -> list[str]:
        return [self.links[name] for name in sorted(set(interfaces)) if name in self.links]


def check_kernel(interfaces: Iterable[str]) -> KernelCheck:
    """Read the named interfaces and the default route in this netns."""
    links: dict[str, str] = {}
    with IPRoute() as ipr:
        for name in sorted(set(interfaces)):
            found = ipr.get_links(ifname=name)
            if not found:
                links[name] = f"interface {name} does not exist"
                continue
            link = found[0]
            if not link["flags"] & IFF_UP:
                links[name] = f"interface {name} is down"
            elif link.get_attr("IFLA_CARRIER") == 0:
                links[name] = f"interface {name} has no carrier"
        default_route = bool(ipr.get_default_routes(family=2))
    return KernelCheck(links, default_route)


def node_problems(kernel: KernelCheck, internal_interface: str) -> list[str]:
    """What keeps this node from serving any gateway."""
    problems = kernel.problems_of([internal_interface])
    if not kernel.default_route:
        problems.append("no default (egress) route")
    return problems


def gateway_problems(gw: EgressGateway, node: Node,
                     interfaces: Mapping[str, ipaddress.IPv4Interface],
                     kernel: KernelCheck) -> list[str]:
    """What keeps this node from serving ``gw`` in particular, each with its fix."""
    ifname, ip, why = egress_ip(gw, node, interfaces)
    if ifname is None or ip is None:
        return [why]
    problems = kernel.problems_of([ifname])
    if problems:
        return problems
    own = interfaces.get(ifname)
    if gw.source_ip.mode == MODE_VIP and own is not None \
            and ipaddress.IPv4Address(ip) not in own.network:
        problems.append(f"virtual IP {ip} is outside {ifname}'s subnet {own.network}: no "
                        f"neighbour would reach it there; choose an address in {own.network} "
                        f"or set virtualIPAddress.interfaceName to the interface of its subnet")
    return problems


# rtnetlink multicast groups (linux/rtnetlink.h): links, IPv4 addresses, IPv4 routes
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE = 0x1, 0x10, 0x40


class KernelChanges:
    """Wakes the self-check when a link, an IPv4 address or an IPv4 route changes.

    Only a wake-up is needed, not the messages: a raw rtnetlink socket subscribed to
    the three groups, read by the event loop (``add_reader``), drained and discarded.
    pyroute2's IPRoute.bind would parse every message (our own 2,000-route take is
    2,000 of them) on a thread of its own; this costs one recv per burst. What
    changed is then read by ``check_kernel`` once; a slow periodic check stays as
    the backstop for anything missed (a full socket buffer drops notifications).
    """

    def __init__(self, on_change) -> None:
        self._on_change = on_change
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK,
                                   socket.NETLINK_ROUTE)
        self._sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE))
        self._loop = None

    def start(self, loop) -> None:
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            while self._sock.recv(65536):
                pass
        except BlockingIOError:
            pass
        except OSError:  # ENOBUFS: notifications were lost; the check reads everything anyway
            pass
        self._on_change()

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
