"""The pure side: plan building from resources, slots, and the nft diff (no root needed)."""

from __future__ import annotations

import ipaddress

from dpworld import GA_PRIMARY, NODES, VIP, VM1, VM2, VMS, gateway, plan_for, policy, resource

from vipmgr.dataplane import nftstate
from vipmgr.dataplane.plan import build_node_plan, collapse_cidrs, egress_ip, gateway_slots


def test_active_vip_node_plan():
    plan = plan_for("ga", {"egw": "ga"})
    (gw,) = plan.gateways
    assert gw.active is not None and gw.active.egress_ip == VIP and gw.active.add_address
    assert gw.active.interface == "eth1"
    assert gw.active.return_routes == ((VM1, "198.51.100.21"),)
    assert [s.sources for s in gw.selections] == [frozenset({VM1})]
    assert plan.steering == () and plan.problems == ()


def test_standby_member_is_gated_not_active():
    (gw,) = plan_for("gb", {"egw": "ga"}).gateways
    assert gw.active is None and gw.selections[0].sources == frozenset({VM1})


def test_primary_mode_uses_the_nodes_address_or_says_why_not():
    gws = [gateway(mode="PrimaryIPFromEgressGatewayNodeInterface")]
    (gw,) = plan_for("ga", {"egw": "ga"}, gateways=gws).gateways
    assert gw.active is not None and gw.active.egress_ip == GA_PRIMARY
    assert not gw.active.add_address
    bare = resource("Node", "ga", {"internalIP": "198.51.100.11"},
                    {"node-role.deckhouse.io/egress": ""})
    _, ip, why = egress_ip(gws[0], bare)
    assert ip is None and "no IPv4 address on eth1" in why
    plan = build_node_plan("ga", gws, [policy()], VMS, [bare, *NODES[1:]], {"egw": "ga"})
    assert plan.gateways[0].active is None and "not serving" in plan.problems[0]


def test_vip_without_interface_goes_where_its_subnet_is():
    gw = resource("EgressGateway", "g", {"nodeSelector": {"a": "b"}, "sourceIP": {
        "mode": "VirtualIPAddress", "virtualIPAddress": {"ip": VIP}}})
    ifs = {"eth0": ipaddress.IPv4Interface("198.51.100.11/24"),
           "eth1": ipaddress.IPv4Interface("192.0.2.11/24")}
    assert egress_ip(gw, NODES[0], ifs)[:2] == ("eth1", VIP)
    assert egress_ip(gw, NODES[0], {})[1] is None


def test_worker_steers_local_selected_vms_only():
    plan = plan_for("w", {"egw": "ga"})
    (sp,) = plan.steering
    assert sp.next_hop == "198.51.100.11"
    assert sp.selections[0].sources == frozenset({VM1})
    assert plan.gateways == ()
    assert plan_for("w", {}).steering[0].next_hop is None, "nobody active: fail closed"


def test_policies_keep_their_own_cidrs():
    pols = [policy("a", cidrs=("203.0.113.0/24",), app="backend"),
            policy("b", cidrs=("198.51.100.0/24",), app="frontend")]
    (sp,) = plan_for("w", {"egw": "ga"}, policies=pols).steering
    assert {(s.policy, s.cidrs) for s in sp.selections} == {
        ("a", ("203.0.113.0/24",)), ("b", ("198.51.100.0/24",))}


def test_collapse_and_slots():
    assert collapse_cidrs(["203.0.113.0/25", "203.0.113.128/25", "203.0.113.7/32"]) \
        == ("203.0.113.0/24",)
    slots = gateway_slots([f"g{i}" for i in range(255)])
    assert sorted(slots.values()) == list(range(1, 256))
    assert gateway_slots(["b", "a"]) == gateway_slots(["a", "b"])


def test_diff_is_empty_against_itself_and_incremental():
    plan = plan_for("ga", {"egw": "ga"})
    want = nftstate.desired(plan)
    observed = nftstate.ObservedNft(
        tables=set(want.tables), sets=dict(want.sets), elements=dict(want.elements),
        counters={k: (0, 0) for k in want.counters},
        chains={k: want.fingerprints(k) for k in want.chains})
    assert nftstate.diff(observed, want).lines == []
    more = plan_for("ga", {"egw": "ga"}, vms=[*VMS, resource(
        "VirtualMachine", "vm3", {"nodeName": "w", "addresses": ["198.18.3.2"]},
        {"app": "backend"}, namespace="default")])
    batch = nftstate.diff(observed, nftstate.desired(more))
    adds = [line for line in batch.lines if line.startswith("add element")]
    assert adds == ["add element inet vipmgr cluster { 198.18.3.2 }",
                    "add element inet vipmgr p-pol-all { 198.18.3.2 }"]
    assert all("chain" not in line for line in batch.lines), "a new VM rewrites no rule"


def test_in_cluster_destinations_are_every_node_and_vm_address():
    plan = plan_for("w", {"egw": "ga"})
    assert plan.in_cluster == {"198.51.100.11", "192.0.2.11", "198.51.100.12", "192.0.2.12",
                               "198.51.100.21", "198.18.0.21", VM1, VM2}
    assert "ip daddr != @cluster" in nftstate.desired(plan).chains[("inet", "vm_steer")][0]
    # a node with nothing to plan gets no set
    assert plan_for("w", {}, policies=[policy(app="nobody")]).in_cluster == frozenset()
