"""Targeted conntrack deletion: only the flows of the gateway that moved, never a global flush.

Two shapes, matching the two moments of a failover:

- taking a gateway: stale entries of its selected sources to its CIDRs (they
  were created while another node served them, or before any did), so the next
  packet builds a fresh entry that goes through our SNAT;
- leaving it: entries SNATed to its egress IP (reply destination = egress IP
  while the original source is someone else), so replies stop being un-NATed
  here. The node's own connections from that IP are not NATed and survive.

The table is dumped once per call and matched in Python: one netlink dump is
cheaper than one filtered delete per source IP when a gateway has 10k sources.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Sequence

from pyroute2 import Conntrack


@dataclass(frozen=True)
class FlowFlush:
    """Entries whose original direction is one of ``sources`` to one of ``cidrs``."""

    why: str
    sources: frozenset[str]
    cidrs: tuple[str, ...]

    def matches(self, orig_src: str, orig_dst: str, reply_dst: str) -> bool:
        if orig_src not in self.sources:
            return False
        dst = ipaddress.IPv4Address(orig_dst)
        return any(dst in ipaddress.IPv4Network(c) for c in self.cidrs)


@dataclass(frozen=True)
class NatFlush:
    """Entries source-NATed to ``egress_ip``."""

    why: str
    egress_ip: str

    def matches(self, orig_src: str, orig_dst: str, reply_dst: str) -> bool:
        return reply_dst == self.egress_ip and orig_src != self.egress_ip


def delete_matching(ct: Conntrack, specs: Sequence[FlowFlush | NatFlush]) -> dict[str, int]:
    """Delete the IPv4 entries any spec matches; entries deleted per spec's ``why``.

    ``ct`` belongs to the namespace (opened on its NetnsThread, kept open: opening
    one costs milliseconds).
    """
    counts = {spec.why: 0 for spec in specs}
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
                counts[spec.why] += 1
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
