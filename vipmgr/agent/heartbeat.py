"""The node's one heartbeat: every member's event goes through ``core.heartbeat.step``,
and the packet it yields leaves once per interface.

Members (one per gateway, agent/member.py) register here. When an event makes
one election advertise, all of them do, at the same instant (the core's rule);
this adapter maps each core advert onto the wire's (VRID, interval, egress IP
are the member's) and hands every interface its part of the packet at once, so
the node sends one datagram per interval and interface, whatever the number of
gateways (docs/wire.md splits it only past one MTU).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Callable

from vipmgr.agent.metrics import AgentMetrics
from vipmgr.core.election import Election
from vipmgr.core.heartbeat import SendHeartbeat, step
from vipmgr.core.messages import Advert as CoreAdvert, Event
from vipmgr.wire.message import Advert as WireAdvert, Role as WireRole

if TYPE_CHECKING:
    from vipmgr.agent.member import GatewayMember

Send = Callable[[str, list[WireAdvert]], None]  # (interface, the node's adverts on it)


def to_wire(adv: CoreAdvert, vrid: int, egress_ip: str | None) -> WireAdvert:
    return WireAdvert(node=adv.node, gateway=adv.gateway, vrid=vrid,
                      role=WireRole.ACTIVE if adv.role == "active" else WireRole.STANDBY,
                      epoch=adv.epoch, priority=adv.priority,
                      interval_ms=max(1, round(adv.interval * 1000)),
                      egress_ip=egress_ip, healthy=adv.eligible, etcd_reachable=adv.etcd_ok,
                      heard=adv.heard, stamp=adv.stamp, echo_node=adv.echo_node,
                      echo_stamp=adv.echo_stamp)


def from_wire(adv: WireAdvert) -> CoreAdvert:
    return CoreAdvert(gateway=adv.gateway, node=adv.node,
                      role="active" if adv.role == WireRole.ACTIVE else "standby",
                      epoch=adv.epoch, priority=adv.priority, eligible=adv.healthy,
                      etcd_ok=adv.etcd_reachable, heard=tuple(adv.heard), stamp=adv.stamp,
                      echo_node=adv.echo_node, echo_stamp=adv.echo_stamp,
                      interval=adv.interval_ms / 1000)


class _Elections(Mapping[str, Election]):
    """The members' elections as the core's step reads them (a live view: a member may
    swap its election, tests do)."""

    def __init__(self, members: dict[str, GatewayMember]):
        self._members = members

    def __getitem__(self, gateway: str) -> Election:
        return self._members[gateway].election

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)


class NodeHeartbeat:
    def __init__(self, send: Send, metrics: AgentMetrics, clock: Callable[[], float]):
        self.send = send
        self.metrics = metrics
        self.clock = clock
        self.members: dict[str, GatewayMember] = {}
        self._elections = _Elections(self.members)

    def add(self, member: GatewayMember) -> None:
        self.members[member.name] = member

    def remove(self, member: GatewayMember) -> None:
        if self.members.get(member.name) is member:
            del self.members[member.name]

    def feed(self, gateway: str, event: Event) -> None:
        """Hand one event to ``gateway``'s election; carry out what every election the
        step touched asks, then send the packet."""
        done = step(self._elections, gateway, event, self.clock())
        for name, actions in done.actions.items():
            member = self.members.get(name)
            if member is not None:
                member.apply(actions)
        if done.heartbeat is not None:
            self._send(done.heartbeat)

    def _send(self, packet: SendHeartbeat) -> None:
        parts: dict[str, list[WireAdvert]] = defaultdict(list)
        for advert in packet.adverts:
            member = self.members[advert.gateway]
            interface = member.info.interface
            if interface:
                parts[interface].append(to_wire(advert, member.vrid, member.info.egress_ip))
                self.metrics.heartbeat_sent(member.name, interface)
        for interface, adverts in parts.items():
            self.send(interface, adverts)
