"""The chaos checkers on synthetic instrument logs: each anomaly is found where it is, and
nowhere else; the schedule is reproducible."""

from __future__ import annotations

from vipmgr.lab.analysis import Sent
from vipmgr.lab.chaos import BOUND, KINDS, Episode, Observations, Step, check, make_schedule
from vipmgr.lab.echo import UdpRecord
from vipmgr.lab.probe import ArpAnswer

VIP = "192.0.2.100"
MACS = {"aa:00:00:00:00:0a": "gw-a", "aa:00:00:00:00:0b": "gw-b", "aa:00:00:00:00:0c": "gw-c",
        "aa:00:00:00:00:22": "worker-b"}
MAC = {node: mac for mac, node in MACS.items()}
RATE = 100
T0 = 1000.0


def stream(seconds: float, served: list[tuple[float, float, str]], source: str = VIP):
    """Records of a 100/s stream from T0; ``served``: (from, to, node) seconds from T0."""
    sent = Sent(0, int(seconds * RATE), T0, T0 + seconds - 1 / RATE)
    records = []
    for seq in range(sent.count):
        t = seq / RATE
        for lo, hi, node in served:
            if lo <= t < hi:
                records.append(UdpRecord(seq, source if node != "worker-b" else "198.18.0.22",
                                         T0 + t + 0.0005, MAC[node]))
    return sent, records


def observe(seconds: float, served, arp=()) -> Observations:
    sent, l2 = stream(seconds, served)
    return Observations(T0, T0 + seconds, [sent], l2, [list(arp)], MACS)


def episode(kind: str, nodes: list[str], at: float, hold: float) -> Episode:
    return Episode(Step(at, kind, hold, 5.0, 0.0), nodes, T0 + at,
                   None if KINDS[kind].instant else T0 + at + hold)


def kinds_of(anomalies) -> list[str]:
    return [a.check for a in anomalies]


def test_steady_traffic_has_no_anomaly_and_every_second_is_owed():
    anomalies, summary = check(observe(30, [(0, 30, "gw-a")]), [])
    assert anomalies == []
    assert summary["owed_seconds"] >= 29 and summary["unavailable_seconds"] == 0


def test_crash_with_a_short_failover_is_fine():
    obs = observe(30, [(0, 10.0, "gw-a"), (10.15, 30, "gw-b")])
    anomalies, summary = check(obs, [episode("crash", ["gw-a"], 10.0, 5.0)])
    assert anomalies == []
    assert [change[1:] for change in summary["role_changes"]] == [["gw-a", "gw-b"]]


def test_etcd_partition_of_the_active_that_stops_egress_is_unavailable():
    """Issue 13 bug 4: the standbys reach etcd and their peers, traffic stops for the
    whole partition: every second past the bound is counted."""
    obs = observe(60, [(0, 13.0, "gw-a"), (52.0, 60, "gw-a")])
    anomalies, summary = check(obs, [episode("etcd-partition", ["gw-a"], 10.0, 40.0)])
    assert kinds_of(anomalies) == ["unavailable"]
    unavailable = anomalies[0]
    assert unavailable.at >= T0 + 10.0 + BOUND - 1
    # owed from the bound after the fault until it ended, and again after the heal's bound
    assert summary["unavailable_seconds"] >= 40 - BOUND - 1


def test_a_benign_fault_gets_no_grace():
    """An etcd leader kill must not disturb the traffic at all: a 1.5 s hole is counted."""
    obs = observe(30, [(0, 10.0, "gw-a"), (11.9, 30, "gw-a")])
    anomalies, summary = check(obs, [episode("etcd-leader-kill", ["etcd2"], 9.8, 3.0)])
    assert kinds_of(anomalies) == ["unavailable"] and summary["unavailable_seconds"] == 1


def test_role_change_during_a_benign_fault_or_calm_is_flagged():
    obs = observe(40, [(0, 12.0, "gw-a"), (12.0, 40, "gw-b")])
    anomalies, _ = check(obs, [episode("etcd-leader-kill", ["etcd"], 10.0, 4.0)])
    assert kinds_of(anomalies) == ["role-change-while-calm"]
    assert "gw-a -> gw-b during etcd-leader-kill" in anomalies[0].detail
    # the same change right after a crash of the active is expected
    anomalies, _ = check(obs, [episode("crash", ["gw-a"], 11.9, 4.0)])
    assert anomalies == []


def test_a_logged_planned_move_is_no_anomaly_but_only_to_its_target_and_soon():
    """A rebalance (the first choice takes its gateway back after the hold-down) is a
    planned, graceful move: not flagged when an agent logged it just before."""
    obs = observe(40, [(0, 12.0, "gw-a"), (12.0, 40, "gw-b")])
    anomalies, summary = check(obs, [], planned=[(T0 + 11.95, "gw-b")])
    assert anomalies == [] and summary["planned_moves"] == 1
    for planned in ([(T0 + 11.95, "gw-c")], [(T0 + 9.0, "gw-b")], [(T0 + 12.5, "gw-b")]):
        anomalies, _ = check(obs, [], planned=planned)
        assert kinds_of(anomalies) == ["role-change-while-calm"], planned


def test_planned_moves_are_read_from_the_agent_logs(tmp_path):
    import time

    from vipmgr.lab.chaos import planned_moves

    now = time.time()

    def stamp(t: float) -> str:
        return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"

    log = tmp_path / "gw-c.log"
    log.write_text(
        f"{stamp(now - 100)} info    egress-gw: active -> releasing (release: rebalance to "
        "gw-b) gateway=egress-gw node=gw-c\n"
        f"{stamp(now + 2)} info    egress-gw: active -> releasing (release: rebalance to "
        "gw-a) gateway=egress-gw node=gw-c\n"
        f"{stamp(now + 3)} info    egress-gw: active -> releasing (release: shutdown)\n")

    class FakeLab:
        def log_path(self, node):
            return log if node == "gw-c" else tmp_path / "none.log"

    moves = planned_moves(FakeLab(), now - 10, 500.0, now + 10)
    assert [to for _, to in moves] == ["gw-a"]
    assert abs(moves[0][0] - 512.0) < 0.01  # 12 s after wall0, which is mono 500


def test_outage_owes_no_traffic_but_the_heal_does():
    obs = observe(40, [(0, 10.0, "gw-a"), (25.0, 40, "gw-a")])
    outage = episode("etcd-outage", ["etcd", "etcd2"], 10.0, 14.0)
    anomalies, summary = check(obs, [outage])
    assert anomalies == []
    # no traffic after the heal either: no active within the bound, and unavailable
    obs = observe(40, [(0, 10.0, "gw-a")])
    anomalies, _ = check(obs, [outage])
    assert set(kinds_of(anomalies)) == {"no-active-after-heal", "unavailable"}


def test_two_owners_and_leaks_are_found():
    arp = [ArpAnswer(5, MAC["gw-a"], T0 + 5.0), ArpAnswer(5, MAC["gw-b"], T0 + 5.001),
           ArpAnswer(6, MAC["gw-a"], T0 + 5.02)]
    obs = observe(20, [(0, 20, "gw-a")], arp)
    leak_sent, leak = stream(20, [(8.0, 8.5, "worker-b")])
    obs.l2 += leak
    anomalies, summary = check(obs, [])
    assert kinds_of(anomalies) == ["dual-owner", "wrong-source"]
    assert summary["dual_owner_probes"] == 1 and summary["wrong_source"] == 50
    assert "198.18.0.22 via worker-b" in anomalies[1].detail


def test_schedule_is_reproducible_and_fits_the_minutes():
    kinds = list(KINDS)
    a, b = make_schedule(7, 3, kinds), make_schedule(7, 3, kinds)
    assert a == b and a != make_schedule(8, 3, kinds)
    assert all(s.at + s.hold <= 180 for s in a) and len(a) >= 10
    assert {s.kind for s in make_schedule(1, 3, ["crash"])} == {"crash"}


def test_a_fixed_hold_keeps_one_fault_for_the_whole_run():
    steps = make_schedule(1, 10.2, ["heartbeat-loss"], hold=600)
    assert [(s.kind, s.hold) for s in steps] == [("heartbeat-loss", 600)]
    assert steps[0].at + 600 <= 10.2 * 60
    # instant faults stay instant; a hold too long for the run leaves no step
    assert {s.hold for s in make_schedule(1, 3, ["switchover", "crash"], hold=5)} == {0.0, 5}
    assert make_schedule(1, 2, ["crash"], hold=200) == []


def test_agent_pauses_and_log_lines_are_taken_from_the_run_only(tmp_path):
    import time

    from vipmgr.lab.chaos import _log_lines, agent_pauses

    now = time.time()

    def stamp(t: float) -> str:
        return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"

    log = tmp_path / "gw-a.log"
    log.write_text(f"{stamp(now - 100)} info    egress-gw: paused 500 ms node=gw-a\n"
                   f"{stamp(now)} info    egress-gw: paused 161 ms node=gw-a\n"
                   "Traceback (most recent call last):\n"
                   f"{stamp(now + 1.5)} info    egress-gw: active -> fenced\n")

    class FakeLab:
        def log_path(self, node):
            return log if node == "gw-a" else tmp_path / "none.log"

    assert agent_pauses(FakeLab(), now - 10, now + 10) == [161]
    lines = _log_lines(log, now)
    assert len(lines) == 2 and "paused 161" in lines[0] and lines[1].startswith("Traceback")
