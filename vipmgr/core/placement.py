"""Default priorities by rendezvous hashing, so gateways sharing nodes spread out.

Each (gateway, node) pair gets a pseudo-random priority from a stable hash:
every node computes the same ranking without coordination, each gateway gets
an independent ranking (so different gateways prefer different nodes), and
adding or removing a node only moves the gateways that ranked it first. An
explicit per-node priority from ``spec.failover.priorities`` overrides it.
"""

from __future__ import annotations

import hashlib
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
