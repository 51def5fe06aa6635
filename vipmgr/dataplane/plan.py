"""What one node's kernel must hold for egress gateways: a pure desired-state plan.

The plan is computed from the resources (gateways, policies, VMs, nodes) and
"who is active per gateway"; it has no I/O and no clock, so the agent, the
simulator and the tests all get the same answer from the same inputs. The
reconciler (``vipmgr.dataplane.reconcile``) turns it into kernel state.

A node may play three parts for a gateway, and the plan says which:

- **member** (its labels match the gateway's nodeSelector): it *gates* the
  gateway's selected traffic, i.e. drops it unless this node is armed as the
  active one. A stale worker that still steers to a former active therefore
  sees its packets dropped there, never forwarded with the VM's own source.
- **active**: additionally holds the egress IP, SNATs, routes replies back to
  the VMs' nodes and (VirtualIPAddress mode) answers ARP for the VIP.
- **steering** (it hosts VMs a policy selects): marks their traffic to the
  policy's CIDRs and routes it to the active node; with no active node the
  traffic is dropped and counted (fail closed).

Selections are kept per policy, not merged per gateway: two policies of one
gateway with different CIDRs must not select each other's VMs for each
other's destinations.

In-cluster destinations (every registered node's and VM's address) are left
out of all three parts, as Cilium's egress gateway leaves in-cluster traffic
alone: a policy for ``0.0.0.0/0`` selects what leaves the cluster, so a
selected VM still talks to its neighbours directly, also while its gateway
has no active node.
"""

from __future__ import annotations

import functools
import ipaddress
import zlib
from dataclasses import dataclass
from typing import Iterable, Mapping

from vipmgr.config.timers import Timers
from vipmgr.dataplane.selection import SelectionIndex
from vipmgr.resources.models import (
    MODE_PRIMARY,
    MODE_VIP,
    EgressGateway,
    EgressGatewayPolicy,
    Node,
    VirtualMachine,
)

SLOT_MIN, SLOT_MAX = 1, 255  # fwmark byte and route-table offset; see vipmgr.dataplane.layout


@dataclass(frozen=True)
class GarpSettings:
    """Gratuitous ARP after taking a VIP: ``count`` frames ``interval`` apart, then one
    more burst every ``refresh`` seconds (0 = no periodic refresh)."""

    count: int = 3
    interval: float = 0.02
    refresh: float = 0.0


@dataclass(frozen=True)
class Selection:
    """One policy's share of a gateway: these source IPs to these destination CIDRs."""

    policy: str
    sources: frozenset[str]
    cidrs: tuple[str, ...]  # collapsed, sorted: no overlaps, so set elements are exact


@dataclass(frozen=True)
class ActiveRole:
    """What the active node of a gateway holds besides the gate."""

    mode: str
    interface: str
    egress_ip: str
    add_address: bool  # VirtualIPAddress: the VIP is ours to add as a /32 (and to guard ARP for)
    return_routes: tuple[tuple[str, str], ...]  # (VM IP, its node's internal IP), sorted
    garp: GarpSettings
    # the gateway's own spec.failover.timers.deadmanTimeout: no arm outlives it
    deadman_timeout: float = Timers().deadman_timeout


@dataclass(frozen=True)
class GatewayPlan:
    """A gateway this node is a member of: gated always, served when ``active`` is set.

    ``role`` is what this node would serve as (None: it cannot, e.g. no address on the
    interface): its SNAT and leak-guard rules are kept ready on every member, so that a
    take only links them in instead of writing one rule per policy."""

    name: str
    selections: tuple[Selection, ...]
    active: ActiveRole | None = None
    role: ActiveRole | None = None


@dataclass(frozen=True)
class SteerPlan:
    """A gateway whose selected VMs run here: steer to ``next_hop`` or drop when None."""

    name: str
    slot: int  # fwmark slot << 16 and route table 7600 + slot (node-local, deterministic)
    selections: tuple[Selection, ...]  # sources: this node's VMs only
    next_hop: str | None


@dataclass(frozen=True)
class NodePlan:
    node: str
    gateways: tuple[GatewayPlan, ...] = ()
    steering: tuple[SteerPlan, ...] = ()
    problems: tuple[str, ...] = ()  # why something could not be planned (never silently)
    in_cluster: frozenset[str] = frozenset()  # destinations never steered, gated or SNATed

    @property
    def active(self) -> tuple[GatewayPlan, ...]:
        return tuple(g for g in self.gateways if g.active is not None)


def collapse_cidrs(cidrs: Iterable[str]) -> tuple[str, ...]:
    """Merge overlapping/adjacent CIDRs so the nft interval set holds exactly these."""
    return _collapsed(tuple(cidrs))


@functools.lru_cache(maxsize=8192)
def _collapsed(cidrs: tuple[str, ...]) -> tuple[str, ...]:
    """Cached: every plan collapses every policy's CIDRs (~60 µs each with ipaddress)."""
    nets = ipaddress.collapse_addresses(ipaddress.IPv4Network(c, strict=False) for c in cidrs)
    return tuple(sorted(str(n) for n in nets))


def gateway_slots(names: Iterable[str]) -> dict[str, int]:
    """A stable small number per gateway: CRC-32 of the name, linear probing on collision
    (in sorted name order, so every call with the same names agrees)."""
    span = SLOT_MAX - SLOT_MIN + 1
    names = sorted(set(names))
    if len(names) > span:
        raise ValueError(f"at most {span} gateways can be steered from one node, not {len(names)}")
    taken: dict[int, str] = {}
    out: dict[str, int] = {}
    for name in names:
        slot = zlib.crc32(name.encode()) % span
        while slot + SLOT_MIN in taken:
            slot = (slot + 1) % span
        taken[slot + SLOT_MIN] = name
        out[name] = slot + SLOT_MIN
    return out


def egress_ip(gateway: EgressGateway, node: Node,
              interfaces: Mapping[str, ipaddress.IPv4Interface] | None = None
              ) -> tuple[str | None, str | None, str]:
    """(interface, egress IP, reason) for ``node`` serving ``gateway``; the IP is None with
    the reason when the node cannot serve it (it is then not eligible).

    ``interfaces`` are the node's own interfaces with prefixes, needed only to place a VIP
    whose gateway names no interface: it goes where its subnet is.
    """
    src = gateway.source_ip
    if src.mode == MODE_PRIMARY:
        ifname = src.interface_name
        ip = node.addresses.get(ifname or "")
        if ip is None:
            return ifname, None, f"node {node.name} has no IPv4 address on {ifname}"
        return ifname, ip, ""
    if src.mode == MODE_VIP and src.virtual_ip:
        ifname = src.interface_name
        if ifname is None:
            target = ipaddress.IPv4Address(src.virtual_ip)
            ifname = next((name for name, iface in sorted((interfaces or {}).items())
                           if target in iface.network), None)
            if ifname is None:
                return None, None, (f"node {node.name} has no interface in the subnet of "
                                    f"{src.virtual_ip}; set virtualIPAddress.interfaceName")
        return ifname, src.virtual_ip, ""
    return None, None, f"gateway {gateway.name} has no usable sourceIP ({src.mode})"


def build_node_plan(node_name: str, gateways: Iterable[EgressGateway],
                    policies: Iterable[EgressGatewayPolicy], vms: Iterable[VirtualMachine],
                    nodes: Iterable[Node], active: Mapping[str, str | None], *,
                    interfaces: Mapping[str, ipaddress.IPv4Interface] | None = None,
                    garp: GarpSettings = GarpSettings()) -> NodePlan:
    """The plan for ``node_name`` given every resource and the active node per gateway
    (``plan_node`` with a selection index built for this one call)."""
    return plan_node(node_name, gateways, nodes, SelectionIndex.of(node_name, policies, vms),
                     active, interfaces=interfaces, garp=garp)


def plan_node(node_name: str, gateways: Iterable[EgressGateway], nodes: Iterable[Node],
              selection: SelectionIndex, active: Mapping[str, str | None], *,
              interfaces: Mapping[str, ipaddress.IPv4Interface] | None = None,
              garp: GarpSettings = GarpSettings()) -> NodePlan:
    """The plan for ``node_name``; policies and VMs come from ``selection`` (kept up to date
    by the caller, so this costs the number of policies and gateways, not of VMs).

    ``active`` maps gateway name to the node that holds it (None or missing: nobody).
    """
    gws = {g.name: g for g in gateways}
    by_node = {n.name: n for n in nodes}
    me = by_node.get(node_name)
    problems: list[str] = []
    if me is None:
        problems.append(f"node {node_name} is not registered; planning nothing")
        return NodePlan(node_name, problems=tuple(problems))

    # policy -> (gateway, all selected sources, local selected sources, collapsed cidrs)
    per_gateway: dict[str, list[tuple[str, frozenset[str], frozenset[str], tuple[str, ...]]]] = {}
    return_routes: dict[str, dict[str, str]] = {}
    for name in sorted(selection.policies):
        pol = selection.policies[name]
        gw = gws.get(pol.egress_gateway_name)
        if gw is None:
            problems.append(f"policy {pol.name}: gateway {pol.egress_gateway_name} does not exist; "
                            "its VMs are not steered")
            continue
        share = selection.share(name)
        per_gateway.setdefault(gw.name, []).append(
            (pol.name, share.sources, share.local, collapse_cidrs(pol.destination_cidrs)))
        routes = return_routes.setdefault(gw.name, {})
        unroutable: set[str] = set()
        for ip, host_name in share.remote:
            host = by_node.get(host_name)
            if host is None or host.internal_ip is None:
                unroutable.add(host_name)
                continue
            routes[ip] = host.internal_ip
        for host_name in sorted(unroutable):
            problems.append(f"policy {pol.name}: VMs on node {host_name or '?'}: that node has no "
                            "internal IP; replies to them cannot be routed back")

    slots = gateway_slots(gws)
    gateway_plans: list[GatewayPlan] = []
    steer_plans: list[SteerPlan] = []
    for name in sorted(gws):
        gw = gws[name]
        shares = per_gateway.get(name, [])
        holder = active.get(name)
        if gw.node_selector.matches(me.labels) or holder == node_name:
            role = None
            ifname, ip, why = egress_ip(gw, me, interfaces)
            if ip is not None and ifname is not None:
                role = ActiveRole(gw.source_ip.mode, ifname, ip, gw.source_ip.mode == MODE_VIP,
                                  tuple(sorted(return_routes.get(name, {}).items())), garp,
                                  gw.failover.timers.deadman_timeout)
            elif holder == node_name:
                problems.append(f"gateway {name}: {why}; not serving it")
            gateway_plans.append(GatewayPlan(
                name, tuple(Selection(p, src, cidrs) for p, src, _, cidrs in shares),
                role if holder == node_name else None, role))
        local = tuple(Selection(p, loc, cidrs) for p, _, loc, cidrs in shares if loc)
        if local and holder != node_name:
            next_hop = None
            if holder is not None:
                next_hop = by_node[holder].internal_ip if holder in by_node else None
                if next_hop is None:
                    problems.append(f"gateway {name}: active node {holder} has no internal IP; "
                                    "its traffic is dropped here")
            steer_plans.append(SteerPlan(name, slots[name], local, next_hop))
    in_cluster = frozenset()
    if gateway_plans or steer_plans:
        in_cluster = frozenset(ip for n in by_node.values()
                               for ip in (n.internal_ip, *n.addresses.values()) if ip) \
            | selection.addresses()
    return NodePlan(node_name, tuple(gateway_plans), tuple(steer_plans), tuple(problems),
                    in_cluster)
