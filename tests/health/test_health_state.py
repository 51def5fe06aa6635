"""Rise/fall semantics, the monitor's Ready aggregate and its human reasons, eligibility."""

from __future__ import annotations

from vipmgr.health.eligibility import evaluate_eligibility
from vipmgr.health.monitor import HealthMonitor
from vipmgr.health.probes import CarrierProbe, FileProbe
from vipmgr.health.state import CheckResult, RiseFall, Status

OK = CheckResult(True, "carrier, operstate UP")
NO_CARRIER = CheckResult(False, "no carrier")


def feed(machine: RiseFall, pattern: str) -> list[Status]:
    """Feed '+'/'-' results; return the status after each."""
    out = []
    for t, ch in enumerate(pattern):
        machine.observe(OK if ch == "+" else NO_CARRIER, float(t))
        out.append(machine.status)
    return out


def test_starts_pending_and_needs_rise_successes():
    m = RiseFall(rise=2, fall=3)
    assert m.status is Status.PENDING
    assert feed(m, "++") == [Status.PENDING, Status.UP]


def test_pending_goes_down_after_fall_failures():
    assert feed(RiseFall(rise=2, fall=3), "---") == [Status.PENDING] * 2 + [Status.DOWN]


def test_fall_needs_consecutive_failures_and_a_success_resets():
    m = RiseFall(rise=1, fall=3)
    assert feed(m, "+--+--")[-1] is Status.UP
    assert feed(m, "-")[-1] is Status.DOWN


def test_rise_needs_consecutive_successes():
    m = RiseFall(rise=3, fall=1)
    assert feed(m, "-++-++")[-1] is Status.DOWN
    assert feed(m, "+")[-1] is Status.UP


def test_observe_reports_transitions_once_with_time():
    m = RiseFall(rise=1, fall=2)
    assert m.observe(OK, 10.0) is Status.PENDING
    assert m.observe(OK, 11.0) is None
    assert m.observe(NO_CARRIER, 12.0) is None
    assert m.observe(NO_CARRIER, 13.0) is Status.UP
    assert (m.status, m.since, m.failures) == (Status.DOWN, 13.0, 2)


def uplink(**kw) -> CarrierProbe:
    return CarrierProbe(name="uplink", interface="eth1", **kw)


def test_monitor_ready_only_when_every_probe_is_up():
    mon = HealthMonitor([uplink(rise=1, fall=1), FileProbe(name="flag", path="/run/f", rise=1)])
    assert not mon.ready
    mon.observe("uplink", OK, 1.0)
    assert not mon.ready
    assert mon.failing_reasons() == ["probe 'flag' (file /run/f): no result yet"]
    mon.observe("flag", CheckResult(True, "exists"), 1.0)
    assert mon.ready and mon.failing_reasons() == []


def test_monitor_without_probes_is_ready():
    assert HealthMonitor().ready


def test_monitor_reasons_follow_the_streaks():
    mon = HealthMonitor([uplink(rise=2, fall=3)])
    reason = lambda: mon.reason("uplink")  # noqa: E731
    mon.observe("uplink", OK, 0)
    assert reason() == "probe 'uplink' (carrier eth1): pending (1 of 2 successes to go up)"
    t = mon.observe("uplink", OK, 1)
    assert (t.old, t.new, t.at) == (Status.PENDING, Status.UP, 1)
    assert reason() == "probe 'uplink' (carrier eth1): carrier, operstate UP"
    mon.observe("uplink", NO_CARRIER, 2)
    assert reason() == "probe 'uplink' (carrier eth1): up, failing (1 of 3 to go down): no carrier"
    assert mon.ready
    mon.observe("uplink", NO_CARRIER, 3)
    t = mon.observe("uplink", NO_CARRIER, 4)
    assert (t.old, t.new) == (Status.UP, Status.DOWN)
    assert t.reason == "probe 'uplink' (carrier eth1): no carrier for 3 checks"
    assert not mon.ready
    mon.observe("uplink", NO_CARRIER, 5)
    assert reason() == "probe 'uplink' (carrier eth1): no carrier for 4 checks"
    mon.observe("uplink", OK, 6)
    assert reason() == "probe 'uplink' (carrier eth1): down, recovering (1 of 2 successes to go up)"
    status = mon.status("uplink")
    assert (status.status, status.since, status.last_at) == (Status.DOWN, 4, 6)


def test_reconfigure_keeps_state_of_unchanged_probes_only():
    mon = HealthMonitor([uplink(rise=1), FileProbe(name="flag", path="/run/f", rise=1)])
    mon.observe("uplink", OK, 0)
    mon.observe("flag", CheckResult(True, "exists"), 0)
    mon.reconfigure([uplink(rise=1), FileProbe(name="flag", path="/run/other", rise=1)])
    assert mon.status("uplink").status is Status.UP
    assert mon.status("flag").status is Status.PENDING
    mon.reconfigure([uplink(rise=1)])
    assert mon.ready and [s.name for s in mon.statuses()] == ["uplink"]


def test_eligibility_criteria_and_reasons():
    ok = evaluate_eligibility(health_ready=True, cordoned=False, datapath_ready=True)
    assert ok.eligible and ok.summary() == "eligible" and ok.reasons == {}
    bad = evaluate_eligibility(
        health_ready=False, health_reasons=["probe 'uplink' (carrier eth1): no carrier for 3 checks"],
        cordoned=True, datapath_ready=False, datapath_reasons=["nft table vipmgr missing"],
        selected=False, node_selector="egress=true")
    assert bad.criteria() == {"ready": False, "not_cordoned": False, "datapath_ready": False,
                              "selected": False}
    assert not bad.eligible and not bad.node_eligible
    assert bad.reasons["ready"] == "probe 'uplink' (carrier eth1): no carrier for 3 checks"
    assert bad.reasons["datapath_ready"] == "nft table vipmgr missing"
    assert bad.reasons["selected"] == "node labels do not match nodeSelector egress=true"
    assert bad.summary().startswith("ready: probe 'uplink'")
    assert "not_cordoned: node is cordoned" in bad.summary()
    only_unselected = evaluate_eligibility(health_ready=True, cordoned=False, datapath_ready=True,
                                           selected=False)
    assert only_unselected.node_eligible and not only_unselected.eligible
