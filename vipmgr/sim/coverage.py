"""Which rows of the transition table a simulator run takes.

Random schedules take the common rows; the rare ones (a challenger that turns
unhealthy or is unlabelled mid-window, an acquire that times out, the VRRP
fallback's exits...) need two faults at the right instants, so a handful of
scripted worlds on three nodes add them. ``rows_fired`` returns every row taken,
as ``(from role, cause, to role)`` with its count.
"""

from __future__ import annotations

from collections import Counter

from vipmgr.config.timers import Timers
from vipmgr.core.placement import rank_key, rendezvous_priority
from vipmgr.sim.runner import run_many
from vipmgr.sim.schedule import Episode as E, Schedule
from vipmgr.sim.world import World

NODES = ["n1", "n2", "n3"]


def _ranked() -> list[int]:
    """Node indexes best-ranked first for gateway gw1 (the holder, then its successor)."""
    return sorted(range(3), key=lambda i: rank_key(rendezvous_priority("gw1", NODES[i]),
                                                     NODES[i]))


def scripted() -> dict[str, tuple[str, list[E], float]]:
    """name -> (onEtcdLoss, episodes, faults_end): the holder is index ``h``."""
    h, s, t = _ranked()
    cut_all = [E("etcd_cut", 1.0, 2.5, node=i) for i in range(3)]
    return {
        # etcd down, the holder crashes: a standby falls back, yields when etcd returns
        "fallback": ("vrrp", [E("etcd_outage", 1.0, 1.5), E("crash", 1.1, 2.0, node=h)], 3.5),
        "fallback-unhealthy": ("vrrp", [E("etcd_outage", 1.0, 1.5), E("crash", 1.1, 2.0, node=h),
                                        E("health_flap", 1.6, 0.2, node=s)], 3.5),
        # ... and the fallback freezes past its dead-man while etcd returns: the third node
        # takes the gateway through etcd, the fallback wakes and stands by (seed 168186)
        "fallback-frozen": ("vrrp", [E("etcd_outage", 1.0, 0.5), E("crash", 1.1, 2.0, node=h),
                                     E("freeze", 1.4, 0.8, node=s)], 3.5),
        "fallback-unlabelled": ("vrrp", [E("etcd_outage", 1.0, 1.5), E("crash", 1.1, 2.0, node=h),
                                         E("unlabel", 1.6, 0.5, node=s)], 3.5),
        # etcd down and a standby dead: the holder's evidence lapses live, etcd confirms later
        "lapse-without-etcd": ("vrrp", [E("etcd_outage", 1.0, 1.5),
                                        E("crash", 0.9, 3.0, node=t)], 4.0),
        # the holder cut from etcd and from the heartbeats: deposed; back, it has lost
        "cut-and-isolated": ("vrrp", [E("etcd_cut", 1.0, 1.0, node=h),
                                      E("hb_isolate", 1.0, 1.0, node=h)], 2.5),
        # etcd down and the holder's heartbeats cut: it fences (no evidence at all), is
        # cordoned while fenced, and its release finds no etcd
        "fenced-cordoned": ("hold", [E("etcd_outage", 1.0, 1.0), E("hb_isolate", 1.0, 1.0, node=h),
                                     E("cordon", 1.5, 0.3, node=h)], 3.0),
        # everybody cut from etcd (no handover): leases expire; the holder's etcd first back
        "leases-expire": ("hold", [E("etcd_cut", 1.0, 2.3, node=h), E("etcd_cut", 1.0, 2.6, node=s),
                                   E("etcd_cut", 1.0, 2.6, node=t)], 4.5),
        "fallback-lease-expires": ("vrrp", cut_all + [E("crash", 0.9, 3.5, node=t)], 4.5),
        # the holder crashes; its successor, mid-window, turns unhealthy / is unlabelled /
        # loses etcd
        "challenger-unhealthy": ("hold", [E("crash", 1.0, 1.0, node=h),
                                          E("health_flap", 1.15, 0.1, node=s)], 2.5),
        "challenger-unlabelled": ("hold", [E("crash", 1.0, 1.0, node=h),
                                           E("unlabel", 1.15, 0.3, node=s)], 2.5),
        "challenger-cut": ("hold", [E("crash", 1.0, 1.0, node=h),
                                    E("etcd_cut", 1.1, 0.3, node=s)], 2.5),
    }


def _world(policy: str, episodes: list[E], end: float, timers: Timers) -> World:
    sched = Schedule(1, NODES, ["gw1"], policy, [0.002, -0.003, 0.001], [5.0, 100.0, 300.0],
                     episodes, end)
    return World(sched, timers)


def acquire_times_out(timers: Timers) -> Counter:
    """The successor's etcd goes away between its Depose and its Acquire: the instant
    depends on the etcd delays, so try starts 1 ms apart until one falls in between."""
    h, s, _ = _ranked()
    rows: Counter = Counter()
    for k in range(60):
        out = _world("hold", [E("crash", 1.0, 1.0, node=h),
                              E("etcd_cut", 1.19 + k * 0.001, 0.3, node=s)], 2.5, timers).run()
        rows.update(out.rows)
        if ("acquiring", "etcd-unreachable", "standby") in out.rows:
            break
    return rows


def rows_fired(random_schedules: int = 200, seed: int = 1,
               timers: Timers | None = None) -> tuple[Counter, list[str]]:
    """Rows taken by ``random_schedules`` random schedules plus the scripted worlds, and
    every violation seen (there must be none)."""
    timers = timers or Timers()
    summary = run_many(random_schedules, seed, timers=timers)
    rows = Counter(summary.rows)
    violations = [v for o in summary.failing for v in o.violations]
    for name, (policy, episodes, end) in scripted().items():
        out = _world(policy, episodes, end, timers).run()
        rows.update(out.rows)
        violations += [f"{name}: {v}" for v in out.violations]
    rows.update(acquire_times_out(timers))
    return rows, violations
