"""Timer parsing and the relations that keep a single active."""

import pytest

from vipmgr.config.durations import parse_duration
from vipmgr.config.errors import ConfigError
from vipmgr.config.timers import Timers


@pytest.mark.parametrize("text,seconds", [("20ms", 0.02), ("1.5s", 1.5), (2, 2.0), ("2m", 120.0),
                                          ("500us", 0.0005), (".25", 0.25)])
def test_durations(text, seconds):
    assert parse_duration(text, "x") == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["fast", "-1s", True, None, "1h", float("nan")])
def test_bad_durations_name_the_field(bad):
    with pytest.raises(ConfigError) as err:
        parse_duration(bad, "spec.failover.timers.advertInterval")
    assert err.value.problems[0][0] == "spec.failover.timers.advertInterval"


def test_defaults_are_consistent_and_round_trip():
    t = Timers()
    assert t.problems() == []
    assert Timers.from_mapping(t.to_mapping()) == t
    assert t.suspect_time + t.challenge_window < 0.3  # crash failover budget


def test_unknown_and_malformed_keys_are_all_reported():
    with pytest.raises(ConfigError) as err:
        Timers.from_mapping({"advertIntervall": "20ms", "suspectAfter": 1.5, "leaseTTL": "2s"})
    paths = [p for p, _ in err.value.problems]
    assert paths == ["spec.failover.timers.advertIntervall", "spec.failover.timers.suspectAfter",
                     "spec.failover.timers.leaseTTL"]


@pytest.mark.parametrize("change,field", [
    ({"fenceDeadline": "150ms"}, "fenceDeadline"),          # could outlive a takeover
    ({"deadmanTimeout": "250ms"}, "deadmanTimeout"),        # frozen kernel outlives takeover
    ({"suspectAfter": 1}, "suspectAfter"),
    ({"etcdTimeout": "150ms"}, "etcdTimeout"),
    ({"confirmLead": "40ms"}, "confirmLead"),               # fences while etcd answers in time
    ({"confirmLead": "110ms"}, "confirmLead"),              # one confirm per advert or more
    ({"standbyAdvertInterval": "10ms"}, "standbyAdvertInterval"),
    ({"maxClockDrift": 0.3}, "maxClockDrift"),
])
def test_relations_that_could_allow_two_actives_are_rejected(change, field):
    problems = Timers.from_mapping({**Timers().to_mapping(), **change}).problems()
    assert any(path.endswith("." + field) for path, _ in problems), problems
