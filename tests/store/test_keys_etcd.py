"""Heartbeat keys in a real etcd: one first key however many agents start at once, rotation
races, and rotation under heartbeat traffic with a slow watch — 0 genuine heartbeats rejected."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import pytest

from vipmgr.agent.config import AgentConfig
from vipmgr.agent.keys import HeartbeatKeys
from vipmgr.store.client import EtcdSettings, connect
from vipmgr.store.keys import (KeyDoc, KeyDocError, RotationRefused, ensure_keys, keys_key,
                               read_keys, rotate_keys)
from vipmgr.wire.codec import Encoder
from vipmgr.wire.message import Advert, Frame, Role
from vipmgr.wire.receiver import Receiver

pytestmark = pytest.mark.etcd

ADVERT = Advert(node="gw-a", gateway="egress-1", vrid=42, role=Role.ACTIVE, epoch=7,
                priority=200, interval_ms=20, egress_ip="198.51.100.10", healthy=True,
                etcd_reachable=True)


def run(server, body):
    async def main():
        clients = []

        async def client():
            c = await connect(EtcdSettings(endpoints=(server.url,)))
            clients.append(c)
            return c
        try:
            return await body(client)
        finally:
            for c in clients:
                await c.close()
    return asyncio.run(main())


def test_concurrent_first_starts_agree_on_one_key(etcd_server, etcd_prefix):
    async def body(client):
        clients = [await client() for _ in range(6)]
        now = time.time()
        results = await asyncio.gather(*(ensure_keys(c, etcd_prefix, now) for c in clients))
        assert sum(created for _, _, created in results) == 1
        assert len({doc for doc, _, _ in results}) == 1
        stored, _ = await read_keys(clients[0], etcd_prefix)
        assert stored == results[0][0]
    run(etcd_server, body)


def test_rotation_races_overlap_and_bad_documents(etcd_server, etcd_prefix):
    async def body(client):
        c = await client()
        doc, mod, _ = await ensure_keys(c, etcd_prefix, time.time())
        new = await rotate_keys(c, etcd_prefix, time.time(), expect_mod=mod)
        assert new.previous.id == doc.current.id
        with pytest.raises(RotationRefused, match="changed"):        # the loser of a race
            await rotate_keys(c, etcd_prefix, time.time(), expect_mod=mod)
        with pytest.raises(RotationRefused, match="overlap"):        # would drop a live key
            await rotate_keys(c, etcd_prefix, time.time())
        forced = await rotate_keys(c, etcd_prefix, time.time(), force=True)
        assert forced.previous.id == new.current.id
        await c.put(keys_key(etcd_prefix).encode(), b"not json")
        with pytest.raises(KeyDocError, match="not JSON"):
            await rotate_keys(c, etcd_prefix, time.time())
        fresh = await rotate_keys(c, etcd_prefix, time.time(), force=True)
        assert fresh.previous is None and (await read_keys(c, etcd_prefix))[0] == fresh
    run(etcd_server, body)


class SlowWatch:
    """An etcd client whose watch delivers every event ``delay`` late (a slow agent)."""

    def __init__(self, client, delay: float):
        self._client, self._delay = client, delay

    def __getattr__(self, name):
        return getattr(self._client, name)

    async def watch(self, key, **kw):
        stream = await self._client.watch(key, **kw)

        async def events():
            async for event in stream:
                await asyncio.sleep(self._delay)
                yield event
        return events()


@dataclasses.dataclass
class Node:
    name: str
    keys: HeartbeatKeys
    encoder: Encoder
    receiver: Receiver


def node(name: str, prefix: str) -> Node:
    enc, rx = Encoder(), Receiver(name, {"egress-1": 42})
    keys = HeartbeatKeys(name, prefix, enc, rx)
    keys.apply_config(AgentConfig(node=name))
    return Node(name, keys, enc, rx)


async def traffic(nodes: list[Node], seconds: float) -> None:
    """Every node sends an advert to every other every 20 ms, through the codec."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for tx in nodes:
            [pkt] = tx.encoder.encode([dataclasses.replace(ADVERT, node=tx.name)], "192.0.2.1")
            for rx in nodes:
                if rx is not tx:
                    rx.receiver.process(pkt, time.monotonic())
        await asyncio.sleep(0.02)


def rotate_under_traffic(server, prefix, activation_delay: float, watch_delay: float):
    async def body(client):
        nodes = [node(f"gw-{c}", prefix) for c in "abc"]
        for i, n in enumerate(nodes):
            c = await client()
            await n.keys.start(SlowWatch(c, watch_delay) if i == 2 else c)
        first = nodes[0].keys.signing_id
        assert {n.keys.signing_id for n in nodes} == {first}
        followers = [asyncio.create_task(n.keys.follow()) for n in nodes]
        try:
            sending = asyncio.create_task(traffic(nodes, activation_delay + 3.5))
            await asyncio.sleep(0.5)
            doc = await rotate_keys(await client(), prefix, time.time(),
                                    activation_delay=activation_delay, overlap=1.5)
            await sending
        finally:
            for f in followers:
                f.cancel()
            await asyncio.gather(*followers, return_exceptions=True)
        return nodes, first, doc
    return run(server, body)


def test_rotation_under_traffic_rejects_no_genuine_heartbeat(etcd_server, etcd_prefix):
    """gw-c's watch lags 1 s; the new key signs 2 s after the rotation and the old one is
    accepted 1.5 s longer: every heartbeat of the ~5 s is accepted, all switch keys."""
    nodes, first, doc = rotate_under_traffic(etcd_server, etcd_prefix, 2.0, 1.0)
    for n in nodes:
        assert set(n.receiver.counters) == {"accepted"}, (n.name, n.receiver.counters)
        assert n.receiver.counters["accepted"] > 2 * 200, n.name
        assert n.keys.signing_id == doc.current.id != first
        assert n.receiver.keyring.keys == (doc.current.secret,)    # old key retired


def test_without_the_activation_delay_a_slow_watcher_rejects_heartbeats(etcd_server,
                                                                        etcd_prefix):
    """The control: the same rotation with the new key signing at once — the lagging node
    rejects its peers' heartbeats as auth until its watch catches up."""
    nodes, _, _ = rotate_under_traffic(etcd_server, etcd_prefix, 0.0, 1.0)
    assert nodes[2].receiver.counters["auth"] > 20
    assert nodes[0].receiver.counters["auth"] == 0      # gw-c's old key: still in its overlap


def test_an_agent_does_the_scheduled_rotation_exactly_once(etcd_server, etcd_prefix):
    async def body(client):
        c = await client()
        start = await rotate_keys(c, etcd_prefix, time.time(), rotate_every=1.0)
        nodes = [node(f"gw-{x}", etcd_prefix) for x in "ab"]
        for n in nodes:
            n.keys.rotation_jitter = 0.2
            await n.keys.start(await client())
        followers = [asyncio.create_task(n.keys.follow()) for n in nodes]
        await asyncio.sleep(2.5)
        for f in followers:
            f.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        doc, _ = await read_keys(c, etcd_prefix)
        assert doc.previous.id == start.current.id          # one rotation, not two
        assert all(n.keys.doc == doc for n in nodes)
        assert json.loads(doc.to_json())["rotateEvery"] == 1.0
    run(etcd_server, body)
