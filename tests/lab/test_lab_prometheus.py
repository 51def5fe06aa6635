"""A real Prometheus in the seed lab: the metrics match the lab's state, a healthy lab fires
nothing, injected faults fire their alerts, and every Grafana panel's query returns data.

Prometheus scrapes the five agents every second and evaluates the production rules with
every ``for:`` shortened to 2 s (the expressions are the same), so the module runs in about
a minute. VipmgrGatewaySplitBrain is not provoked here: two actives need a double fault
(etcd loss with ``onEtcdLoss: vrrp`` plus a heartbeat partition); its promtool tests cover it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_lab_runtime import unique_name

from vipmgr.lab.bench import AGENT_NODES, ECHO_IP, GATEWAYS, SENDER, Vipmgr, wait_ready
from vipmgr.lab.prometheus import LabPrometheus, agent_targets, shortened_rules
from vipmgr.lab.runtime import deploy, destroy
from vipmgr.lab.topology import default_topology_path, load
from waiting import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "vipmgr-alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "vipmgr-dashboard.json"
GW = "egress-gw"


@pytest.fixture(scope="module")
def lab(request):
    name = unique_name(request.node.nodeid)
    destroy(name)
    lab = deploy(load(default_topology_path()).renamed(name))
    try:
        wait_ready(lab)
        yield lab
    finally:
        destroy(name)


@pytest.fixture(scope="module")
def prom(lab):
    rules = lab.workdir("etcd") / "alerts-2s.yml"
    rules.write_text(shortened_rules(RULES, "2s"))
    prom = LabPrometheus(lab, agent_targets(lab, AGENT_NODES), rules=[rules]).start()
    try:
        wait_for(lambda: prom.targets_up() == len(AGENT_NODES), 15, "every agent scraped")
        yield prom
    finally:
        prom.stop()


def values(prom: LabPrometheus, expr: str, by: str) -> dict[str, float]:
    return {s["metric"].get(by, ""): float(s["value"][1]) for s in prom.query(expr)}


def instance_of(lab, node: str) -> str:
    return agent_targets(lab, [node])[0]


def stream(lab, seconds: float, rate: int = 100) -> subprocess.Popen:
    """Selected traffic from vm-backend for ``seconds`` (bounded: rate x seconds datagrams)."""
    return subprocess.Popen(lab.netns(SENDER).argv([
        sys.executable, "-m", "vipmgr.lab.probe", "stream", ECHO_IP, "--rate", str(rate),
        "--count", str(int(rate * seconds))]), env=lab.env(SENDER),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def truth(lab, prom, disagreements: list) -> dict | None:
    """vipmgr status and the scraped gauges at one moment, when they agree (None until then:
    a scrape lags the lab by up to a second; the last disagreement goes to ``disagreements``)."""
    status = Vipmgr.status(lab)
    active = status.get("active")
    gauges = values(prom, f'vipmgr_gateway_active{{gateway="{GW}"}}', "node")
    epochs = values(prom, f'vipmgr_gateway_epoch{{gateway="{GW}"}}', "instance")
    members = {instance_of(lab, gw) for gw in GATEWAYS}
    if not active or gauges != {gw: float(gw == active) for gw in GATEWAYS} \
            or {v for k, v in epochs.items() if k in members} != {status["epoch"]} \
            or Vipmgr.status(lab).get("epoch") != status["epoch"]:
        disagreements[:] = [{"status": (active, status.get("epoch")), "active": gauges,
                             "epoch": epochs}]
        return None
    return {"active": active, "epoch": status["epoch"], "epochs": epochs}


def test_metrics_tell_the_labs_truth_and_a_healthy_lab_fires_nothing(lab, prom):
    # vipmgr_gateway_active: one series per member, 1 exactly on the node etcd names;
    # vipmgr_gateway_epoch: every member, standbys too, exports the epoch status reads from etcd
    last: list = []
    try:
        seen = wait_for(lambda: truth(lab, prom, last), 15, "status and scraped gauges agreeing")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {last}") from None
    active = seen["active"]
    # vipmgr_gateway_eligible: every member eligible at once (set at join, not after a change)
    assert values(prom, f'vipmgr_gateway_eligible{{gateway="{GW}"}}', "node") \
        == {gw: 1.0 for gw in GATEWAYS}
    # vipmgr_gateway_role: the active node's role series says active
    assert values(prom, f'vipmgr_gateway_role{{gateway="{GW}",role="active"}} == 1', "node") \
        == {active: 1.0}
    # vipmgr_gateway_info: every agent sees the gateway in the store
    assert len(prom.query(f'vipmgr_gateway_info{{gateway="{GW}"}}')) == len(AGENT_NODES)
    # vipmgr_etcd_up, vipmgr_build_info: every agent, healthy
    assert set(values(prom, "vipmgr_etcd_up", "instance").values()) == {1.0}
    assert len(prom.query("vipmgr_build_info")) == len(AGENT_NODES)
    # vipmgr_node_eligible: each egress node meets every criterion
    assert values(prom, 'vipmgr_node_eligible{criterion="eligible"}', "node") \
        == {n: 1.0 for n in AGENT_NODES}
    # vipmgr_snat_sources: the active node SNATs vm-backend, the one selected VM
    assert values(prom, f'vipmgr_snat_sources{{gateway="{GW}"}}', "instance")[
        instance_of(lab, active)] == 1
    # vipmgr_gateway_failovers_total: the newest takeover in the history is counted by the
    # node that took over, under the same reason
    newest = last_failover(lab)
    assert newest, "no failover in the history (the first active writes one)"
    wait_for(lambda: failover_count(prom, instance_of(lab, newest["node"]), newest["reason"]) >= 1,
             5, f"{newest['node']} counting its {newest['reason']} failover")
    # vipmgr_heartbeats_*: heartbeats flow
    assert sum(values(prom, "rate(vipmgr_heartbeats_received_total[10s])", "instance").values()) > 0
    wait_for(lambda: prom.query('ALERTS{alertstate="pending"}') == [], 10, "no pending alert")
    assert prom.firing() == {}


def test_faults_fire_their_alerts(lab, prom):
    active = Vipmgr.status(lab)["active"]
    standby = next(gw for gw in GATEWAYS if gw != active)

    # etcd lost by one agent: that agent alerts
    lab.fault(standby, "etcd-partition")
    cut = instance_of(lab, standby)
    try:
        wait_for(lambda: cut in [a["instance"] for a in
                                 prom.firing().get("VipmgrAgentCutFromEtcd", [])],
                 20, f"VipmgrAgentCutFromEtcd for {cut}")
        wait_for(lambda: "VipmgrEtcdUnreachable" in prom.firing(), 10, "VipmgrEtcdUnreachable")
    finally:
        lab.fault(standby, "heal")

    # misrouted: the active node's route to the echo host leaves by eth0, not the gateway's eth1
    route = ["route", "add", f"{ECHO_IP}/32", "via", "198.51.100.21", "dev", "eth0"]
    lab.netns(active).ip(*route)
    traffic = stream(lab, 20)
    try:
        wait_for(lambda: {"gateway": GW, "instance": instance_of(lab, active)} in [
            {k: a[k] for k in ("gateway", "instance")}
            for a in prom.firing().get("VipmgrEgressMisrouted", [])], 20,
            f"VipmgrEgressMisrouted on {active}")
    finally:
        traffic.kill()
        traffic.wait()
        lab.netns(active).ip("route", "del", f"{ECHO_IP}/32", check=False)

    # no active node: every egress node cordoned; worker-b drops vm-backend's traffic
    for gw in GATEWAYS:
        assert lab.exec("etcd", ["vipmgr", "cordon", gw]).returncode == 0
    traffic = stream(lab, 20)
    try:
        wait_for(lambda: "VipmgrGatewayNoActive" in prom.firing(), 20, "VipmgrGatewayNoActive")
        wait_for(lambda: instance_of(lab, "worker-b") in [
            a["instance"] for a in prom.firing().get("VipmgrEgressFailClosed", [])], 20,
            "VipmgrEgressFailClosed on worker-b")
    finally:
        traffic.kill()
        traffic.wait()
        for gw in GATEWAYS:
            lab.exec("etcd", ["vipmgr", "uncordon", gw])
    wait_for(lambda: Vipmgr.status(lab).get("active"), 20, "an active node again")


def test_every_dashboard_panel_returns_data(lab, prom):
    """In a healthy lab every panel has data once a scrape has seen the current active node
    (the test before may have just ended an outage, so the first scrapes can show none)."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert panels
    wait_for(lambda: Vipmgr.status(lab).get("active"), 20, "an active node")

    def empty() -> list[tuple[str, str]]:
        return [(p["title"], t["expr"]) for p in panels for t in p["targets"]
                if not prom.query(t["expr"])]

    left, deadline = empty(), time.monotonic() + 10
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = empty()
    assert left == []


def last_failover(lab) -> dict:
    events = json.loads(lab.exec("etcd", ["vipmgr", "events", GW, "-o", "json"]).stdout)["events"]
    return next((e for e in reversed(events) if e["kind"] == "failover"), {})


def failover_count(prom, instance: str, reason: str) -> float:
    return sum(values(prom, f'vipmgr_gateway_failovers_total{{gateway="{GW}",reason="{reason}",'
                            f'instance="{instance}"}}', "reason").values())


@pytest.mark.parametrize("how, reason", [("cordon", "cordon"), ("switchover", "switchover"),
                                         ("crash", "silence")])
def test_failover_reasons_name_the_cause(lab, prom, how, reason):
    """The history, status and vipmgr_gateway_failovers_total agree on why the active moved."""
    old = wait_for(lambda: Vipmgr.status(lab).get("active"), 20, "an active node")
    wait_for(lambda: prom.targets_up() == len(AGENT_NODES), 20, "every agent scraped")
    # counted under the cause only, also when the holder's note arrives after the takeover
    before = {gw: {r: failover_count(prom, instance_of(lab, gw), r) for r in (reason, "released")}
              for gw in GATEWAYS}
    if how == "cordon":
        assert lab.exec("etcd", ["vipmgr", "cordon", old]).returncode == 0
    elif how == "switchover":
        out = lab.exec("etcd", ["vipmgr", "switchover", GW, "--wait", "--timeout", "15"])
        assert out.returncode == 0, out.stdout + out.stderr
    else:
        lab.fault(old, "crash")
    try:
        event = wait_for(lambda: (e := last_failover(lab)).get("previous") == old and e, 20,
                         f"a failover away from {old}")
        new = event["node"]
        assert event["reason"] == reason, event
        assert event["duration_ms"] is not None and event["duration_ms"] < 5000, event
        wait_for(lambda: failover_count(prom, instance_of(lab, new), reason)
                 == before[new][reason] + 1, 10, f"{new} counting a {reason} failover")
        assert failover_count(prom, instance_of(lab, new), "released") \
            == before[new]["released"], "counted as 'released' too"
        out = lab.exec("etcd", ["vipmgr", "status", GW]).stdout
        assert f"last failover: {old} -> {new}, reason {reason}," in out, out
    finally:
        if how == "cordon":
            lab.exec("etcd", ["vipmgr", "uncordon", old])
        if how == "crash":
            lab.fault(old, "heal")
        wait_for(lambda: lab.exec("etcd", ["vipmgr", "status", GW]).returncode == 0, 30,
                 "a healthy gateway again")
