"""Rendezvous placement spreads gateways; explicit priorities override it."""

from vipmgr.core.placement import node_priority, ranked_nodes, rendezvous_priority

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
