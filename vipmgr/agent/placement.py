"""The node's part in placement (docs/placement.md): say whether this node is eligible,
follow the other nodes' word, and give each member its priority and its place in the
queue of moves.

Every agent computes the same choices (``core.placement.choices``) from the same
input: the gateways and their member sets (the store), and which nodes count
(``PresentSet`` over the eligibility records every agent writes under
``status/placement/``, bound to its status lease so a crashed node's record goes
with its lease). The election does the rest: the first choice ranks on top, the
second just below, and with ``spec.failover.rebalance`` (default on) a first choice
that is not active asks for its gateway back once it has been eligible for the
hold-down, ``move_delay`` later: moves into one node go one at a time,
``MOVE_SPACING`` apart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping

from vipmgr.core.placement import Choices, PresentSet, choices, placement_priority
from vipmgr.store.codec import CorruptObjectError
from vipmgr.store.placement import decode_placement_record, encode_placement_record

LOG = logging.getLogger("vipmgr.placement")

# s between two moves into the same node: a graceful handover is ~50 ms at p99, so one
# is over (or its challenge window has ended) before the next one asks.
MOVE_SPACING = 1.0


@dataclass(frozen=True)
class MemberPlacement:
    """What one member's election gets from placement."""

    priority: int
    move_delay: float
    first_choice: str | None


class NodePlacement:
    """Placement as this node sees it. Sans-I/O apart from the caller's etcd writes:
    ``record`` says what to write, the other methods take ``now`` (wall clock). The
    simulator runs it too (one per simulated agent)."""

    def __init__(self, node: str, hold_down: float, move_spacing: float = MOVE_SPACING) -> None:
        self.node = node
        self.move_spacing = move_spacing
        self.present_set = PresentSet(hold_down)
        self.choices: Choices = {}
        self._since: float | None = None   # this node eligible since (None: it is not)
        self._seen = False                 # the records have been read once
        self._started: float | None = None  # the first update: members expected since

    # --- this node's record ----------------------------------------------------------

    def set_eligible(self, eligible: bool, now: float) -> None:
        if eligible and self._since is None:
            self._since = now
        elif not eligible:
            self._since = None

    def record(self) -> bytes | None:
        """The value of this node's record (None: it has none: not eligible)."""
        if self._since is None:
            return None
        return encode_placement_record(self._since, self.present_set.hold_down)

    # --- everyone's records ----------------------------------------------------------

    def records(self, values: Mapping[str, bytes], now: float) -> None:
        """Every record under the placement prefix (node -> value); unreadable ones are
        skipped (a node's record is its own: it cannot speak for another)."""
        eligible = []
        for node, raw in values.items():
            try:
                decode_placement_record(raw, f"status/placement/{node}")
            except CorruptObjectError as exc:
                LOG.warning(f"placement record of {node} ignored: {exc}",
                            extra={"node": self.node})
                continue
            eligible.append(node)
        self.present_set.update(eligible, now)
        self._seen = True

    def next_change(self) -> float | None:
        return self.present_set.next_change()

    # --- what members get ------------------------------------------------------------

    def update(self, members: Mapping[str, tuple[str, ...]],
               priorities: Mapping[str, Mapping[str, int]], now: float) -> bool:
        """Recompute the choices from every gateway's member set and explicit
        ``spec.failover.priorities``; True when they changed."""
        if self._started is None:
            self._started = now
        self.present_set.expect({n for nodes in members.values() for n in nodes},
                                self._started)
        present = self.present_set.present(now) if self._seen else None
        if present is not None and self._since is not None:
            present = present | {self.node}  # our own record may still be on its way
        new = choices(members, priorities, present)
        changed, self.choices = new != self.choices, new
        return changed

    def member(self, gateway: str, priorities: Mapping[str, int],
               holders: Mapping[str, str]) -> MemberPlacement:
        """``gateway``'s priority here, and when this node is its first choice but not its
        holder, its place in the queue of gateways moving here (name order)."""
        priority = placement_priority(gateway, self.node, self.choices, priorities)
        incoming = sorted(g for g, picked in self.choices.items()
                          if picked and picked[0] == self.node and holders.get(g) != self.node)
        place = incoming.index(gateway) if gateway in incoming else 0
        first = self.choices.get(gateway, ())
        return MemberPlacement(priority, place * self.move_spacing, first[0] if first else None)

    def share(self) -> int:
        """How many gateways placement puts on this node (its fair share)."""
        return sum(1 for picked in self.choices.values() if picked and picked[0] == self.node)
