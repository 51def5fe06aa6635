"""One packet per node: core.heartbeat.step gathers every election's advert."""

from __future__ import annotations

import math

from vipmgr.config.timers import Timers
from vipmgr.core.election import Election, ElectionConfig
from vipmgr.core.heartbeat import SendHeartbeat, step
from vipmgr.core.messages import (
    AdvertNow, HealthChanged, SendAdvert, Shutdown, Start, Tick,
)

T = Timers()
GATEWAYS = [f"gw{i:02d}" for i in range(30)]


def elections(count: int = len(GATEWAYS)) -> dict[str, Election]:
    return {gw: Election(ElectionConfig(gateway=gw, node="a", members=("a", "b", "c"),
                                        priority=100, timers=T))
            for gw in GATEWAYS[:count]}


def run(els: dict[str, Election], until: float) -> list[tuple[float, SendHeartbeat]]:
    """Drive the node as the agent does: each election woken at its own deadline."""
    packets = []
    now = 0.0
    for gw in els:
        done = step(els, gw, Start(), now)
        if done.heartbeat:
            packets.append((now, done.heartbeat))
    while True:
        gw, now = min(((gw, el.next_deadline or math.inf) for gw, el in els.items()),
                      key=lambda item: item[1])
        if now > until:
            return packets
        done = step(els, gw, Tick(), now)
        if done.heartbeat:
            packets.append((now, done.heartbeat))


def test_packets_per_second_do_not_grow_with_gateways():
    one = run(elections(1), 1.0)
    many = run(elections(30), 1.0)
    # After the starts (each gateway's first advert), one packet per standby period.
    steady = lambda packets: [t for t, _ in packets if t > 0.1]  # noqa: E731
    assert len(steady(many)) == len(steady(one))
    assert abs(len(steady(one)) - 0.9 / T.standby_advert_interval) <= 1
    assert all(len(p.adverts) == 30 for t, p in many if t > 0.1)


def test_a_packet_carries_one_advert_per_gateway_in_order_with_one_stamp():
    els = elections(5)
    for gw in reversed(list(els)):
        step(els, gw, Start(), 0.0)
    done = step(els, "gw03", Tick(), T.standby_advert_interval)
    adverts = done.heartbeat.adverts
    assert [a.gateway for a in adverts] == GATEWAYS[:5]
    assert {a.stamp for a in adverts} == {T.standby_advert_interval}
    assert not any(isinstance(a, SendAdvert) for acts in done.actions.values() for a in acts)
    assert set(done.actions) == set(GATEWAYS[:5])  # every one touched: reschedule each


def test_a_move_that_advertises_at_once_takes_every_gateway_along():
    """gw01 becomes ineligible: its advert goes at once, and the others ride along."""
    els = elections(3)
    for gw in els:
        step(els, gw, Start(), 0.0)
    done = step(els, "gw01", HealthChanged(False), 0.013)
    assert done.heartbeat is None or [a.gateway for a in done.heartbeat.adverts] == GATEWAYS[:3]
    done = step(els, "gw00", Tick(), els["gw00"].next_deadline)
    adverts = {a.gateway: a for a in done.heartbeat.adverts}
    assert not adverts["gw01"].eligible and adverts["gw00"].eligible


def test_an_election_not_started_or_stopped_sends_nothing():
    els = elections(3)
    step(els, "gw00", Start(), 0.0)
    assert els["gw01"].handle(AdvertNow(), 0.0) == []
    done = step(els, "gw00", Tick(), els["gw00"].next_deadline)
    assert [a.gateway for a in done.heartbeat.adverts] == ["gw00"]
    step(els, "gw01", Start(), 0.06)
    step(els, "gw01", Shutdown(), 0.07)
    now = max(el.next_deadline or 0 for el in els.values()) + 1.0
    done = step(els, "gw00", Tick(), now)
    assert "gw01" not in [a.gateway for a in done.heartbeat.adverts]


def test_an_unknown_gateway_is_nothing():
    assert step(elections(1), "nope", Tick(), 0.0).heartbeat is None


def test_slower_gateways_ride_only_when_due_before_the_next_packet():
    """One gateway advertises every 20 ms (as an active does), 29 every 50 ms: packets
    every 20 ms, and a 50-ms gateway rides when its advert would fall due before the
    next packet: every second packet (40 ms), never more than 20 ms early."""
    from dataclasses import replace
    els = elections(30)
    fast = replace(T, standby_advert_interval=T.advert_interval)
    els["gw00"] = Election(ElectionConfig(gateway="gw00", node="a", members=("a", "b", "c"),
                                          priority=100, timers=fast))
    packets = [(t, p) for t, p in run(els, 2.0) if t > 0.1]
    assert abs(len(packets) - 1.9 / T.advert_interval) <= 2
    slow = [t for t, p in packets if "gw01" in {a.gateway for a in p.adverts}]
    gaps = {round(b - a, 3) for a, b in zip(slow, slow[1:])}
    assert gaps == {0.04}, gaps
