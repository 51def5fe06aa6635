"""The runtime's store-event handlers on plain asyncio with fakes (no etcd, no root): the
decoding lives in vipmgr.store, the runtime hands the result on."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry

from vipmgr.agent.config import load_config
from vipmgr.agent.metrics import AgentMetrics
from vipmgr.agent.runtime import Agent
from vipmgr.store.placement import encode_placement_record
from vipmgr.store.switchover import encode_switchover

PREFIX = "/vipmgr"


@dataclass
class KV:
    key: bytes
    value: bytes
    create_revision: int = 1
    mod_revision: int = 1


class FakeClient:
    def __init__(self, kvs: dict[str, bytes] | None = None):
        self.kvs = dict(kvs or {})
        self.deleted: list[bytes] = []

    async def get_prefix(self, prefix: bytes):
        return [KV(k.encode(), v, 100 + i) for i, (k, v) in enumerate(sorted(self.kvs.items()))
                if k.encode().startswith(prefix)]

    async def delete(self, key: bytes):
        self.deleted.append(key)
        self.kvs.pop(key.decode(), None)


class FakeDatapath:
    def __init__(self):
        self.holders: list[dict[str, str]] = []

    def set_holders(self, holders):
        self.holders.append(dict(holders))


@dataclass
class FakeMember:
    serving: bool = True
    switchovers: list = field(default_factory=list)

    def switchover(self, target):
        self.switchovers.append(target)


@pytest.fixture
def agent():
    a = Agent(load_config(None, node="gw-a", etcd="http://192.0.2.9:2379"),
              AgentMetrics("gw-a", CollectorRegistry()))
    a.datapath = FakeDatapath()
    yield a
    a.inventory.close()


def test_holders_changed_hands_the_decoded_holders_to_the_datapath(agent):
    agent.client = FakeClient({
        f"{PREFIX}/authority/egw-1": json.dumps({"node": "gw-b", "lease": 9}).encode(),
        f"{PREFIX}/authority/egw-2": json.dumps({"node": "gw-a", "lease": 3}).encode(),
        f"{PREFIX}/term/egw-1": b'{"node": "gw-b", "state": "held"}'})
    asyncio.run(agent._holders_changed())
    assert agent.datapath.holders == [{"egw-1": "gw-b", "egw-2": "gw-a"}]
    assert agent.holders == {"egw-1": "gw-b", "egw-2": "gw-a"}


def test_a_corrupt_authority_value_is_skipped_and_said_once(agent, caplog):
    agent.client = FakeClient({f"{PREFIX}/authority/egw-1": b'{"node": "gw-b"}',
                               f"{PREFIX}/authority/egw-2": b"not json"})
    with caplog.at_level(logging.ERROR, "vipmgr.agent"):
        asyncio.run(agent._holders_changed())
        asyncio.run(agent._holders_changed())
    assert agent.datapath.holders == [{"egw-1": "gw-b"}] * 2
    said = [r.getMessage() for r in caplog.records if "authority/egw-2" in r.getMessage()]
    assert len(said) == 1 and "is not JSON" in said[0], said


def test_switchover_requests_go_to_the_serving_members_only(agent):
    served, standby = FakeMember(serving=True), FakeMember(serving=False)
    agent.members = {"egw-1": served, "egw-2": standby}
    agent.client = FakeClient({
        f"{PREFIX}/switchover/egw-1": encode_switchover("gw-c", 1.0),
        f"{PREFIX}/switchover/egw-2": encode_switchover(None, 1.0),
        f"{PREFIX}/switchover/egw-3": encode_switchover(None, 1.0)})   # not a member here
    asyncio.run(agent._switchover_requested())
    assert served.switchovers == ["gw-c"] and standby.switchovers == []
    assert agent.client.deleted == [f"{PREFIX}/switchover/egw-1".encode()]


def test_best_standby_request_decodes_to_none(agent):
    member = FakeMember()
    agent.members = {"egw-1": member}
    agent.client = FakeClient({f"{PREFIX}/switchover/egw-1": encode_switchover(None, 5.0)})
    asyncio.run(agent._switchover_requested())
    assert member.switchovers == [None]


def test_a_corrupt_switchover_request_is_ignored_not_fatal(agent, caplog):
    member = FakeMember()
    agent.members = {"egw-1": member, "egw-2": FakeMember()}
    agent.client = FakeClient({f"{PREFIX}/switchover/egw-1": b'{"to": 5}',
                               f"{PREFIX}/switchover/egw-2": b'{"to": "gw-b"}'})
    with caplog.at_level(logging.ERROR, "vipmgr.agent"):
        asyncio.run(agent._switchover_requested())
    assert member.switchovers == [] and agent.members["egw-2"].switchovers == ["gw-b"]
    assert agent.client.deleted == [f"{PREFIX}/switchover/egw-2".encode()]
    assert any("switchover/egw-1" in r.getMessage() and '"to" must be' in r.getMessage()
               for r in caplog.records)


def test_placement_records_are_read_by_node(agent):
    agent.client = FakeClient({f"{PREFIX}/status/placement/gw-a": encode_placement_record(1, 2),
                               f"{PREFIX}/status/placement/gw-b": b"{}",
                               f"{PREFIX}/status/placement/gw-c": b"not json",
                               f"{PREFIX}/status/nodes/gw-d": b"{}"})
    asyncio.run(agent._placement_read())
    assert agent.placement.present_set.present(0.0) == {"gw-a", "gw-b"}
