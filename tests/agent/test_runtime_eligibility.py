"""Eligibility: the pure per-gateway decision (health/eligibility.evaluate) and the runtime
that feeds it inputs and tells each election what changed (fakes, no root)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry

from vipmgr.agent.config import load_config
from vipmgr.agent.metrics import AgentMetrics
from vipmgr.agent.runtime import Agent
from vipmgr.health.eligibility import evaluate, evaluate_eligibility, member_reasons

# --- the decision ----------------------------------------------------------------------


def test_healthy_and_serving_allowed():
    e = evaluate(health_ready=True, cordoned=False)
    assert e.inputs == (True, False) and e.eligible and e.node_eligible
    assert e.release_reason == "" and e.status_reasons == [] and e.summary() == "eligible"


def test_a_gateway_problem_makes_it_unhealthy_with_that_reason():
    e = evaluate(health_ready=True, cordoned=False,
                 datapath_problems=["interface eth9 missing"])
    assert e.inputs == (False, False) and not e.eligible
    assert not e.datapath_ready and e.ready
    assert e.release_reason == "interface eth9 missing"
    assert e.status_reasons == ["interface eth9 missing"]
    assert e.reasons["datapath_ready"] == "interface eth9 missing"


def test_probes_first_then_datapath_then_cordon():
    e = evaluate(health_ready=False, health_reasons=["probe ping: down"], cordoned=True,
                 datapath_problems=["nft missing"])
    assert e.inputs == (False, True)
    assert e.release_reason == "probe ping: down"
    assert e.status_reasons == ["probe ping: down", "nft missing", "cordoned"]


def test_cordoned_but_healthy_shows_only_the_cordon():
    e = evaluate(health_ready=True, health_reasons=[], cordoned=True)
    assert e.inputs == (True, True) and not e.eligible
    assert e.release_reason == "" and e.status_reasons == ["cordoned"]


def test_not_ready_without_a_reason_releases_with_none():
    e = evaluate(health_ready=False, cordoned=False)
    assert e.inputs == (False, False) and e.release_reason == ""
    assert e.reasons["ready"] == "health probes not passing"


def test_node_view_equals_the_old_node_evaluation():
    new = evaluate(health_ready=False, health_reasons=["p down"], cordoned=True,
                   datapath_problems=["x", "y"])
    old = evaluate_eligibility(health_ready=False, health_reasons=["p down"], cordoned=True,
                               datapath_ready=False, datapath_reasons=["x", "y"])
    assert (new.ready, new.not_cordoned, new.datapath_ready, new.reasons) == \
        (old.ready, old.not_cordoned, old.datapath_ready, old.reasons)
    assert member_reasons(True, False, ["ignored while healthy"]) == []


# --- the runtime applies it ------------------------------------------------------------


class FakeMonitor:
    def __init__(self):
        self.ready, self.reasons = True, []

    def failing_reasons(self):
        return list(self.reasons)

    def statuses(self):
        return []


@dataclass
class FakeMember:
    gateway: str
    calls: list = field(default_factory=list)

    def set_eligible(self, healthy, reason=""):
        self.calls.append(("eligible", healthy, reason))

    def set_cordoned(self, cordoned):
        self.calls.append(("cordoned", cordoned))


@pytest.fixture
def agent():
    a = Agent(load_config(None, node="gw-a", etcd="http://192.0.2.9:2379"),
              AgentMetrics("gw-a", CollectorRegistry()))
    a.monitor = FakeMonitor()
    a.problems = {None: []}            # gateway (None: node-wide) -> datapath problems
    a.cordon = False
    a._datapath_problems = lambda gw=None: list(a.problems[None]) + (
        list(a.problems.get(gw, [])) if gw is not None else [])
    a._last_cordoned = lambda: a.cordon
    yield a
    a.inventory.close()


def test_each_election_hears_only_what_changed(agent):
    one, two = FakeMember("egw-1"), FakeMember("egw-2")
    agent.members = {"egw-1": one, "egw-2": two}
    agent._update_eligibility()                        # first time: both told everything
    assert one.calls == [("eligible", True, ""), ("cordoned", False)]
    assert agent._status_dirty.is_set()
    agent._status_dirty.clear()
    one.calls.clear(), two.calls.clear()

    agent._update_eligibility()                        # nothing changed: nothing said
    assert one.calls == two.calls == [] and not agent._status_dirty.is_set()

    agent.problems["egw-2"] = ["eth9 has no carrier"]  # one gateway's own problem
    agent._update_eligibility()
    assert one.calls == [] and two.calls == [("eligible", False, "eth9 has no carrier")]
    assert agent._last_eligibility["egw-2"].inputs == (False, False)

    agent.cordon = True                                # node-wide: both hear the cordon only
    two.calls.clear()
    agent._update_eligibility()
    assert one.calls == [("cordoned", True)] and two.calls == [("cordoned", True)]


def test_probe_failure_releases_with_the_probe_reason(agent):
    member = FakeMember("egw-1")
    agent.members = {"egw-1": member}
    agent._update_eligibility()
    member.calls.clear()
    agent.monitor.ready, agent.monitor.reasons = False, ["probe upstream: timeout"]
    agent.problems[None] = ["nft table missing"]
    agent._update_eligibility()
    assert member.calls == [("eligible", False, "probe upstream: timeout")]


# --- and the status shows what the election was told -----------------------------------


class FakeLease:
    id = 7


class FakeClient:
    def __init__(self):
        self.put_values: dict[bytes, bytes] = {}

    async def put(self, key, value, lease=None):
        self.put_values[key] = value

    async def delete(self, key):
        self.put_values.pop(key, None)


@dataclass
class StatusMember(FakeMember):
    seen: list = field(default_factory=list)

    class timers:
        standby_advert_interval = 0.1

    def status(self, eligible, reasons, heard):
        self.seen.append((eligible, reasons))

        class Doc:
            def to_dict(self):
                return {}
        return Doc()


def test_member_status_reasons_follow_the_evaluation(agent, monkeypatch):
    monkeypatch.setattr("vipmgr.agent.runtime._version", lambda: "test")
    agent.client = FakeClient()
    member = StatusMember("egw-1")
    agent.members = {"egw-1": member}
    agent.problems["egw-1"] = ["vip not on eth1"]
    agent.cordon = True
    agent._update_eligibility()
    asyncio.run(agent._publish(FakeLease()))
    assert member.seen == [(False, ["vip not on eth1", "cordoned"])]
    # the node is eligible for placement only by its own problems (none): not cordoned
    assert agent.client.put_values.get(agent.layout.placement_key("gw-a").encode()) is None
    agent.cordon = False
    agent.problems["egw-1"] = []
    agent._update_eligibility()
    asyncio.run(agent._publish(FakeLease()))
    assert member.seen[-1] == (True, [])
    assert agent.client.put_values[agent.layout.placement_key("gw-a").encode()]
