"""``vipmgr sim``: run randomized fault schedules on the real election core."""

from __future__ import annotations

import sys

import click

from vipmgr.config.errors import ConfigError
from vipmgr.config.timers import Timers
from vipmgr.sim.runner import PLACEMENT_GATEWAYS, PLACEMENT_NODES, Summary, run_many, run_one
from vipmgr.sim.runner import soak as run_soak
from vipmgr.sim.runner import startup as run_startup
from vipmgr.sim.schedule import GATEWAYS, NODES, make_schedule


def _range(text: str, name: str, lo: int, hi: int) -> tuple[int, int]:
    first, _, last = text.partition("-")
    try:
        a, b = int(first), int(last or first)
    except ValueError:
        raise click.BadParameter(f"expected N or N-M, e.g. {lo}-{hi}", param_hint=name)
    if not lo <= a <= b <= hi:
        raise click.BadParameter(f"must lie within {lo}-{hi}", param_hint=name)
    return a, b


def _timers(pairs: tuple[str, ...]) -> Timers:
    """``--timer fenceDeadline=90ms``: overrides on the defaults, parsed like the spec.
    Relations that do not hold are printed, not refused: measuring an unsafe or old
    setting is what this is for."""
    values: dict[str, object] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"expected NAME=VALUE, not {pair!r}", param_hint="--timer")
        values[name] = int(value) if value.isdigit() else \
            float(value) if name == "maxClockDrift" else value
    try:
        timers = Timers.from_mapping({**Timers().to_mapping(), **values})
    except ConfigError as exc:
        raise click.BadParameter("; ".join(f"{p}: {m}" for p, m in exc.problems),
                                 param_hint="--timer")
    for path, message in timers.problems():
        click.echo(f"warning: {path}: {message}", err=True)
    return timers


def _chunk(args: tuple) -> Summary:
    count, seed, nodes, gateways, unsafe, timers, placement = args
    return run_many(count, seed, nodes=nodes, gateways=gateways, unsafe=unsafe, timers=timers,
                    placement=placement)


@click.command()
@click.option("--schedules", "-n", default=1000, show_default=True, help="How many schedules.")
@click.option("--seed", "-s", default=1, show_default=True,
              help="Seed of the first schedule; schedule i uses seed+i.")
@click.option("--nodes", default=None,
              help="Nodes per schedule, N or N-M (2-5; 3-5 with --placement).")
@click.option("--gateways", default=None,
              help="Gateways per schedule, N or N-M (2-5; 4-12 with --placement, at most 12).")
@click.option("--jobs", "-j", default=1, show_default=True,
              help="Worker processes (each schedule is independent and deterministic).")
@click.option("--replay", type=int, default=None, metavar="SEED",
              help="Print a readable trace of the schedule with this seed.")
@click.option("--timer", "timer_pairs", multiple=True, metavar="NAME=VALUE",
              help="Override a default timer (spec names), e.g. --timer fenceDeadline=60ms.")
@click.option("--soak", type=float, default=None, metavar="SECONDS",
              help="Instead of schedules: SECONDS of simulated calm under scheduling jitter "
                   "with --down members dead; prints spurious fences per active hour.")
@click.option("--down", default=1, show_default=True, help="Dead members during --soak.")
@click.option("--startup", type=int, default=None, metavar="COUNT",
              help="Instead of schedules: COUNT calm worlds whose nodes (the largest of "
                   "--nodes) start within 30 ms; prints how often each of the largest of "
                   "--gateways got its best-ranked node active. Exits 1 below 99%.")
@click.option("--placement", is_flag=True,
              help="Every node runs the agent's placement (first choices, rebalance after "
                   "the hold-down, one move at a time); checks that each gateway ends on "
                   "its first choice and no node holds more than ceil(G/N) once healed. "
                   "Schedules leave out priority changes.")
@click.option("--unsafe", multiple=True, type=click.Choice(["challenge", "fence", "rebalance"]), hidden=True,
              help="Test only: disable one protection to show the checker catches it.")
def sim(schedules: int, seed: int, nodes: str | None, gateways: str | None, jobs: int,
        replay: int | None, timer_pairs: tuple[str, ...], soak: float | None, down: int,
        startup: int | None, placement: bool, unsafe: tuple[str, ...]) -> None:
    """Deterministic fault simulator: crash, freeze, partitions, etcd loss, loss/dup/
    reordering, drift, health flaps, cordon, membership and priority changes, scheduling
    jitter. Exits 1 on any invariant violation; the last line is the summary CI reads."""
    default_nodes, default_gws = (PLACEMENT_NODES, PLACEMENT_GATEWAYS) if placement \
        else (NODES, GATEWAYS)
    node_range = _range(nodes, "--nodes", 2, 5) if nodes else default_nodes
    gw_range = _range(gateways, "--gateways", 1, 12) if gateways else default_gws
    flags = frozenset(unsafe)
    timers = _timers(timer_pairs)
    if soak is not None:
        if not 0 <= down < node_range[1]:
            raise click.BadParameter(f"must leave a node alive (< {node_range[1]})",
                                     param_hint="--down")
        click.echo(run_soak(soak, seed, node_range[1], gw_range[1], down, timers).line())
        return
    if startup is not None:
        placed = run_startup(startup, seed, node_range[1], gw_range[1], placement=placement,
                             timers=timers)
        click.echo(placed.line())
        sys.exit(1 if placed.violations or placed.best_ranked < 0.99 * placed.gateways else 0)
    if replay is not None:
        sched = make_schedule(replay, node_range, gw_range, placement=placement)
        click.echo(f"schedule {replay}: nodes={','.join(sched.nodes)} "
                   f"gateways={','.join(sched.gateways)} onEtcdLoss={sched.policy}")
        for name, drift in zip(sched.nodes, sched.drift):
            click.echo(f"  clock {name}: rate {1 + drift:.5f}")
        for ep in sched.episodes:
            click.echo(f"  at {ep.start * 1e3:7.1f} ms: {ep.describe(sched.nodes, sched.gateways)}")
        out = run_one(replay, node_range, gw_range, timers=timers, unsafe=flags, trace=True,
                      placement=placement)
        click.echo("\n".join(out.trace))
        for v in out.violations:
            click.echo(f"VIOLATION {v}")
        click.echo(f"violations={len(out.violations)} crash_failover_ms="
                   f"{[round(x * 1e3, 1) for x in out.crash_failover]} graceful_ms="
                   f"{[round(x * 1e3, 1) for x in out.graceful]}")
        sys.exit(1 if out.violations else 0)
    if jobs > 1:
        import multiprocessing
        import time
        per = -(-schedules // jobs)
        parts = [(min(per, schedules - i * per), seed + i * per, node_range, gw_range, flags,
                  timers, placement) for i in range(jobs) if schedules - i * per > 0]
        started = time.perf_counter()
        with multiprocessing.get_context("fork").Pool(len(parts)) as pool:
            results = pool.map(_chunk, parts)
        summary = Summary()
        for part in results:
            summary.merge(part)
        summary.wall = time.perf_counter() - started
    else:
        summary = run_many(schedules, seed, nodes=node_range, gateways=gw_range, unsafe=flags,
                           timers=timers, placement=placement)
    for out in summary.failing[:20]:
        for v in out.violations:
            click.echo(f"seed={out.seed} {v}  (vipmgr sim --replay {out.seed})")
    click.echo(summary.details())
    click.echo(summary.line())
    sys.exit(1 if summary.violations else 0)
