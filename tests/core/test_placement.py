"""Rendezvous placement spreads gateways; explicit priorities override it."""

from collections import Counter

import pytest

from vipmgr.core.placement import (
    PRIORITY_MAX, balanced_tops, node_priority, ranked_nodes,
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


def test_balanced_tops_are_the_same_on_every_node():
    """Each agent computes it from the store: the order it reads gateways in is moot."""
    members = {f"gw-{g}": NODES[: 2 + g % 3] for g in range(9)}
    assert balanced_tops(members) == balanced_tops(dict(reversed(list(members.items()))))


# --- placement that holds: choices over the present nodes, second choices, hold-down ------

from hypothesis import given, settings, strategies as st  # noqa: E402

from vipmgr.core.placement import (  # noqa: E402
    SECOND_PRIORITY, PresentSet, choices, placement_priority,
)


@settings(max_examples=200, deadline=None)
@given(gateways=st.integers(1, 14), nodes=st.integers(2, 5), gone=st.integers(0, 3),
       salt=st.text("abc", max_size=3))
def test_first_choices_never_load_a_present_node_above_its_share(gateways, nodes, gone, salt):
    names = [f"n{i}" for i in range(nodes)]
    members = {f"gw{salt}{g}": names for g in range(gateways)}
    present = names[: max(1, nodes - gone)]
    load = Counter(c[0] for c in choices(members, present=present).values())
    assert set(load) <= set(present)
    assert max(load.values()) <= -(-gateways // len(present))


@settings(max_examples=200, deadline=None)
@given(gateways=st.integers(1, 14), nodes=st.integers(3, 5), salt=st.text("xyz", max_size=3))
def test_a_node_that_goes_moves_only_its_gateways_to_their_second_choices(gateways, nodes, salt):
    """The crash fails over to the second choice, which is where placement puts the
    gateway once the node stops counting: nothing else moves, nothing moves again."""
    names = [f"n{i}" for i in range(nodes)]
    members = {f"gw{salt}{g}": names for g in range(gateways)}
    before = choices(members)
    for gone in names:
        after = choices(members, present=[n for n in names if n != gone])
        for gw, (first, *rest) in before.items():
            if first == gone:
                assert after[gw][0] == rest[0]
            else:
                assert after[gw][0] == first


def test_priorities_rank_first_then_second_then_rendezvous():
    members = {f"gw-{g}": NODES for g in range(6)}
    picked = choices(members)
    for gw, (first, second) in picked.items():
        prios = {n: placement_priority(gw, n, picked) for n in NODES}
        assert prios[first] == PRIORITY_MAX and prios[second] == SECOND_PRIORITY
        assert all(p < SECOND_PRIORITY for n, p in prios.items() if n not in (first, second))
        assert ranked_nodes(gw, NODES, prios)[:2] == [first, second]


def test_explicit_priorities_are_kept_by_placement():
    natural = ranked_nodes("gw-a", NODES)
    pinned = {"gw-a": {natural[-1]: 200}}
    picked = choices({"gw-a": NODES, "gw-b": NODES}, pinned)
    assert picked["gw-a"][0] == natural[-1]
    assert placement_priority("gw-a", natural[0], picked, pinned["gw-a"]) == \
        node_priority("gw-a", natural[0], pinned["gw-a"])


def test_a_gone_node_counts_until_the_hold_down_is_over_and_a_returning_one_at_once():
    ps = PresentSet(hold_down=10.0)
    ps.update({"a", "b", "c"}, 0.0)
    ps.update({"b", "c"}, 5.0)                       # a goes at 5
    assert ps.present(14.9) == {"a", "b", "c"} and ps.next_change() == 15.0
    assert ps.present(15.0) == {"b", "c"} and ps.next_change() is None
    ps.update({"a", "b", "c"}, 20.0)                 # back: counts at once
    assert ps.present(20.0) == {"a", "b", "c"}


def test_a_flap_shorter_than_the_hold_down_changes_nothing():
    ps = PresentSet(hold_down=10.0)
    ps.update({"a", "b"}, 0.0)
    ps.update({"b"}, 1.0)
    ps.update({"a", "b"}, 3.0)
    assert ps.present(30.0) == {"a", "b"} and ps.next_change() is None
