"""The rise/fall state machine of one probe: pure, fed results and ``now``.

Semantics follow keepalived and HAProxy: ``rise`` consecutive successes make
a probe up, ``fall`` consecutive failures make it down; a single result of the
other kind resets the streak. A probe starts **pending** (no verdict yet),
which counts as not passing: a freshly started agent is not Ready until every
probe has passed ``rise`` times, so a node never becomes active on an unproven
check. From pending, ``fall`` failures give down, ``rise`` successes give up.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Status(str, Enum):
    PENDING = "pending"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome; ``detail`` is short and human ("no carrier", "HTTP 503")."""

    ok: bool
    detail: str


@dataclass
class RiseFall:
    rise: int
    fall: int
    status: Status = Status.PENDING
    successes: int = 0  # current streak of consecutive successes
    failures: int = 0  # current streak of consecutive failures
    last: CheckResult | None = None
    last_at: float | None = None
    since: float | None = None  # when ``status`` was entered (None: pending since start)

    def observe(self, result: CheckResult, now: float) -> Status | None:
        """Record one result; return the previous status when this result changed it."""
        self.last, self.last_at = result, now
        if result.ok:
            self.successes, self.failures = self.successes + 1, 0
            target = Status.UP if self.successes >= self.rise else None
        else:
            self.successes, self.failures = 0, self.failures + 1
            target = Status.DOWN if self.failures >= self.fall else None
        if target is None or target is self.status:
            return None
        previous, self.status, self.since = self.status, target, now
        return previous
