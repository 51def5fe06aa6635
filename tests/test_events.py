"""The agent's history writer: failover reasons that name the cause, events in etcd."""

from __future__ import annotations

import asyncio

import pytest

from vipmgr.agent.events import REASONS, GatewayEvents, classify
from vipmgr.core.messages import RoleChanged
from vipmgr.store import events as history
from vipmgr.store.client import EtcdSettings, connect


@pytest.mark.parametrize("change, reason", [
    (RoleChanged("standby", "challenging", "suspected", "gw-a silent for 80ms"), "silence"),
    (RoleChanged("active", "releasing", "release", "cordoned"), "cordon"),
    (RoleChanged("active", "releasing", "release", "health check failed"), "health"),
    (RoleChanged("active", "releasing", "release", "switchover"), "switchover"),
    (RoleChanged("active", "releasing", "release", "shutdown"), "shutdown"),
    (RoleChanged("active", "releasing", "release", "preempted"), "preempt"),
    (RoleChanged("active", "releasing", "release", "isolated: heard no peer for 90ms"),
     "link-down"),
    (RoleChanged("active", "standby", "lost-authority", "own lease expired"), "etcd"),
    (RoleChanged("active", "releasing", "release", "etcd unreachable"), "etcd"),
    (RoleChanged("active", "fenced", "etcd-cut-handover", "etcd unreachable for 900 ms"), "etcd"),
    (RoleChanged("fenced", "active", "confirmed", "etcd confirmed the authority"), "restart"),
    (RoleChanged("active", "fenced", "evidence-lapsed", "no proof from peers or etcd"),
     "superseded"),
    (RoleChanged("standby", "vrrp-active", "vrrp-takeover", "no active heard"), "etcd"),
    (RoleChanged("standby", "fenced", "adopt-own-key", "epoch 7 is bound to our lease"), "restart"),
    (RoleChanged("standby", "acquiring", "authority-free", "term 0 vacated=False"), "released"),
])
def test_classify_names_the_cause(change, reason):
    assert classify(change) == reason and reason in REASONS


class FakeMetrics:
    def __init__(self):
        self.failed = 0
        self.failovers: list[tuple[str, str]] = []

    def history_write_failed(self, _gateway):
        self.failed += 1

    def failover_completed(self, gateway, reason):
        self.failovers.append((gateway, reason))


@pytest.mark.etcd
def test_a_takeover_after_a_release_carries_the_holders_reason(etcd_server, etcd_prefix):
    """gw-a releases because it was cordoned and writes so; gw-b, taking over from the
    vacated authority, counts the failover as ``cordon``, with gw-a as the previous node."""
    async def go():
        client = await connect(EtcdSettings.from_options(etcd_server.url, etcd_prefix))
        try:
            a = GatewayEvents(client, etcd_prefix, "egw", "gw-a", FakeMetrics())
            b = GatewayEvents(client, etcd_prefix, "egw", "gw-b", FakeMetrics())
            assert a.role_changed(RoleChanged("active", "releasing", "release", "cordoned"),
                                  9, "gw-a") == "cordon"
            await a.close()
            b.role_changed(RoleChanged("standby", "acquiring", "authority-free",
                                       "term 9 vacated=True"), 0, "gw-a")
            await asyncio.sleep(0.2)  # one etcd round trip: the acquire transaction
            reason = b.role_changed(RoleChanged("acquiring", "active", "acquired", "epoch 12"),
                                    12, None)
            await b.close()
            return reason, await history.history(client, etcd_prefix, "egw")
        finally:
            await client.close()

    reason, events = asyncio.run(go())
    assert reason == "cordon"
    failover = [e for e in events if e.kind == "failover"]
    assert len(failover) == 1 and failover[0].previous == "gw-a" and failover[0].node == "gw-b"
    assert failover[0].reason == "cordon" and failover[0].duration_ms is not None
    assert [e.kind for e in events] == ["role", "role", "role", "failover"]


@pytest.mark.etcd
def test_a_takeover_after_silence_and_the_first_acquisition(etcd_server, etcd_prefix):
    async def go():
        client = await connect(EtcdSettings.from_options(etcd_server.url, etcd_prefix))
        try:
            b = GatewayEvents(client, etcd_prefix, "egw", "gw-b")
            b.role_changed(RoleChanged("standby", "challenging", "suspected", ""), 0, "gw-a")
            b.role_changed(RoleChanged("challenging", "acquiring", "window-expired", ""), 0, "gw-a")
            crash = b.role_changed(RoleChanged("acquiring", "active", "acquired", ""), 3, None)
            c = GatewayEvents(client, etcd_prefix, "egw2", "gw-c")
            c.role_changed(RoleChanged("standby", "acquiring", "authority-free", "term 0"), 0, None)
            first = c.role_changed(RoleChanged("acquiring", "active", "acquired", ""), 4, None)
            await b.close()
            await c.close()
            return crash, first
        finally:
            await client.close()

    assert asyncio.run(go()) == ("silence", "initial")


def test_an_unreachable_etcd_is_logged_and_counted_never_raised():
    class Down:
        async def put(self, *_a, **_k):
            raise ConnectionError("etcd down")

        async def get_prefix(self, *_a, **_k):
            raise ConnectionError("etcd down")

    async def go():
        metrics = FakeMetrics()
        events = GatewayEvents(Down(), "/x", "egw", "gw-a", metrics)
        events.role_changed(RoleChanged("standby", "challenging", "suspected", ""), 0, "gw-b")
        await events.close()
        return metrics.failed

    assert asyncio.run(go()) == 1


def test_a_holder_confirmed_again_is_no_failover():
    """active -> fenced -> active (evidence lapsed, then confirmed) moves nothing: the history
    gets the role changes, not a failover."""
    written = []

    class Recorder:
        async def put(self, key, value, **_k):
            written.append(key.decode())

        async def get_prefix(self, *_a, **_k):
            return []

    async def go():
        events = GatewayEvents(Recorder(), "/x", "egw", "gw-a")
        events.role_changed(RoleChanged("active", "fenced", "evidence-lapsed", ""), 5, "gw-a")
        events.role_changed(RoleChanged("fenced", "active", "confirmed", ""), 5, "gw-a")
        await events.close()

    asyncio.run(go())
    assert len(written) == 2 and not [k for k in written if k.endswith("-failover")]


@pytest.mark.etcd
def test_a_takeover_of_a_vacated_authority_names_the_last_holder(etcd_server, etcd_prefix):
    """Seen in the lab: gw-c suspects gw-b (holder named), is superseded, then acquires the
    vacated authority (no holder any more): the failover is from gw-b, for gw-b's reason."""
    async def go():
        client = await connect(EtcdSettings.from_options(etcd_server.url, etcd_prefix))
        try:
            b = GatewayEvents(client, etcd_prefix, "egw", "gw-b")
            c = GatewayEvents(client, etcd_prefix, "egw", "gw-c")
            c.role_changed(RoleChanged("standby", "challenging", "suspected", "holder gw-b"),
                           0, "gw-b")
            b.role_changed(RoleChanged("active", "releasing", "release", "cordoned"), 9, "gw-b")
            await b.close()
            c.role_changed(RoleChanged("challenging", "standby", "superseded", ""), 0, None)
            c.role_changed(RoleChanged("standby", "acquiring", "authority-free", "vacated"), 0,
                           None)
            await asyncio.sleep(0.2)
            reason = c.role_changed(RoleChanged("acquiring", "active", "acquired", ""), 12, None)
            await c.close()
            failover = [e for e in await history.history(client, etcd_prefix, "egw")
                        if e.kind == "failover"]
            return reason, failover
        finally:
            await client.close()

    reason, failover = asyncio.run(go())
    assert reason == "cordon" and failover[-1].previous == "gw-b"


def test_the_history_and_the_count_wait_for_a_late_holder_note():
    """The new active serves before the holder's note is read: the caller learns 'released'
    now; the history and the failover count get the holder's reason once the note arrives
    (counted once, never under 'released')."""
    import json as _json
    import time as _time
    from types import SimpleNamespace

    written = {}
    note = history.GatewayEvent("egw", "gw-a", "role", _time.time(), "switchover", "active",
                                "releasing", "switchover", 9)

    class SlowReads:
        async def put(self, key, value, **_k):
            written[key.decode()] = _json.loads(value)

        async def get_prefix(self, *_a, keys_only=False, **_k):
            if keys_only:
                return []
            await asyncio.sleep(0.3)
            return [SimpleNamespace(value=_json.dumps(note.to_dict()).encode())]

    metrics = FakeMetrics()

    async def go():
        b = GatewayEvents(SlowReads(), "/x", "egw", "gw-b", metrics)
        b.role_changed(RoleChanged("standby", "acquiring", "authority-free", "vacated"), 0,
                       "gw-a")
        now = b.role_changed(RoleChanged("acquiring", "active", "acquired", ""), 10, None)
        counted_at_once = list(metrics.failovers)
        await asyncio.sleep(0.5)
        await b.close()
        return now, counted_at_once

    now, counted_at_once = asyncio.run(go())
    assert now == "released" and counted_at_once == []
    (failover,) = [v for k, v in written.items() if k.endswith("-failover")]
    assert failover["reason"] == "switchover" and failover["previous"] == "gw-a"
    assert metrics.failovers == [("egw", "switchover")]


def test_a_failover_whose_reason_is_known_is_counted_at_once():
    class Quiet:
        async def put(self, *_a, **_k):
            pass

        async def get_prefix(self, *_a, **_k):
            return []

    metrics = FakeMetrics()

    async def go():
        b = GatewayEvents(Quiet(), "/x", "egw", "gw-b", metrics)
        b.role_changed(RoleChanged("standby", "challenging", "suspected", "no adverts"), 0, None)
        b.role_changed(RoleChanged("challenging", "acquiring", "window-expired", ""), 0, None)
        b.role_changed(RoleChanged("acquiring", "active", "acquired", ""), 10, None)
        counted = list(metrics.failovers)
        await b.close()
        return counted

    assert asyncio.run(go()) == [("egw", "silence")]


def test_a_standby_that_never_moved_still_names_the_holder_that_let_go(etcd_server, etcd_prefix):
    """Seen in the lab (switchover): gw-c was standby before gw-a acquired and never changed
    role while gw-a served; it learns the holder from the authority updates alone, so its
    takeover of the vacated authority is from gw-a, for gw-a's reason (not 'initial')."""
    async def go():
        client = await connect(EtcdSettings.from_options(etcd_server.url, etcd_prefix))
        try:
            a = GatewayEvents(client, etcd_prefix, "egw", "gw-a")
            c = GatewayEvents(client, etcd_prefix, "egw", "gw-c")
            c.saw_holder("gw-a")  # an authority update while gw-a held
            a.role_changed(RoleChanged("active", "releasing", "release", "switchover"), 9,
                           "gw-a")
            await a.close()
            c.role_changed(RoleChanged("standby", "acquiring", "authority-free", "vacated"), 0,
                           None)
            await asyncio.sleep(0.2)
            reason = c.role_changed(RoleChanged("acquiring", "active", "acquired", ""), 12, None)
            await c.close()
            failover = [e for e in await history.history(client, etcd_prefix, "egw")
                        if e.kind == "failover"]
            return reason, failover, c.last_holder
        finally:
            await client.close()

    reason, failover, last = asyncio.run(go())
    assert reason == "switchover" and failover[-1].previous == "gw-a" and last == "gw-a"
