"""Running many schedules and summarising them in the one line CI greps."""

from __future__ import annotations

import math
import random
from collections import Counter
import time
from dataclasses import dataclass, field

from vipmgr.config.timers import Timers
from vipmgr.core.placement import rank_key
from vipmgr.sim.schedule import GATEWAYS, NODES, Schedule, make_schedule
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
    link_down: list[float] = field(default_factory=list)
    jitter_crash_failover: list[float] = field(default_factory=list)
    jitter_graceful: list[float] = field(default_factory=list)
    jitter_link_down: list[float] = field(default_factory=list)
    placed: int = 0
    placed_best: int = 0
    rebalance_moves: int = 0
    # etcd partition of the holder alone: longest egress gap, time to the new holder
    etcd_cut_gap: list[float] = field(default_factory=list)
    etcd_cut_handover: list[float] = field(default_factory=list)
    rows: Counter = field(default_factory=Counter)  # transition-table rows taken
    wall: float = 0.0

    def add(self, out: Outcome) -> None:
        self.schedules += 1
        self.violations += len(out.violations)
        if out.violations:
            self.failing.append(out)
        self.vrrp_dual += out.vrrp_dual
        self.placed += out.placed
        self.placed_best += out.placed_best
        self.rebalance_moves += out.rebalance_moves
        prefix = "jitter_" if out.jitter else ""
        for name in ("crash_failover", "graceful", "link_down"):
            getattr(self, prefix + name).extend(getattr(out, name))
        self.etcd_cut_gap.extend(out.etcd_cut_gap)
        self.etcd_cut_handover.extend(out.etcd_cut_handover)
        self.rows.update(out.rows)

    def merge(self, other: "Summary") -> None:
        self.schedules += other.schedules
        self.violations += other.violations
        self.failing += other.failing
        self.vrrp_dual += other.vrrp_dual
        self.placed += other.placed
        self.placed_best += other.placed_best
        self.rebalance_moves += other.rebalance_moves
        self.rows.update(other.rows)
        for name in ("crash_failover", "graceful", "link_down", "jitter_crash_failover",
                     "jitter_graceful", "jitter_link_down", "etcd_cut_gap",
                     "etcd_cut_handover"):
            getattr(self, name).extend(getattr(other, name))

    @staticmethod
    def pct(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1e3:.1f}"

    def details(self) -> str:
        """The line before the summary: graceful handovers, link-down of the active's
        heartbeat interface, start-up placement, and everything under jitter."""
        p = self.pct
        best = 100 * self.placed_best / self.placed if self.placed else math.nan
        return (f"graceful_p50_ms={p(self.graceful, 50)} graceful_p99_ms={p(self.graceful, 99)} "
                f"linkdown_p50_ms={p(self.link_down, 50)} "
                f"linkdown_p99_ms={p(self.link_down, 99)} "
                f"startup_best_ranked_pct={best:.2f} "
                f"jitter_failover_p50_ms={p(self.jitter_crash_failover, 50)} "
                f"jitter_failover_p99_ms={p(self.jitter_crash_failover, 99)} "
                f"jitter_graceful_p99_ms={p(self.jitter_graceful, 99)} "
                f"jitter_linkdown_p99_ms={p(self.jitter_link_down, 99)} "
                f"etcdcut_holder={len(self.etcd_cut_gap)} "
                f"etcdcut_gap_p50_ms={p(self.etcd_cut_gap, 50)} "
                f"etcdcut_gap_max_ms={p(self.etcd_cut_gap, 100)} "
                f"etcdcut_handover_p50_ms={p(self.etcd_cut_handover, 50)} "
                f"etcdcut_handover_p99_ms={p(self.etcd_cut_handover, 99)} "
                f"vrrp_double_fault_dual_active={self.vrrp_dual} "
                f"rebalance_moves={self.rebalance_moves}")

    def line(self) -> str:
        rate = self.schedules / self.wall * 60 if self.wall else 0.0
        return (f"schedules={self.schedules} violations={self.violations} "
                f"failover_p50_ms={self.pct(self.crash_failover, 50)} "
                f"failover_p99_ms={self.pct(self.crash_failover, 99)} "
                f"rate_per_min={rate:.0f}")


PLACEMENT_NODES, PLACEMENT_GATEWAYS = (3, 5), (4, 12)  # the placement schedules' worlds


def run_one(seed: int, nodes: tuple[int, int] = NODES, gateways: tuple[int, int] = GATEWAYS,
            timers: Timers | None = None, unsafe: frozenset[str] = frozenset(),
            trace: bool = False, placement: bool = False) -> Outcome:
    timers = timers or Timers()
    schedule = make_schedule(seed, nodes, gateways, max_drift=timers.max_clock_drift,
                             placement=placement)
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


@dataclass
class Startup:
    """Nodes starting at nearly the same instant: does placement decide who is active?"""

    schedules: int = 0
    gateways: int = 0
    best_ranked: int = 0   # gateways whose active is their best-ranked node
    # schedules where a node is active for more than its share (ceil(gateways/nodes))
    crowded: int = 0
    crowded_by_placement: int = 0  # ... where the placement's first choices do that
    violations: int = 0

    def line(self) -> str:
        return (f"startup_schedules={self.schedules} gateways={self.gateways} "
                f"best_ranked={self.best_ranked} "
                f"best_ranked_pct={100 * self.best_ranked / max(1, self.gateways):.2f} "
                f"crowded={self.crowded} crowded_by_placement={self.crowded_by_placement} "
                f"violations={self.violations}")


def startup(count: int, seed: int = 1, nodes: int = 3, gateways: int = 2,
            spread: float = 0.03, jitter_share: float = 0.3, placement: bool = False,
            timers: Timers | None = None) -> Startup:
    """``count`` calm worlds whose nodes all start within ``spread``; gateway names vary
    per schedule so each gets its own rendezvous ranking. ``placement``: every agent runs
    the agent's placement (first and second choices over the eligibility records)."""
    timers = timers or Timers()
    result = Startup()
    for i in range(count):
        rng = random.Random(seed + i)
        names = [f"n{k + 1}" for k in range(nodes)]
        gws = [f"gw{seed + i}-{k + 1}" for k in range(gateways)]
        drift = timers.max_clock_drift / 2
        schedule = Schedule(seed + i, names, gws, "hold",
                            [rng.uniform(-drift, drift) for _ in names],
                            [rng.uniform(0, 1000) for _ in names], [], 0.0,
                            jitter=rng.random() < jitter_share, start_spread=spread,
                            placement=placement)
        world = World(schedule, timers)
        out = world.run()
        world.check_placement()
        result.schedules += 1
        result.gateways += out.placed
        result.best_ranked += out.placed_best
        result.violations += len(out.violations)
        share = -(-gateways // nodes)
        actives = Counter(world.active_of(gw) for gw in gws)
        first = world.first_choices() if placement else {}
        tops = Counter(first.get(gw) or min(names, key=lambda n: rank_key(world.priority(gw, n), n))
                       for gw in gws)
        result.crowded += max(actives.values()) > share
        result.crowded_by_placement += max(tops.values()) > share
    return result
