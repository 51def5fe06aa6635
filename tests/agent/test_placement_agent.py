"""The agent's placement: its own record, the others' records, priorities and the queue
of moves into this node. Plain Python, no etcd."""

from __future__ import annotations

import json

from vipmgr.agent.placement import MOVE_SPACING, NodePlacement
from vipmgr.core.placement import PRIORITY_MAX, SECOND_PRIORITY
from vipmgr.resources.errors import Problems
from vipmgr.resources.models import EgressGateway, parse_manifest

NODES = ("a", "b", "c")


def gw(name: str, **failover) -> EgressGateway:
    problems = Problems()
    parsed = parse_manifest({
        "apiVersion": "network.deckhouse.io/v1alpha1", "kind": "EgressGateway",
        "metadata": {"name": name},
        "spec": {"nodeSelector": {"egress": ""}, "failover": failover, "sourceIP": {
            "mode": "VirtualIPAddress", "virtualIPAddress": {"ip": "192.0.2.100"}}}}, problems)
    assert parsed is not None and not problems.items, problems.items
    return parsed


def prios(gateways: dict[str, EgressGateway]) -> dict[str, dict[str, int]]:
    return {g: gw.failover.priorities for g, gw in gateways.items()}


def placed(node: str, present=NODES, **gws) -> tuple[NodePlacement, dict[str, EgressGateway]]:
    gateways = {f"g{i}": gw(f"g{i}") for i in range(6)}
    p = NodePlacement(node, hold_down=10.0)
    p.records({n: b"{}" for n in present}, 0.0)
    p.update({g: NODES for g in gateways}, prios(gateways), 0.0)
    return p, gateways


def test_every_node_agrees_and_each_gets_its_share():
    views = {n: placed(n) for n in NODES}
    assert len({json.dumps(p.choices, sort_keys=True) for p, _ in views.values()}) == 1
    assert [p.share() for p, _ in views.values()] == [2, 2, 2]
    p, gateways = views["a"]
    mine = [g for g, c in p.choices.items() if c[0] == "a"]
    assert {p.member(g, {}, {}).priority for g in mine} == {PRIORITY_MAX}
    seconds = [g for g, c in p.choices.items() if c[1] == "a"]
    assert {p.member(g, {}, {}).priority for g in seconds} == {SECOND_PRIORITY}


def test_moves_into_this_node_queue_in_name_order():
    p, gateways = placed("a")
    mine = sorted(g for g, c in p.choices.items() if c[0] == "a")
    holders = {g: "b" for g in gateways}
    assert [p.member(g, {}, holders).move_delay for g in mine] == \
        [i * MOVE_SPACING for i in range(len(mine))]
    holders[mine[0]] = "a"  # the first one arrived: the next one is at the head now
    assert p.member(mine[1], {}, holders).move_delay == 0.0


def test_a_node_without_a_record_is_nobodys_choice_after_the_hold_down():
    p, gateways = placed("a")
    p.records({"a": b"{}", "b": b"{}"}, 1.0)                  # c's record went at 1
    assert not p.update({g: NODES for g in gateways}, prios(gateways), 5.0)
    assert p.update({g: NODES for g in gateways}, prios(gateways), 11.0)
    assert p.share() == 3 and all(c[0] != "c" for c in p.choices.values())


def test_own_record_follows_eligibility_and_garbage_records_are_skipped():
    p = NodePlacement("a", hold_down=10.0)
    assert p.record() is None
    p.set_eligible(True, 100.0)
    assert json.loads(p.record()) == {"since": 100.0, "holdDown": 10.0}
    p.set_eligible(True, 200.0)
    assert json.loads(p.record())["since"] == 100.0
    p.set_eligible(False, 300.0)
    assert p.record() is None
    p.records({"b": b"not json", "c": b"{}"}, 0.0)
    assert p.present_set.present(0.0) == {"c"}


def test_explicit_priorities_keep_their_meaning():
    p = NodePlacement("a", hold_down=10.0)
    gateways = {"g": gw("g", priorities={"c": 250, "a": 10})}
    p.records({n: b"{}" for n in NODES}, 0.0)
    p.update({"g": NODES}, prios(gateways), 0.0)
    assert p.member("g", gateways["g"].failover.priorities, {}).priority == 10
    assert p.choices["g"][0] == "c"


def test_members_not_yet_heard_from_count_for_the_hold_down_after_start():
    # agents started together publish their records a moment apart: the first one up
    # must not put every gateway on itself
    gateways = {f"g{i}": gw(f"g{i}") for i in range(6)}
    members = {g: NODES for g in gateways}
    p = NodePlacement("a", hold_down=10.0)
    p.set_eligible(True, 0.0)
    p.records({"a": b"{}"}, 0.0)
    p.update(members, prios(gateways), 0.0)
    assert p.share() == 2, "b and c count while their records may still be on the way"
    assert p.next_change() == 10.0
    assert p.update(members, prios(gateways), 10.0) and p.share() == 6, "never came: not counted"
    assert not p.update(members, prios(gateways), 20.0) and p.share() == 6, \
        "and not expected again"
    p.records({"a": b"{}", "b": b"{}"}, 30.0)
    assert p.update(members, prios(gateways), 30.0) and p.share() == 3, "a late node counts at once"


def test_explicit_priorities_opt_out_of_rebalance():
    assert gw("g").failover.rebalances
    assert not gw("g", priorities={"c": 250}).failover.rebalances
    assert not gw("g", rebalance=False).failover.rebalances
