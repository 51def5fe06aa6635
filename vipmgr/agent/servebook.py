"""Which gateways this node serves and what the kernel has of that: the datapath's
bookkeeping, sans I/O.

No asyncio, no threads, no clock: the caller (vipmgr.agent.datapath.NodeDatapath,
the asyncio adapter) passes ``now`` in and carries out what each call answers
(kick the reconciler, send a dead-man refresh, log). The book holds

- ``serving``: gateway -> until (core clock), in the core's order of takes;
- ``armed``: the served gateways whose dead-man this process armed (a take is armed
  in the reconcile that installs it, later Programs only refresh it);
- ``generation``: bumped by every take and withdraw; ``applied``: the generation
  the kernel reflects (what ``settled`` waits for);
- ``verify_next``: the next reconcile re-reads the kernel first (after a failure,
  drift, or a verify superseded while planning).

One reconcile, as the adapter runs it::

    generation = book.generation
    plan = await planner(book.serving, ...)
    taking = book.taking()                        # conntrack replication first
    if not book.commit(generation, verify):       # a take/withdraw while planning
        kick(); return                            # ... plan again with it
    report = reconcile(plan, arm=book.arm_request(now), verify=verify)
    book.applied(generation, report.armed, {g.name for g in plan.active})
    # or, when the reconcile failed: book.reconcile_failed()
"""

from __future__ import annotations

import enum
from typing import Iterable

from vipmgr.dataplane.nftstate import Refresh


class Serve(enum.Enum):
    """What a Program asks of the adapter."""

    NOTHING = "nothing"  # the evidence already lapsed: the core withdraws next
    TAKE = "take"        # newly served (a new generation): reconcile, arming it
    REFRESH = "refresh"  # served and armed by us: refresh its dead-man, no reconcile
    REARM = "rearm"      # served, but its take is in flight or its arming came late:
                         # reconcile (it is armed again there)


class Outcome(enum.Enum):
    """What a dead-man refresh's result asks of the adapter."""

    REFRESHED = "refreshed"  # armed: count it
    LATE = "late"            # its deadline passed before it ran: warn, nothing broke
    EXPECTED = "expected"    # refused after a withdraw: nothing to do
    REPAIR = "repair"        # not in the kernel though armed, or failed: dropped from
                             # ``armed``, the next reconcile re-reads the kernel; reconcile


class ServeBook:
    def __init__(self) -> None:
        self.serving: dict[str, float] = {}  # gateway -> until (core clock)
        self.armed: set[str] = set()         # serving gateways whose dead-man we armed
        self.generation = 0                  # bumped by every take and withdraw
        self.applied_generation = 0          # the generation the kernel reflects
        self.verify_next = False

    # --- the core's actions -----------------------------------------------------------

    def program(self, gateway: str, until: float, now: float) -> Serve:
        """Serve ``gateway`` until ``until``."""
        if now >= until:
            return Serve.NOTHING
        taken = gateway in self.serving
        self.serving[gateway] = until
        if not taken:
            self.generation += 1
            return Serve.TAKE
        if gateway in self.armed:
            return Serve.REFRESH
        return Serve.REARM

    def withdraw(self, gateway: str) -> bool:
        """Stop serving ``gateway``; True when it was served (a new generation)."""
        if self.serving.pop(gateway, None) is None:
            return False
        self.armed.discard(gateway)
        self.generation += 1
        return True

    def settled(self, generation: int) -> bool:
        """Does the kernel reflect every change up to ``generation``?"""
        return self.applied_generation >= generation

    # --- one reconcile ----------------------------------------------------------------

    def taking(self) -> list[str]:
        """Served gateways not armed by us yet, in the order they were taken."""
        return [gw for gw in self.serving if gw not in self.armed]

    def current(self, generation: int) -> bool:
        return generation == self.generation

    def commit(self, generation: int, verify: bool) -> bool:
        """The plan of ``generation`` goes to the kernel: True, and this reconcile carries
        the pending verify. False when a take or withdraw came while planning: the verify
        is kept for the re-plan."""
        if generation != self.generation:
            self.verify_next |= verify
            return False
        self.verify_next = False
        return True

    def arm_request(self, now: float) -> dict[str, float]:
        """gateway -> seconds to arm its dead-man for, for each gateway not armed yet."""
        return {gw: until - now for gw, until in self.serving.items() if gw not in self.armed}

    def applied(self, generation: int, armed: Iterable[str], active: Iterable[str]) -> None:
        """The reconcile of ``generation`` succeeded: it armed ``armed``; the plan has
        this node active for ``active`` (what is not active is not ours to refresh)."""
        self.applied_generation = generation
        self.armed = (self.armed | set(armed)) & set(active)

    def reconcile_failed(self) -> None:
        self.verify_next = True

    # --- dead-man refreshes -----------------------------------------------------------

    def refresh_outcome(self, gateway: str, result: Refresh | None) -> Outcome:
        """``result`` of a refresh of ``gateway``; None when it raised."""
        if result is Refresh.ARMED:
            return Outcome.REFRESHED
        if result is Refresh.LATE:
            # the evidence it carried ran out before the arming thread ran: the kernel
            # state expires by itself and the core fences on its own clock
            return Outcome.LATE
        if result is Refresh.GONE and gateway not in self.armed:
            return Outcome.EXPECTED  # withdrawn meanwhile: the refusal was expected
        # The kernel no longer has a gateway we armed (our table was flushed?) or the
        # refresh failed: re-read the kernel and arm it again with the next reconcile.
        self.armed.discard(gateway)
        self.verify_next = True
        return Outcome.REPAIR
