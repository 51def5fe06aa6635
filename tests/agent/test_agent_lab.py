"""Agents in the seed lab: real etcd, kernel, nft and heartbeats between namespaces.

One lab for the module; each test leaves the gateway healthy for the next.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from vipmgr.lab.bench import seed_network
from vipmgr.lab.runtime import LabError, deploy, destroy
from waiting import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.slow]

LAB = "agt"
GWS = ("gw-a", "gw-b", "gw-c")
AGENTS = GWS + ("worker-a", "worker-b")
MANIFESTS = Path(__file__).resolve().parents[2] / "lab" / "manifests"
HEALTH_FILE = "healthy"
AGENT_CONFIG = """\
probes:
  - name: flag
    kind: file
    path: {path}
    interval: 100ms
    timeout: 50ms
    rise: 1
    fall: 2
"""


@pytest.fixture(scope="module")
def lab():
    destroy(LAB)
    lab = deploy(seed_network(LAB))
    try:
        out = lab.exec("etcd", ["vipmgr", "apply", "-f", str(MANIFESTS / "lab-inventory.yaml"),
                                "-f", str(MANIFESTS / "egressgateway-virtual-ip.yaml"),
                                "-f", str(MANIFESTS / "egressgatewaypolicy.yaml")])
        assert out.returncode == 0, out.stderr
        for node in AGENTS:
            workdir = lab.workdir(node)
            (workdir / HEALTH_FILE).write_text("ok\n")
            (workdir / "agent.yaml").write_text(
                AGENT_CONFIG.format(path=workdir / HEALTH_FILE))
            lab.start(node, ["vipmgr", "agent", "--node", node,
                             "--config", str(workdir / "agent.yaml")])
        wait_for(lambda: status(lab)[0] == 0, 15, "a healthy gateway")
        yield lab
    finally:
        destroy(LAB)


def vipmgr(lab, *args: str):
    return lab.exec("etcd", ["vipmgr", *args])


def status(lab) -> tuple[int, dict]:
    out = vipmgr(lab, "status", "-o", "json")
    data = json.loads(out.stdout) if out.stdout.strip().startswith("{") else {}
    gateways = data.get("gateways", [{}])
    return out.returncode, (gateways[0] if gateways else {})


def active(lab) -> str | None:
    return status(lab)[1].get("active")


def serving_nodes(lab) -> list[str]:
    """Nodes whose kernel holds the VIP right now (observed, not reported)."""
    return [n for n in GWS
            if "192.0.2.100" in lab.exec(n, ["ip", "-4", "-br", "addr", "show", "eth1"]).stdout]


def pending_moves(lab) -> list[dict]:
    out = vipmgr(lab, "status", "-o", "json")
    data = json.loads(out.stdout) if out.stdout.strip().startswith("{") else {}
    return data.get("placement", {}).get("pending", [])


def healthy_again(lab):
    """Status exit 0 and no rebalance still due: a node that took the gateway while the
    placement's first choice was cordoned hands it back after the hold-down, and a test
    started before that would see the move as its own."""
    wait_for(lambda: status(lab)[0] == 0, 10, "status exit 0")
    wait_for(lambda: pending_moves(lab) == [], 20, "no pending placement move")
    wait_for(lambda: status(lab)[0] == 0, 10, "status exit 0 after the move")


def test_seed_vm_is_seen_as_the_vip_and_others_as_their_worker(lab):
    assert lab.curl("vm-backend").strip() == "192.0.2.100"
    assert lab.curl("vm-frontend").strip() == "198.18.0.21"
    assert serving_nodes(lab) == [active(lab)]


def test_cordon_moves_the_role_away_at_once(lab):
    first = active(lab)
    vipmgr(lab, "cordon", first)
    try:
        new = wait_for(lambda: (a := active(lab)) not in (None, first) and a, 2.0,
                       "another active node")
        assert first not in serving_nodes(lab)
        assert lab.curl("vm-backend").strip() == "192.0.2.100"
        code, report = status(lab)
        member = next(m for m in report["members"] if m["node"] == first)
        assert not member["eligible"] and "cordoned" in member["why_not"]
        # No preemption by default: uncordoning does not take the role back.
        vipmgr(lab, "uncordon", first)
        time.sleep(1.0)
        assert active(lab) == new
    finally:
        vipmgr(lab, "uncordon", first)
    healthy_again(lab)


def test_failing_probe_moves_the_role_and_the_node_never_returns_while_failing(lab):
    first = active(lab)
    flag = lab.workdir(first) / HEALTH_FILE
    flag.unlink()
    try:
        wait_for(lambda: (a := active(lab)) not in (None, first) and a, 3.0, "failover")
        out = vipmgr(lab, "get", "nodes", "-o", "wide").stdout
        row = next(line for line in out.splitlines() if line.startswith(first))
        assert "False" in row and "flag" in row  # Ready=False with the probe's reason
        second = active(lab)
        vipmgr(lab, "cordon", second)
        wait_for(lambda: active(lab) not in (None, first, second), 3.0, "third node active")
        assert first not in serving_nodes(lab)
    finally:
        flag.write_text("ok\n")
        for node in GWS:
            vipmgr(lab, "uncordon", node)
    healthy_again(lab)


def test_sigterm_releases_within_a_second(lab):
    first = active(lab)
    started = time.monotonic()
    lab.stop(first, timeout=5)
    stopped = time.monotonic() - started
    try:
        wait_for(lambda: (a := active(lab)) not in (None, first) and a, 1.0, "successor")
        assert stopped < 1.5, f"agent took {stopped:.2f}s to exit"
        assert first not in serving_nodes(lab)
    finally:
        lab.start(first)  # the next tests need all five agents, pass or fail
    healthy_again(lab)


def test_sighup_reloads_probes(lab):
    """A probe added by editing the config and sending SIGHUP takes effect (and fails)."""
    first = active(lab)
    config = lab.workdir(first) / "agent.yaml"
    original = config.read_text()
    config.write_text(original + """  - name: never
    kind: file
    path: /nonexistent/vipmgr-test-flag
    interval: 100ms
    timeout: 50ms
    rise: 1
    fall: 1
""")
    try:
        os.kill(lab.node(first).pid, signal.SIGHUP)
        wait_for(lambda: (a := active(lab)) not in (None, first) and a, 3.0,
                 "failover after the reloaded probe fails")
    finally:
        config.write_text(original)
        os.kill(lab.node(first).pid, signal.SIGHUP)
    healthy_again(lab)


def test_sigusr1_dumps_threads_and_tasks_and_the_agent_carries_on(lab):
    """Where a stuck agent waits, without stopping it: every thread's stack and every
    task's await chain go to its log; it keeps its role."""
    first = active(lab)
    log = lab.log_path(first)
    before = log.stat().st_size
    os.kill(lab.node(first).pid, signal.SIGUSR1)
    dump = wait_for(lambda: (t := log.read_bytes()[before:].decode(errors="replace"))
                    and "heartbeat-keys awaits:" in t and t, 5.0, "the task dump in the log")
    assert "Thread 0x" in dump and "(most recent call first)" in dump  # faulthandler's
    assert "selfcheck awaits:" in dump and "_selfcheck_loop" in dump
    assert lab.process_state(first) == "running" and active(lab) == first


def test_status_exit_codes_follow_eligibility(lab):
    assert status(lab)[0] == 0
    holder = active(lab)
    others = [n for n in GWS if n != holder]
    for node in others:
        vipmgr(lab, "cordon", node)
    try:
        wait_for(lambda: status(lab)[0] == 1, 3, "degraded: no eligible standby")
        vipmgr(lab, "cordon", holder)
        wait_for(lambda: status(lab)[0] == 4, 3, "no active node")
        assert serving_nodes(lab) == []
    finally:
        for node in GWS:
            vipmgr(lab, "uncordon", node)
    healthy_again(lab)


def test_etcd_restart_keeps_the_active_node(lab):
    holder = active(lab)
    lab.stop("etcd", timeout=5)
    time.sleep(1.0)
    assert serving_nodes(lab) == [holder], "the active keeps serving while etcd is away"
    lab.start("etcd")
    healthy_again(lab)
    assert active(lab) == holder


def test_agent_leaves_and_rejoins_as_labels_change(lab):
    holder = active(lab)
    epoch = status(lab)[1]["epoch"]
    standby = next(n for n in GWS if n != holder)
    vipmgr(lab, "label", "node", standby, "node-role.deckhouse.io/egress-")
    try:
        wait_for(lambda: standby not in {m["node"] for m in status(lab)[1].get("members", [])},
                 3, f"{standby} leaving the group")
        assert active(lab) == holder
    finally:
        vipmgr(lab, "label", "node", standby, "node-role.deckhouse.io/egress=")
    wait_for(lambda: any(m["node"] == standby and m["role"] == "standby"
                         for m in status(lab)[1].get("members", [])), 5, f"{standby} rejoining")
    healthy_again(lab)
    # Another node leaving and rejoining is no reason for the active to hand over.
    assert (active(lab), status(lab)[1]["epoch"]) == (holder, epoch)


def metrics(lab, node: str) -> str:
    return lab.exec(node, ["python3", "-m", "vipmgr.lab.echo", "get",
                           "http://127.0.0.1:9750/metrics"]).stdout


def dropped(lab, node: str, reason: str) -> float:
    prefix = f'vipmgr_dropped_packets_total{{gateway="egress-gw",reason="{reason}"}} '
    line = next((ln for ln in metrics(lab, node).splitlines() if ln.startswith(prefix)), None)
    return float(line.removeprefix(prefix)) if line else -1.0


def test_no_eligible_node_fails_closed_on_the_worker_and_counts_it(lab):
    for node in GWS:
        vipmgr(lab, "cordon", node)
    try:
        wait_for(lambda: active(lab) is None and not serving_nodes(lab), 3, "nobody active")
        before = dropped(lab, "worker-b", "failclosed")
        with pytest.raises(LabError):  # dropped on worker-b, not sent with its own address
            lab.curl("vm-backend", timeout=1.0)
        assert lab.curl("vm-frontend") == "198.18.0.21", "unselected traffic still flows"
        wait_for(lambda: dropped(lab, "worker-b", "failclosed") > max(before, 0), 3,
                 "vipmgr_dropped_packets_total{reason=failclosed} rising on worker-b")
    finally:
        for node in GWS:
            vipmgr(lab, "uncordon", node)
    healthy_again(lab)
    wait_for(lambda: lab.curl("vm-backend") == "192.0.2.100", 5, "vm-backend seen as the VIP")


def test_metrics_endpoint_exposes_the_families(lab):
    holder = active(lab)
    text = metrics(lab, holder)
    for family in ("vipmgr_gateway_active", "vipmgr_gateway_transitions_total",
                   "vipmgr_heartbeats_sent_total", "vipmgr_heartbeats_received_total",
                   "vipmgr_etcd_up", "vipmgr_etcd_request_duration_seconds",
                   "vipmgr_gateway_epoch", "vipmgr_node_eligible", "vipmgr_garp_sent_total",
                   "vipmgr_snat_sources", "vipmgr_deadman_refreshes_total", "vipmgr_build_info",
                   "vipmgr_dropped_packets_total"):
        assert family in text, family
    assert f'vipmgr_gateway_active{{gateway="egress-gw",node="{holder}"}} 1.0' in text
