"""Default priorities by rendezvous hashing, so gateways sharing nodes spread out.

Each (gateway, node) pair gets a pseudo-random priority from a stable hash:
every node computes the same ranking without coordination, each gateway gets
an independent ranking (so different gateways prefer different nodes), and
adding or removing a node only moves the gateways that ranked it first. An
explicit per-node priority from ``spec.failover.priorities`` overrides it.

Independent rankings still put two gateways first on the same node by chance
(one time in three for two gateways on three nodes). ``balanced_tops`` removes
that: from the member sets alone (which every agent reads from the same store)
it gives each gateway a first choice so that no node is first for more gateways
than needed, and ``placement_priority`` raises that node above every rendezvous
priority. Every node computes the same answer with no runtime coordination, so
it also holds when all nodes start at once. Only the first choice moves; the
rest of each ranking stays rendezvous.

Placement that holds (``choices``): the first choices above are computed over
every member; a gateway whose first choice is not *present* (eligible, see
:class:`PresentSet`) moves to the least loaded present member, so only the
gateways of a missing node move, and back when it returns. Each gateway also
gets a second choice: where it would go if its first choice went missing
(the same computation without that node). The second choice ranks just below
the first, so a crash fails over straight into the spread the placement
computes once the node counts as gone: no move after a single failure.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Iterable, Mapping

PRIORITY_MIN, PRIORITY_MAX = 1, 254  # VRRP: 0 means "releasing", 255 "address owner"
SECOND_PRIORITY = PRIORITY_MAX - 1   # the placement's second choice
RENDEZVOUS_MAX = PRIORITY_MAX - 2    # every other member: below both choices


def rendezvous_priority(gateway: str, node: str) -> int:
    digest = hashlib.blake2b(f"{gateway}\0{node}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (RENDEZVOUS_MAX - PRIORITY_MIN + 1) + PRIORITY_MIN


def node_priority(gateway: str, node: str, priorities: Mapping[str, int] | None = None) -> int:
    if priorities and node in priorities:
        return priorities[node]
    return rendezvous_priority(gateway, node)


def rank_key(priority: int, node: str) -> tuple[int, str]:
    """Sort key: higher priority first, then the node name, so every node agrees on ties."""
    return (-priority, node)


def ranked_nodes(gateway: str, nodes: Iterable[str],
                 priorities: Mapping[str, int] | None = None) -> list[str]:
    return sorted(nodes, key=lambda n: rank_key(node_priority(gateway, n, priorities), n))


def balanced_tops(members: Mapping[str, Iterable[str]],
                  priorities: Mapping[str, Mapping[str, int]] | None = None) -> dict[str, str]:
    """Each gateway's first choice, spread: gateways in name order each take, among
    their members, the node that is first for the fewest gateways so far, ties broken by
    the gateway's own ranking. A gateway with explicit priorities keeps its own first
    choice (and counts toward that node's load)."""
    load: Counter[str] = Counter()
    tops: dict[str, str] = {}
    for gw in sorted(members):
        nodes = list(members[gw])
        if not nodes:
            continue
        explicit = (priorities or {}).get(gw)
        ranked = ranked_nodes(gw, nodes, explicit)
        top = ranked[0] if explicit else min(ranked, key=lambda n: load[n])
        tops[gw] = top
        load[top] += 1
    return tops


Choices = dict[str, tuple[str, ...]]  # gateway -> (first, second) choice, either may lack


def _fill(tops: Mapping[str, str], members: Mapping[str, Iterable[str]],
          priorities: Mapping[str, Mapping[str, int]], present: set[str]) -> dict[str, str]:
    """Each gateway's node among ``present``: its balanced first choice if present, else
    (after every kept one is counted) the least loaded present member, ties by rank."""
    load: Counter[str] = Counter()
    out: dict[str, str] = {}
    orphans = []
    for gw in sorted(tops):
        explicit = priorities.get(gw)
        if explicit:
            ranked = [n for n in ranked_nodes(gw, members[gw], explicit) if n in present]
            top = ranked[0] if ranked else None
        else:
            top = tops[gw] if tops[gw] in present else None
        if top is None:
            if not explicit:
                orphans.append(gw)
            continue
        out[gw] = top
        load[top] += 1
    for gw in orphans:
        candidates = [n for n in ranked_nodes(gw, members[gw]) if n in present]
        if candidates:
            out[gw] = pick = min(candidates, key=lambda n: load[n])
            load[pick] += 1
    return out


def choices(members: Mapping[str, Iterable[str]],
            priorities: Mapping[str, Mapping[str, int]] | None = None,
            present: Iterable[str] | None = None) -> Choices:
    """First and second choice of every gateway (see the module docstring); ``present``
    None: every member counts. Every node computes the same answer from the same input."""
    members = {gw: list(nodes) for gw, nodes in members.items()}
    priorities = priorities or {}
    everyone = {n for nodes in members.values() for n in nodes}
    here = everyone if present is None else set(present) & everyone
    tops = balanced_tops(members, priorities)
    firsts = _fill(tops, members, priorities, here)
    without = {n: _fill(tops, members, priorities, here - {n}) for n in set(firsts.values())}
    out: Choices = {}
    for gw in members:
        first = firsts.get(gw)
        second = without[first].get(gw) if first is not None else None
        out[gw] = tuple(n for n in (first, second) if n is not None)
    return out


def placement_priority(gateway: str, node: str, picked: Choices,
                       priorities: Mapping[str, int] | None = None) -> int:
    """The first choice on top, the second just below, the rest rendezvous; explicit
    priorities win over all of it."""
    if priorities:
        return node_priority(gateway, node, priorities)
    ranked = picked.get(gateway, ())
    if ranked and ranked[0] == node:
        return PRIORITY_MAX
    if len(ranked) > 1 and ranked[1] == node:
        return SECOND_PRIORITY
    return rendezvous_priority(gateway, node)


class PresentSet:
    """Which nodes count for placement: a node counts while eligible and until it has
    not been for ``hold_down``.

    A node that goes (crash, cordon, failing probe) keeps its place for the hold-down:
    its gateways fail over to their second choices (the election's business), which are
    exactly where placement puts them once it stops counting, so nothing moves. A node
    that is back counts at once; it takes its gateways back only after *it* has been
    eligible for the hold-down (the election's rebalance rule), so a flap moves nothing.
    Sans-I/O: ``now`` is the caller's clock.
    """

    def __init__(self, hold_down: float) -> None:
        self.hold_down = hold_down
        self._counted: set[str] = set()
        self._gone: dict[str, float] = {}  # counted, not eligible since
        self._expired: set[str] = set()    # expected at start, never came: not again

    def update(self, eligible: Iterable[str], now: float) -> None:
        """``eligible``: every node whose record says eligible now."""
        eligible = set(eligible)
        for node in self._counted - eligible:
            self._gone.setdefault(node, now)
        for node in eligible:
            self._gone.pop(node, None)
        self._counted |= eligible
        self._expired -= eligible

    def expect(self, nodes: Iterable[str], since: float) -> None:
        """Nodes we have never seen count as if they had gone at ``since`` (the observer's
        start): agents that start together publish their records a moment apart, and
        the first one up must not take every gateway for itself. One that is really
        down stops counting after the hold-down, like any node that went."""
        for node in set(nodes) - self._counted:
            if node not in self._expired:
                self._counted.add(node)
                self._gone[node] = since

    def present(self, now: float) -> frozenset[str]:
        for node in [n for n, at in self._gone.items() if now - at >= self.hold_down]:
            del self._gone[node]
            self._counted.discard(node)
            self._expired.add(node)
        return frozenset(self._counted)

    def next_change(self) -> float | None:
        """When ``present`` will next differ with no new record (None: not by itself)."""
        return min(self._gone.values()) + self.hold_down if self._gone else None
