"""Targeted conntrack deletion: only the flows of the gateway that moved, never a global flush.

Two shapes, matching the two moments of a failover:

- taking a gateway: stale entries of its selected sources to its CIDRs (they
  were created while another node served them, or before any did), so the next
  packet builds a fresh entry that goes through our SNAT. In VirtualIPAddress
  mode an entry already SNATed to the VIP is not stale: it is a flow this node
  carries on (injected from the replicated state before the take, see
  vipmgr.dataplane.ctsync), with the mapping every member would give it, so
  it is kept (``FlowFlush.keep_nat_to``);
- leaving it: entries SNATed to its egress IP (reply destination = egress IP
  while the original source is someone else), so replies stop being un-NATed
  here. The node's own connections from that IP are not NATed and survive.

The table is dumped once per call and matched in Python: one netlink dump is
cheaper than one filtered delete per source IP when a gateway has 10k sources.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

from pyroute2 import Conntrack

if TYPE_CHECKING:
    from vipmgr.dataplane.plan import Selection


# Why entries are deleted: a bounded set, so it can label a metric.
TAKE, LEAVE, STEER = "take", "leave", "steer"
FlushKey = tuple[str, str]  # (gateway, reason)


@dataclass(frozen=True)
class FlowFlush:
    """Entries whose original direction is one of ``sources`` to one of ``cidrs``."""

    gateway: str
    reason: str  # TAKE or STEER
    sources: frozenset[str]
    cidrs: tuple[str, ...]
    keep_nat_to: str | None = None  # VIP mode take: entries SNATed to the VIP are resumed

    @property
    def key(self) -> FlushKey:
        return (self.gateway, self.reason)

    def matches(self, orig_src: str, orig_dst: str, reply_dst: str) -> bool:
        if orig_src not in self.sources or reply_dst == self.keep_nat_to:
            return False
        dst = ipaddress.IPv4Address(orig_dst)
        return any(dst in ipaddress.IPv4Network(c) for c in self.cidrs)


@dataclass(frozen=True)
class NatFlush:
    """Entries source-NATed to ``egress_ip`` (the gateway was left)."""

    gateway: str
    egress_ip: str

    @property
    def key(self) -> FlushKey:
        return (self.gateway, LEAVE)

    def matches(self, orig_src: str, orig_dst: str, reply_dst: str) -> bool:
        return reply_dst == self.egress_ip and orig_src != self.egress_ip


def take_flushes(gateway: str, selections: Iterable["Selection"], egress_ip: str,
                 vip_mode: bool) -> list[FlowFlush]:
    """What taking ``gateway`` deletes: one FlowFlush per selection (policy).

    PrimaryIP mode: every entry of the selected sources to the CIDRs (the source
    address changes with the node, so those flows must break: the server knows them
    by the old node's address). VirtualIPAddress mode: the same except entries
    already SNATed to the VIP, which the new active resumes."""
    keep = egress_ip if vip_mode else None
    return [FlowFlush(gateway, TAKE, sel.sources, sel.cidrs, keep) for sel in selections]


def delete_matching(ct: Conntrack, specs: Sequence[FlowFlush | NatFlush]
                    ) -> dict[FlushKey, int]:
    """Delete the IPv4 entries any spec matches; entries deleted per (gateway, reason).

    ``ct`` belongs to the namespace (opened on its NetnsThread, kept open: opening
    one costs milliseconds).
    """
    counts = {spec.key: 0 for spec in specs}
    if not specs:
        return counts
    doomed = []
    for entry in ct.dump_entries():
        orig, reply = entry.tuple_orig, entry.tuple_reply
        if orig.saddr is None or ":" in str(orig.saddr):
            continue
        for spec in specs:
            if spec.matches(orig.saddr, orig.daddr, reply.daddr):
                doomed.append(entry)
                counts[spec.key] += 1
                break
    for entry in doomed:
        _delete(ct, entry)
    return counts


def _delete(ct: Conntrack, entry) -> None:
    try:
        ct.delete(entry)
    except OSError as exc:  # gone meanwhile (ENOENT) is what we wanted anyway
        if exc.errno != 2:
            raise
