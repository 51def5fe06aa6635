"""Running many schedules and summarising them in the one line CI greps."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from vipmgr.config.timers import Timers
from vipmgr.sim.schedule import Schedule, make_schedule
from vipmgr.sim.world import Outcome, World, percentile

SOAK_WARMUP = 1.0  # the initial election settles, then the standbys are killed


@dataclass
class Summary:
    schedules: int = 0
    violations: int = 0
    failing: list[Outcome] = field(default_factory=list)
    vrrp_dual: int = 0
    # handover times of schedules without jitter, and (jitter_*) of those with it
    crash_failover: list[float] = field(default_factory=list)
    graceful: list[float] = field(default_factory=list)
    jitter_crash_failover: list[float] = field(default_factory=list)
    jitter_graceful: list[float] = field(default_factory=list)
    wall: float = 0.0

    def add(self, out: Outcome) -> None:
        self.schedules += 1
        self.violations += len(out.violations)
        if out.violations:
            self.failing.append(out)
        self.vrrp_dual += out.vrrp_dual
        if out.jitter:
            self.jitter_crash_failover += out.crash_failover
            self.jitter_graceful += out.graceful
        else:
            self.crash_failover += out.crash_failover
            self.graceful += out.graceful

    def merge(self, other: "Summary") -> None:
        self.schedules += other.schedules
        self.violations += other.violations
        self.failing += other.failing
        self.vrrp_dual += other.vrrp_dual
        for name in ("crash_failover", "graceful", "jitter_crash_failover", "jitter_graceful"):
            getattr(self, name).extend(getattr(other, name))

    @staticmethod
    def pct(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1e3:.1f}"

    def details(self) -> str:
        """The line before the summary: graceful handovers, and everything under jitter."""
        p = self.pct
        return (f"graceful_p50_ms={p(self.graceful, 50)} graceful_p99_ms={p(self.graceful, 99)} "
                f"jitter_failover_p50_ms={p(self.jitter_crash_failover, 50)} "
                f"jitter_failover_p99_ms={p(self.jitter_crash_failover, 99)} "
                f"jitter_graceful_p99_ms={p(self.jitter_graceful, 99)} "
                f"vrrp_double_fault_dual_active={self.vrrp_dual}")

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


@dataclass
class Soak:
    """A calm world under jitter only, with some members dead: how often does the
    active fence itself (each time a real traffic blip) for no reason?"""

    seconds: float
    gateways: int
    spurious_fences: int
    spurious_challenges: int
    datapath_gaps: int

    @property
    def active_hours(self) -> float:
        return (self.seconds - SOAK_WARMUP) / 3600 * self.gateways

    def line(self) -> str:
        hours = self.active_hours
        counts = {"spurious_fences": self.spurious_fences,
                  "spurious_challenges": self.spurious_challenges,
                  "datapath_gaps": self.datapath_gaps}
        return " ".join([f"soak_active_hours={hours:.2f}"] + [
            f"{name}={n} {name}_per_hour={n / hours:.1f}" for name, n in counts.items()])


def soak(seconds: float, seed: int = 1, nodes: int = 3, gateways: int = 1, down: int = 1,
         timers: Timers | None = None) -> Soak:
    """Run ``seconds`` of simulated time with scheduling jitter and ``down`` crashed
    (still labelled) members from SOAK_WARMUP on."""
    timers = timers or Timers()
    rng = random.Random(seed)
    names = [f"n{i + 1}" for i in range(nodes)]
    schedule = Schedule(seed, names, [f"gw{i + 1}" for i in range(gateways)], "hold",
                        [rng.uniform(-timers.max_clock_drift / 2, timers.max_clock_drift / 2)
                         for _ in names], [rng.uniform(0, 1000) for _ in names], [],
                        seconds, jitter=True)
    world = World(schedule, timers)
    world.at(SOAK_WARMUP, world.crash_standbys, down)
    out = world.run()
    return Soak(seconds, gateways, out.spurious_fences, out.spurious_challenges,
                out.datapath_gaps)
