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
than needed, and ``balanced_priority`` raises that node above every rendezvous
priority. Every node computes the same answer with no runtime coordination, so
it also holds when all nodes start at once. Only the first choice moves; the
rest of each ranking stays rendezvous.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Iterable, Mapping

PRIORITY_MIN, PRIORITY_MAX = 1, 254  # VRRP: 0 means "releasing", 255 "address owner"


def rendezvous_priority(gateway: str, node: str) -> int:
    digest = hashlib.blake2b(f"{gateway}\0{node}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (PRIORITY_MAX - PRIORITY_MIN) + PRIORITY_MIN


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


def balanced_priority(gateway: str, node: str, tops: Mapping[str, str],
                      priorities: Mapping[str, int] | None = None) -> int:
    """``node_priority`` with the balanced first choice (``balanced_tops``) on top."""
    if priorities:
        return node_priority(gateway, node, priorities)
    return PRIORITY_MAX if tops.get(gateway) == node else rendezvous_priority(gateway, node)
