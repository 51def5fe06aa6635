"""The seed scenario on a 3-member etcd (lab/egress-etcd3.clab.yml), real agents: losing an
etcd member or the leader moves nobody and leaves no gap in the traffic; failover still
works with one member down; a stopped majority (an outage) leaves the active serving.

Each trial is the failover benchmark's (a 1 kHz stream from vm-backend and an ARP prober on
the router) with the fault aimed at etcd instead of the active node.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from vipmgr.lab.bench import FailoverBench, Vipmgr
from vipmgr.lab.chaos import BOUND, ETCD3_TOPOLOGY, etcd_members
from vipmgr.lab.etcd import endpoint_hosts
from vipmgr.lab.runtime import deploy, destroy
from vipmgr.lab.topology import default_topology_path, load
from waiting import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.slow]

LAB = f"e3t{os.getpid() % 1000}"
LEADER_KILLS = 4


@dataclass
class EtcdFaultBench(FailoverBench):
    """The benchmark's trial, but the fault one second in is ``action`` (etcd's, not the
    active node's); the trial's fault label stays the benchmark's."""

    action: Callable[[], None] = lambda: None

    def inject(self, node: str, fault: str) -> None:
        self.action()


@pytest.fixture(scope="module")
def lab():
    destroy(LAB)
    lab = deploy(load(ETCD3_TOPOLOGY).renamed(LAB), timeout=30)
    try:
        Vipmgr().start(lab, lambda _m: None)
        yield lab
    finally:
        destroy(LAB)


@pytest.fixture
def bench(lab):
    return EtcdFaultBench(lab, Vipmgr(), duration=4.0)


def leader(lab) -> str:
    out = lab.exec("etcd", ["python3", "-m", "vipmgr.lab.etcd", "leader", lab.state.etcd_url])
    assert out.returncode == 0, out.stdout + out.stderr
    url = out.stdout.strip()
    return next(node for node, host in etcd_members(lab).items() if f"//{host}:" in url)


def restore(lab, *members: str) -> None:
    for node in members:
        lab.fault(node, "heal")
    for node in members:
        lab.wait_healthy(node, time.monotonic() + 20)


def moved_logs(lab) -> int:
    return sum(lab.log_path(gw).read_text().count("moved to") for gw in ("gw-a", "gw-b", "gw-c"))


def member_in_use(lab, gw: str) -> str:
    """The etcd member ``gw``'s agent is on now: the last one its log says it moved to, else
    the first endpoint (earlier tests' kills may have moved it)."""
    moves = re.findall(r"moved to ([\d.]+):\d+", lab.log_path(gw).read_text())
    members = etcd_members(lab)
    host = moves[-1] if moves else endpoint_hosts(lab.state.etcd_url or "")[0]
    return next(node for node, h in members.items() if h == host)


def test_topology_is_the_seed_but_for_etcd():
    """Everything but the etcd members and the endpoint list equals the seed topology."""
    seed, e3 = load(default_topology_path()), load(ETCD3_TOPOLOGY)
    members = {"etcd", "etcd2", "etcd3"}
    assert set(e3.nodes) - set(seed.nodes) == members - {"etcd"}
    urls = e3.nodes["gw-a"].env["VIPMGR_ETCD"].split(",")
    assert len(urls) == 3
    for name, node in seed.nodes.items():
        if name in members:
            continue
        env = dict(e3.nodes[name].env, VIPMGR_ETCD=node.env.get("VIPMGR_ETCD"))
        assert (e3.nodes[name].cmd, e3.nodes[name].exec, e3.nodes[name].labels, env) == \
            (node.cmd, node.exec, node.labels, dict(node.env)), name
    assert e3.nodes["etcd"].stage_exec == seed.nodes["etcd"].stage_exec
    link = lambda l: (l.a.node, l.a.iface, l.b.node, l.b.iface)  # noqa: E731
    assert {link(l) for l in seed.links} <= {link(l) for l in e3.links}


def test_leader_kill_moves_no_role_and_leaves_no_gap(lab, bench):
    figures = []
    for i in range(LEADER_KILLS):
        victim = leader(lab)
        bench.action = lambda: lab.fault(victim, "crash")
        result = bench.trial(i, "crash")
        restore(lab, victim)
        figures.append(f"{victim} {result.outage_ms:.0f} ms")
        assert result.served_by == [result.active_before], (victim, result)
        assert result.recovered and result.outage_ms < BOUND * 1000, (victim, result)
        assert result.dual_answer == 0 and result.wrong_source == 0, result
    print(f"etcd leader killed {LEADER_KILLS} times: longest gap per trial: "
          + ", ".join(figures))


def test_partitioned_member_the_agents_use_moves_them_and_nobody_else(lab, bench):
    """Cut off the network the member the active node's agent is on (the first endpoint
    unless an earlier test moved it)."""
    before = moved_logs(lab)
    member = member_in_use(lab, bench.wait_stable())
    bench.action = lambda: lab._drop(member, ["iifname eth0 drop"], ["oifname eth0 drop"])
    result = bench.trial(0, "crash")
    try:
        moved = wait_for(lambda: moved_logs(lab) - before, 10,
                         "an agent logging a move to another etcd member", step=0.1)
    finally:
        restore(lab, member)
    assert result.served_by == [result.active_before], result
    assert result.recovered and result.outage_ms < BOUND * 1000, result
    assert moved >= 1, "no agent logged a move to another etcd member"
    print(f"member partition: {moved} agents moved, longest gap {result.outage_ms:.0f} ms")


def test_failover_works_with_one_member_down(lab, bench):
    member = next(m for m in ("etcd2", "etcd3") if m != leader(lab))
    lab.fault(member, "crash")
    try:
        active = bench.wait_stable()
        bench.action = lambda: lab.fault(active, "crash")
        result = bench.trial(0, "crash")
        lab.fault(active, "heal")
    finally:
        restore(lab, member)
    assert result.active_after not in (None, result.active_before), result
    assert result.recovered and result.dual_answer == 0 and result.wrong_source == 0, result
    print(f"crash failover with {member} down: {result.outage_ms:.0f} ms")


def test_stopped_majority_leaves_the_active_serving(lab, bench):
    """An etcd outage under onEtcdLoss: hold: nobody acquires, the active serves on its
    peers' echoes (docs/architecture.md)."""
    majority = ["etcd2", "etcd3"]
    bench.action = lambda: [lab.fault(m, "crash") for m in majority]
    try:
        result = bench.trial(0, "crash")
    finally:
        restore(lab, *majority)
    assert result.served_by == [result.active_before], result
    assert result.dual_answer == 0 and result.wrong_source == 0, result
    print(f"etcd outage: longest gap {result.outage_ms:.0f} ms")
