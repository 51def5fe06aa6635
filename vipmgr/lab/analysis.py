"""What one failover trial did to a UDP stream: pure functions over the instruments' logs.

Inputs are what the lab's instruments wrote: the echo service's UDP log (one
record per datagram: seq, source IP, arrival), its L2 log (the same plus the
MAC that delivered the frame), the ARP prober's log (which MAC answered which
probe for the VIP), and what the sender says it sent. All times are
CLOCK_MONOTONIC, one clock for every namespace of the host.

Definitions (docs/lab.md, "The failover benchmark"):

- **outage**: the longest gap between two consecutive *good* arrivals (source
  == the expected egress IP) that ends after the fault was injected. If no
  good datagram arrives after the fault, the gap runs to the sender's last
  send and the trial is marked not recovered (a lower bound).
- **lost**: datagrams sent and never seen by the echo service, whatever
  their source.
- **wrong source**: datagrams that arrived with a source other than the
  expected egress IP (a leak: a node's own address, or no SNAT at all).
- **dual answer**: ARP probes for the VIP answered by two or more different
  MACs: two nodes held the VIP at the same moment.
- **MAC flip-backs**: good datagrams delivered by a MAC that had already been
  replaced by another one in this trial (A, B, A): traffic-level evidence of
  two nodes forwarding for the VIP at once.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

from vipmgr.lab.echo import UdpRecord
from vipmgr.lab.probe import ArpAnswer


@dataclass(frozen=True)
class Sent:
    """What the stream sender reports: sequence numbers ``first_seq .. first_seq+count-1``."""

    first_seq: int
    count: int
    start: float
    end: float

    def __contains__(self, seq: int) -> bool:
        return self.first_seq <= seq < self.first_seq + self.count


@dataclass
class TrialResult:
    trial: int
    fault: str
    fault_at: float
    active_before: str | None
    active_after: str | None = None
    outage_ms: float = 0.0
    recovered: bool = True
    sent: int = 0
    received: int = 0
    lost: int = 0
    duplicates: int = 0
    wrong_source: int = 0
    wrong_sources: dict[str, int] = field(default_factory=dict)
    dual_answer: int = 0
    mac_flip_backs: int = 0
    served_by: list[str] = field(default_factory=list)  # delivering MACs (or nodes), in order
    arp_probes_answered: int = 0
    tcp_flows: int = 0               # --tcp-flows: long-lived TCP connections across the fault
    tcp_survived: int = 0
    tcp_worst_stall_ms: float = 0.0  # over the surviving connections

    def to_dict(self) -> dict:
        return asdict(self)


def outage(good_arrivals: Sequence[float], fault_at: float, stream_end: float
           ) -> tuple[float, bool]:
    """(longest gap in seconds ending after ``fault_at``, recovered?) over sorted arrivals."""
    before = [t for t in good_arrivals if t <= fault_at]
    after = [t for t in good_arrivals if t > fault_at]
    if not after:
        last = before[-1] if before else fault_at
        return max(0.0, stream_end - last), False
    points = ([before[-1]] if before else []) + after
    gaps = [b - a for a, b in zip(points, points[1:])]
    return max(gaps, default=0.0), True


def dual_answers(answers: Iterable[ArpAnswer]) -> tuple[int, int]:
    """(probes answered by two or more MACs, probes answered at all)."""
    macs: dict[int, set[str]] = defaultdict(set)
    for a in answers:
        macs[a.probe].add(a.mac)
    return sum(1 for m in macs.values() if len(m) > 1), len(macs)


def mac_sequence(l2: Iterable[UdpRecord]) -> tuple[list[str], int]:
    """(MACs in the order they took over delivering, flip-backs to an already replaced MAC)."""
    order: list[str] = []
    flip_backs = 0
    for rec in sorted(l2, key=lambda r: r.arrival):
        if order and rec.mac == order[-1]:
            continue
        if rec.mac in order:
            flip_backs += 1
        order.append(rec.mac)
    return order, flip_backs


def analyze(trial: int, fault: str, fault_at: float, sent: Sent, good_source: str,
            udp: Iterable[UdpRecord], l2: Iterable[UdpRecord], arp: Iterable[ArpAnswer],
            active_before: str | None, active_after: str | None,
            mac_names: dict[str, str] | None = None) -> TrialResult:
    """One trial's figures from the instruments' logs (records outside ``sent`` are ignored)."""
    mine = [r for r in udp if r.seq in sent]
    seen: set[int] = set()
    duplicates = 0
    wrong: dict[str, int] = defaultdict(int)
    for r in mine:
        if r.seq in seen:
            duplicates += 1
        seen.add(r.seq)
        if r.source != good_source:
            wrong[r.source] += 1
    good = sorted(r.arrival for r in mine if r.source == good_source)
    gap, recovered = outage(good, fault_at, sent.end)
    names = mac_names or {}
    order, flips = mac_sequence(r for r in l2 if r.seq in sent and r.source == good_source)
    dual, answered = dual_answers(arp)
    return TrialResult(
        trial=trial, fault=fault, fault_at=fault_at, active_before=active_before,
        active_after=active_after, outage_ms=round(gap * 1000, 1), recovered=recovered,
        sent=sent.count, received=len(seen), lost=sent.count - len(seen),
        duplicates=duplicates, wrong_source=sum(wrong.values()), wrong_sources=dict(wrong),
        dual_answer=dual, mac_flip_backs=flips, served_by=[names.get(m, m) for m in order],
        arp_probes_answered=answered)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100): an observed value, never interpolated."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarize(results: Sequence[TrialResult]) -> dict:
    """Outage p50/p99/max over trials and the totals the benchmark reports."""
    outages = [r.outage_ms for r in results]
    return {
        "trials": len(results),
        "outage_ms": {"p50": percentile(outages, 50), "p99": percentile(outages, 99),
                      "max": max(outages, default=math.nan)},
        "not_recovered": sum(1 for r in results if not r.recovered),
        "sent": sum(r.sent for r in results),
        "lost": sum(r.lost for r in results),
        "duplicates": sum(r.duplicates for r in results),
        "wrong_source": sum(r.wrong_source for r in results),
        "dual_answer": sum(r.dual_answer for r in results),
        "mac_flip_backs": sum(r.mac_flip_backs for r in results),
        **({"tcp": {"flows": results[0].tcp_flows,
                    "survived_min": min(r.tcp_survived for r in results),
                    "survived_p50": percentile([r.tcp_survived for r in results], 50),
                    "worst_stall_ms_max": max(r.tcp_worst_stall_ms for r in results)}}
           if results and results[0].tcp_flows else {}),
    }
