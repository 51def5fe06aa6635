"""``vipmgr sim``: run randomized fault schedules on the real election core."""

from __future__ import annotations

import sys

import click

from vipmgr.sim.runner import Summary, run_many, run_one
from vipmgr.sim.schedule import make_schedule


def _range(text: str, name: str, lo: int, hi: int) -> tuple[int, int]:
    first, _, last = text.partition("-")
    try:
        a, b = int(first), int(last or first)
    except ValueError:
        raise click.BadParameter(f"expected N or N-M, e.g. {lo}-{hi}", param_hint=name)
    if not lo <= a <= b <= hi:
        raise click.BadParameter(f"must lie within {lo}-{hi}", param_hint=name)
    return a, b


def _chunk(args: tuple) -> Summary:
    count, seed, nodes, gateways, unsafe = args
    return run_many(count, seed, nodes=nodes, gateways=gateways, unsafe=unsafe)


@click.command()
@click.option("--schedules", "-n", default=1000, show_default=True, help="How many schedules.")
@click.option("--seed", "-s", default=1, show_default=True,
              help="Seed of the first schedule; schedule i uses seed+i.")
@click.option("--nodes", default="2-5", show_default=True, help="Nodes per schedule, N or N-M.")
@click.option("--gateways", default="1-4", show_default=True,
              help="Gateways per schedule, N or N-M.")
@click.option("--jobs", "-j", default=1, show_default=True,
              help="Worker processes (each schedule is independent and deterministic).")
@click.option("--replay", type=int, default=None, metavar="SEED",
              help="Print a readable trace of the schedule with this seed.")
@click.option("--unsafe", multiple=True, type=click.Choice(["challenge", "fence"]), hidden=True,
              help="Test only: disable one protection to show the checker catches it.")
def sim(schedules: int, seed: int, nodes: str, gateways: str, jobs: int, replay: int | None,
        unsafe: tuple[str, ...]) -> None:
    """Deterministic fault simulator: crash, freeze, partitions, etcd loss, loss/dup/
    reordering, drift, health flaps, cordon. Exits 1 on any invariant violation; the
    last line is the summary CI reads."""
    node_range = _range(nodes, "--nodes", 2, 5)
    gw_range = _range(gateways, "--gateways", 1, 4)
    flags = frozenset(unsafe)
    if replay is not None:
        sched = make_schedule(replay, node_range, gw_range)
        click.echo(f"schedule {replay}: nodes={','.join(sched.nodes)} "
                   f"gateways={','.join(sched.gateways)} onEtcdLoss={sched.policy}")
        for name, drift in zip(sched.nodes, sched.drift):
            click.echo(f"  clock {name}: rate {1 + drift:.5f}")
        for ep in sched.episodes:
            click.echo(f"  at {ep.start * 1e3:7.1f} ms: {ep.describe(sched.nodes, sched.gateways)}")
        out = run_one(replay, node_range, gw_range, unsafe=flags, trace=True)
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
        parts = [(min(per, schedules - i * per), seed + i * per, node_range, gw_range, flags)
                 for i in range(jobs) if schedules - i * per > 0]
        started = time.perf_counter()
        with multiprocessing.get_context("fork").Pool(len(parts)) as pool:
            results = pool.map(_chunk, parts)
        summary = Summary()
        for part in results:
            summary.merge(part)
        summary.wall = time.perf_counter() - started
    else:
        summary = run_many(schedules, seed, nodes=node_range, gateways=gw_range, unsafe=flags)
    for out in summary.failing[:20]:
        for v in out.violations:
            click.echo(f"seed={out.seed} {v}  (vipmgr sim --replay {out.seed})")
    click.echo(f"graceful_p50_ms={summary.pct(summary.graceful, 50)} "
               f"graceful_p99_ms={summary.pct(summary.graceful, 99)} "
               f"vrrp_double_fault_dual_active={summary.vrrp_dual}")
    click.echo(summary.line())
    sys.exit(1 if summary.violations else 0)
