"""Rendezvous placement spreads gateways; explicit priorities override it."""

from collections import Counter

import pytest

from vipmgr.core.placement import (
    PRIORITY_MAX, balanced_priority, balanced_tops, node_priority, ranked_nodes,
    rendezvous_priority,
)

NODES = [f"node-{i}" for i in range(4)]


def test_stable_and_in_vrrp_range():
    for gw in ("a", "b"):
        for n in NODES:
            p = rendezvous_priority(gw, n)
            assert 1 <= p <= 254 and p == rendezvous_priority(gw, n)


def test_gateways_sharing_nodes_spread_out():
    firsts = {ranked_nodes(f"gw-{i}", NODES)[0] for i in range(40)}
    assert len(firsts) == len(NODES)


def test_explicit_priority_overrides():
    gw = "gw-x"
    natural = ranked_nodes(gw, NODES)
    pinned = {natural[-1]: 254}
    assert ranked_nodes(gw, NODES, pinned)[0] == natural[-1]
    assert node_priority(gw, natural[-1], pinned) == 254


def test_removing_a_node_moves_only_its_gateways():
    before = {f"gw-{i}": ranked_nodes(f"gw-{i}", NODES)[0] for i in range(60)}
    after = {gw: ranked_nodes(gw, NODES[:-1])[0] for gw in before}
    moved = [gw for gw in before if before[gw] != after[gw]]
    assert all(before[gw] == NODES[-1] for gw in moved)


@pytest.mark.parametrize("gateways,nodes", [(2, 3), (4, 3), (7, 4), (3, 5)])
def test_balanced_first_choices_spread_evenly(gateways, nodes):
    names = NODES[:nodes] if nodes <= len(NODES) else [f"node-{i}" for i in range(nodes)]
    for trial in range(30):
        members = {f"gw-{trial}-{g}": names for g in range(gateways)}
        load = Counter(balanced_tops(members).values())
        assert max(load.values()) == -(-gateways // nodes)


def test_plain_rendezvous_does_crowd_so_balancing_has_work_to_do():
    crowded = sum(len({ranked_nodes(f"gw-{t}-{g}", NODES[:3])[0] for g in range(2)}) < 2
                  for t in range(300))
    assert 60 < crowded < 140  # about one time in three


def test_balanced_priorities_put_the_first_choice_on_top_and_keep_the_rest():
    members = {f"gw-{g}": NODES for g in range(4)}
    tops = balanced_tops(members)
    for gw in members:
        prios = {n: balanced_priority(gw, n, tops) for n in NODES}
        assert prios[tops[gw]] == PRIORITY_MAX
        assert ranked_nodes(gw, NODES, prios)[0] == tops[gw]
        rest = [n for n in NODES if n != tops[gw]]
        assert ranked_nodes(gw, rest, prios) == ranked_nodes(gw, rest)


def test_balanced_keeps_explicit_priorities_and_counts_them():
    natural = ranked_nodes("gw-a", NODES)
    pinned = {"gw-a": {natural[-1]: 254}}
    members = {"gw-a": NODES, "gw-b": NODES}
    tops = balanced_tops(members, pinned)
    assert tops["gw-a"] == natural[-1] and tops["gw-b"] != natural[-1]
    assert balanced_priority("gw-a", natural[0], tops, pinned["gw-a"]) == \
        node_priority("gw-a", natural[0], pinned["gw-a"])


def test_balanced_tops_are_the_same_on_every_node():
    """Each agent computes it from the store: the order it reads gateways in is moot."""
    members = {f"gw-{g}": NODES[: 2 + g % 3] for g in range(9)}
    assert balanced_tops(members) == balanced_tops(dict(reversed(list(members.items()))))
