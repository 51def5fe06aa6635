"""Running many schedules and summarising them in the one line CI greps."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from vipmgr.config.timers import Timers
from vipmgr.sim.schedule import make_schedule
from vipmgr.sim.world import Outcome, World, percentile


@dataclass
class Summary:
    schedules: int = 0
    violations: int = 0
    failing: list[Outcome] = field(default_factory=list)
    vrrp_dual: int = 0
    crash_failover: list[float] = field(default_factory=list)
    graceful: list[float] = field(default_factory=list)
    wall: float = 0.0

    def add(self, out: Outcome) -> None:
        self.schedules += 1
        self.violations += len(out.violations)
        if out.violations:
            self.failing.append(out)
        self.vrrp_dual += out.vrrp_dual
        self.crash_failover += out.crash_failover
        self.graceful += out.graceful

    def merge(self, other: "Summary") -> None:
        self.schedules += other.schedules
        self.violations += other.violations
        self.failing += other.failing
        self.vrrp_dual += other.vrrp_dual
        self.crash_failover += other.crash_failover
        self.graceful += other.graceful

    @staticmethod
    def pct(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1e3:.1f}"

    def line(self) -> str:
        rate = self.schedules / self.wall * 60 if self.wall else 0.0
        return (f"schedules={self.schedules} violations={self.violations} "
                f"failover_p50_ms={self.pct(self.crash_failover, 50)} "
                f"failover_p99_ms={self.pct(self.crash_failover, 99)} "
                f"rate_per_min={rate:.0f}")


def run_one(seed: int, nodes: tuple[int, int] = (2, 5), gateways: tuple[int, int] = (1, 4),
            timers: Timers | None = None, unsafe: frozenset[str] = frozenset(),
            trace: bool = False) -> Outcome:
    timers = timers or Timers()
    schedule = make_schedule(seed, nodes, gateways, max_drift=timers.max_clock_drift)
    return World(schedule, timers, unsafe, trace).run()


def run_many(count: int, seed: int = 1, **kw) -> Summary:
    summary = Summary()
    started = time.perf_counter()
    for i in range(count):
        summary.add(run_one(seed + i, **kw))
    summary.wall = time.perf_counter() - started
    return summary
