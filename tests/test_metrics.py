"""AgentMetrics: every family in the exposition, conventions, and the /metrics endpoint."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from vipmgr.agent.metrics import AgentMetrics, parse_metrics_addr
from vipmgr.health.eligibility import evaluate_eligibility
from vipmgr.health.monitor import HealthMonitor
from vipmgr.health.probes import CarrierProbe, FileProbe
from vipmgr.health.state import CheckResult

FAMILIES = {
    # name as exposed (counters get _total) -> type
    "vipmgr_build_info": "gauge",  # an Info: a gauge with value 1 in the text format
    "vipmgr_gateway_info": "gauge",
    "vipmgr_gateway_active": "gauge",
    "vipmgr_gateway_role": "gauge",
    "vipmgr_gateway_eligible": "gauge",
    "vipmgr_gateway_epoch": "gauge",
    "vipmgr_gateway_heartbeat_path_ok": "gauge",
    "vipmgr_gateway_etcd_loss_mode_active": "gauge",
    "vipmgr_gateway_transitions_total": "counter",
    "vipmgr_gateway_failovers_total": "counter",
    "vipmgr_heartbeats_sent_total": "counter",
    "vipmgr_heartbeats_received_total": "counter",
    "vipmgr_heartbeats_rejected_total": "counter",
    "vipmgr_etcd_up": "gauge",
    "vipmgr_etcd_request_duration_seconds_count": "histogram",
    "vipmgr_node_eligible": "gauge",
    "vipmgr_garp_sent_total": "counter",
    "vipmgr_conntrack_entries_deleted_total": "counter",
    "vipmgr_snat_sources": "gauge",
    "vipmgr_snat_cidrs": "gauge",
    "vipmgr_deadman_refreshes_total": "counter",
    "vipmgr_dropped_packets_total": "counter",
    "vipmgr_probe_up": "gauge",
    "vipmgr_history_write_failures_total": "counter",
    "vipmgr_heartbeat_auth_mode": "gauge",
    "vipmgr_heartbeat_insecure": "gauge",
    "vipmgr_etcd_member_moves_total": "counter",
    "vipmgr_event_loop_lag_seconds_count": "histogram",
    "vipmgr_conntrack_sync_entries_total": "counter",
    "vipmgr_conntrack_sync_cached_entries": "gauge",
    "vipmgr_conntrack_sync_lag_seconds": "gauge",
    "vipmgr_conntrack_sync_resyncs_total": "counter",
    "vipmgr_conntrack_sync_injected_total": "counter",
    "vipmgr_conntrack_sync_inject_seconds": "gauge",
    "vipmgr_conntrack_sync_rejected_total": "counter",
    "vipmgr_conntrack_sync_overflow_total": "counter",
}


def samples(registry) -> dict[tuple[str, frozenset], float]:
    text = generate_latest(registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(registry, name, **labels):
    return samples(registry).get((name, frozenset(labels.items())))


@pytest.fixture
def metrics():
    return AgentMetrics("node-a", CollectorRegistry(), failover_reasons=("health", "holder_lost"))


def exercise(m: AgentMetrics) -> None:
    """One pass through every method, as an agent would call them."""
    m.gateway_exists("gw1", "VirtualIPAddress")
    m.gateway_joined("gw1")
    m.role_changed("gw1", "standby", "active", "holder_lost", active=True)
    m.failover_completed("gw1", "silence")
    m.epoch_seen("gw1", 4711)
    m.etcd_loss_mode_changed("gw1", False)
    m.heartbeat_sent("gw1", "eth1")
    m.heartbeat_received("gw1")
    m.heartbeat_rejected("auth")
    m.heartbeat_path_changed("gw1", True)
    m.heartbeat_auth("etcd", "k1")
    m.etcd_member_moved()
    m.loop_lag(0.003)
    m.ctsync_replicated("gw1", "sent", 5)
    m.ctsync_entries("gw1", 5)
    m.ctsync_lag("gw1", 0.01)
    m.ctsync_resync("gw1", "requested")
    m.ctsync_committed("gw1", created=4, existed=1, failed=0, seconds=0.005)
    m.ctsync_rejected("auth")
    m.ctsync_overflow("gw1", 1)
    m.etcd_connection(True)
    with m.etcd_request("txn"):
        pass
    mon = HealthMonitor([CarrierProbe(name="uplink", interface="eth1", rise=1)])
    mon.observe("uplink", CheckResult(True, "carrier"), 0)
    m.probes_updated(mon.statuses())
    m.node_eligibility(evaluate_eligibility(health_ready=True, cordoned=False, datapath_ready=True))
    m.gateway_eligibility("gw1", True)
    m.garp_sent("gw1", "eth1", 3)
    m.conntrack_entries_deleted("gw1", 12, reason="take")
    m.history_write_failed("gw1")
    m.snat_sets("gw1", sources=5, cidrs=2)
    m.deadman_refreshed("gw1")
    m.drops_read({("gw1", "fenced"): 7})


def test_every_family_is_exposed_with_its_type(metrics):
    exercise(metrics)
    text = generate_latest(metrics.registry).decode()
    exposed = {s.name: fam.type for fam in text_string_to_metric_families(text)
               for s in fam.samples}
    assert {k: exposed.get(k) for k in FAMILIES} == FAMILIES
    assert "vipmgr_etcd_request_duration_seconds_bucket" in exposed


def test_values_after_exercise(metrics):
    exercise(metrics)
    r = metrics.registry
    assert value(r, "vipmgr_gateway_active", gateway="gw1", node="node-a") == 1
    assert value(r, "vipmgr_gateway_role", gateway="gw1", node="node-a", role="active") == 1
    assert value(r, "vipmgr_gateway_role", gateway="gw1", node="node-a", role="standby") == 0
    assert value(r, "vipmgr_gateway_transitions_total", gateway="gw1", reason="holder_lost") == 1
    assert value(r, "vipmgr_gateway_failovers_total", gateway="gw1", reason="silence") == 1
    assert value(r, "vipmgr_gateway_failovers_total", gateway="gw1", reason="cordon") == 0
    assert value(r, "vipmgr_gateway_epoch", gateway="gw1") == 4711
    assert value(r, "vipmgr_gateway_info", gateway="gw1", mode="VirtualIPAddress") == 1
    assert value(r, "vipmgr_heartbeats_rejected_total", reason="auth") == 1
    assert value(r, "vipmgr_garp_sent_total", gateway="gw1", interface="eth1") == 3
    assert value(r, "vipmgr_conntrack_entries_deleted_total", gateway="gw1", reason="take") == 12
    assert value(r, "vipmgr_snat_sources", gateway="gw1") == 5
    assert value(r, "vipmgr_etcd_request_duration_seconds_count", operation="txn") == 1
    assert value(r, "vipmgr_probe_up", probe="uplink", kind="carrier") == 1
    for criterion in ("ready", "not_cordoned", "datapath_ready", "eligible"):
        assert value(r, "vipmgr_node_eligible", node="node-a", criterion=criterion) == 1


def test_dropped_packets_add_the_kernel_counters_increase_across_their_resets(metrics):
    r = metrics.registry
    metrics.drops_read({("gw1", "fenced"): 3, ("gw1", "misrouted"): 0})
    metrics.drops_read({("gw1", "fenced"): 10, ("gw1", "misrouted"): 2})
    assert value(r, "vipmgr_dropped_packets_total", gateway="gw1", reason="fenced") == 10
    # the node became active: the fenced counter is gone, misrouted keeps counting
    metrics.drops_read({("gw1", "misrouted"): 5})
    # back to standby: the kernel's fenced counter starts again at 0
    metrics.drops_read({("gw1", "fenced"): 4})
    metrics.drops_read({("gw1", "fenced"): 1})  # recreated between two reads
    assert value(r, "vipmgr_dropped_packets_total", gateway="gw1", reason="fenced") == 15
    assert value(r, "vipmgr_dropped_packets_total", gateway="gw1", reason="misrouted") == 5


def test_counters_carry_no_state_label(metrics):
    exercise(metrics)
    text = generate_latest(metrics.registry).decode()
    for fam in text_string_to_metric_families(text):
        if fam.type == "counter":
            for s in fam.samples:
                assert not {"state", "role", "status"} & set(s.labels), s


def test_eligibility_criteria_per_node(metrics):
    metrics.node_eligibility(evaluate_eligibility(health_ready=False, cordoned=True,
                                                  datapath_ready=True))
    r = metrics.registry
    assert value(r, "vipmgr_node_eligible", node="node-a", criterion="ready") == 0
    assert value(r, "vipmgr_node_eligible", node="node-a", criterion="not_cordoned") == 0
    assert value(r, "vipmgr_node_eligible", node="node-a", criterion="datapath_ready") == 1
    assert value(r, "vipmgr_node_eligible", node="node-a", criterion="eligible") == 0


def test_leaving_and_deleting_a_gateway_drops_its_state_series(metrics):
    exercise(metrics)
    metrics.gateway_joined("gw2")
    metrics.gateway_left("gw1")
    metrics.gateway_deleted("gw1")
    left = [k for k in samples(metrics.registry)
            if ("gateway", "gw1") in k[1] and not k[0].endswith("_created")]
    assert sorted({name for name, _ in left}) == sorted({
        "vipmgr_gateway_transitions_total", "vipmgr_gateway_failovers_total",
        "vipmgr_heartbeats_sent_total", "vipmgr_heartbeats_received_total",
        "vipmgr_garp_sent_total", "vipmgr_conntrack_entries_deleted_total",
        "vipmgr_deadman_refreshes_total", "vipmgr_dropped_packets_total",
        "vipmgr_history_write_failures_total", "vipmgr_conntrack_sync_entries_total",
        "vipmgr_conntrack_sync_resyncs_total", "vipmgr_conntrack_sync_injected_total",
        "vipmgr_conntrack_sync_overflow_total"})
    assert value(metrics.registry, "vipmgr_gateway_active", gateway="gw2", node="node-a") == 0


def test_heartbeat_auth_mode_is_one_gauge_per_mode(metrics):
    metrics.heartbeat_auth("insecure")
    r = metrics.registry
    assert value(r, "vipmgr_heartbeat_insecure") == 1
    metrics.heartbeat_auth("file", "key-2")
    assert [value(r, "vipmgr_heartbeat_auth_mode", mode=m) for m in ("etcd", "file", "insecure")] \
        == [0, 1, 0]
    assert value(r, "vipmgr_heartbeat_insecure") == 0


def test_every_gauge_has_a_value_at_join(metrics):
    """A fresh member exports the truth before anything happened: standby, eligible as
    evaluated at join, epoch 0 (nobody seen yet), every failover reason at 0."""
    metrics.gateway_joined("gw1", eligible=True)
    r = metrics.registry
    assert value(r, "vipmgr_gateway_eligible", gateway="gw1", node="node-a") == 1
    assert value(r, "vipmgr_gateway_active", gateway="gw1", node="node-a") == 0
    assert value(r, "vipmgr_gateway_role", gateway="gw1", node="node-a", role="standby") == 1
    assert value(r, "vipmgr_gateway_epoch", gateway="gw1") == 0
    assert value(r, "vipmgr_snat_sources", gateway="gw1") == 0
    from vipmgr.agent.events import REASONS
    for reason in REASONS:
        assert value(r, "vipmgr_gateway_failovers_total", gateway="gw1", reason=reason) == 0


@pytest.mark.parametrize("gateway, reason, label", [
    ("egw", "take", "take"), ("egw", "leave", "leave"), ("egw", "leave egw (192.0.2.100)", "other"),
])
def test_conntrack_labels_are_bounded(metrics, gateway, reason, label):
    """Issue 13 bug 3: the gateway label is the gateway's name, the reason one of a few
    words; no address or policy name ever becomes a label value."""
    metrics.conntrack_entries_deleted(gateway, 3, reason)
    series = [dict(k[1]) for k, v in samples(metrics.registry).items()
              if k[0] == "vipmgr_conntrack_entries_deleted_total" and v]
    assert series == [{"gateway": gateway, "reason": label}]


def test_gateway_mode_change_replaces_the_info_series(metrics):
    metrics.gateway_exists("gw1", "VirtualIPAddress")
    metrics.gateway_exists("gw1", "PrimaryIPFromEgressGatewayNodeInterface")
    info = [k for k in samples(metrics.registry) if k[0] == "vipmgr_gateway_info"]
    assert info == [("vipmgr_gateway_info", frozenset({("gateway", "gw1"),
                     ("mode", "PrimaryIPFromEgressGatewayNodeInterface")}))]


def test_probe_series_follow_reconfiguration(metrics):
    mon = HealthMonitor([CarrierProbe(name="uplink", interface="eth1"),
                         FileProbe(name="flag", path="/run/f")])
    metrics.probes_updated(mon.statuses())
    mon.reconfigure([FileProbe(name="flag", path="/run/f")])
    metrics.probes_updated(mon.statuses())
    assert [k for k in samples(metrics.registry) if k[0] == "vipmgr_probe_up"] == [
        ("vipmgr_probe_up", frozenset({("probe", "flag"), ("kind", "file")}))]


@pytest.mark.parametrize("addr, expected", [
    ("127.0.0.1:9750", ("127.0.0.1", 9750)),
    ("[::1]:9750", ("::1", 9750)),
    ("0.0.0.0:0", ("0.0.0.0", 0)),
])
def test_parse_metrics_addr(addr, expected):
    assert parse_metrics_addr(addr) == expected


@pytest.mark.parametrize("addr", ["9750", ":9750", "127.0.0.1:http", "127.0.0.1:70000"])
def test_parse_metrics_addr_rejects(addr):
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_metrics_addr(addr)


def test_serve_exposes_metrics_over_http(metrics):
    exercise(metrics)
    endpoint = metrics.serve("127.0.0.1:0")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
    finally:
        endpoint.close()
    assert 'vipmgr_gateway_active{gateway="gw1",node="node-a"} 1.0' in body
    assert "vipmgr_build_info{" in body
