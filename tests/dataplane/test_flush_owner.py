"""A leave flush names the gateway it was created for, never one parsed back out of a set
name (a long gateway name is hashed into its set names: vipmgr.dataplane.layout)."""

from __future__ import annotations

import pytest
from dpworld import VIP, gateway, plan_for, policy

from vipmgr.dataplane import conntrack, nftstate
from vipmgr.dataplane import layout as L
from vipmgr.dataplane.plan import NodePlan
from vipmgr.dataplane.reconcile import Dataplane, _conntrack_flushes

LONG = ".".join(["a" * 62] * 4)  # 251 characters: a valid name whose set names are hashed


def _left(gateway_set: str, comment: str | None = None) -> nftstate.ObservedNft:
    """What a node that served a gateway (and then forgot it) holds."""
    key = ("inet", gateway_set)
    return nftstate.ObservedNft(tables={"inet"}, sets={key: nftstate.SetSpec("ipv4_addr")},
                                elements={key: frozenset({VIP})},
                                comments={key: comment} if comment else {})


def test_the_long_name_is_hashed_and_too_long_for_a_comment():
    assert "a" * 62 not in L.gateway_egress(LONG)
    assert nftstate.set_owner(LONG) is None
    assert nftstate.set_owner("egw") == "egw"


def test_a_hashed_set_nobody_knows_names_its_flush_by_the_set():
    egress = L.gateway_egress(LONG)
    now, later = _conntrack_flushes(NodePlan("ga"), _left(egress), NodePlan("ga"))
    # the old code parsed "g-<crc32>-egress" into the gateway "<crc32>"
    assert now == [conntrack.NatFlush(egress, VIP)] and later == []


def test_a_hashed_set_of_a_planned_gateway_names_that_gateway():
    gws, pols = [gateway(LONG)], [policy(gw=LONG)]
    member = plan_for("ga", {LONG: "gb"}, gateways=gws, policies=pols)
    now, later = _conntrack_flushes(member, _left(L.gateway_egress(LONG)), NodePlan("ga"))
    assert [f for f in now if isinstance(f, conntrack.NatFlush)] == []
    assert later == [conntrack.NatFlush(LONG, VIP)], "still a member: the flush waits"
    # and from the previous plan, once the node has left the membership
    now, later = _conntrack_flushes(NodePlan("ga"), _left(L.gateway_egress(LONG)), member)
    assert now == [conntrack.NatFlush(LONG, VIP)] and later == []


def test_a_set_the_config_forgot_is_named_by_its_comment():
    # the comment wins over anything the set's name suggests
    now, _ = _conntrack_flushes(NodePlan("ga"), _left("g-x-egress", comment="real.name"),
                                NodePlan("ga"))
    assert now == [conntrack.NatFlush("real.name", VIP)]


def test_the_egress_set_is_created_with_its_gateway_as_comment():
    plan = plan_for("ga", {"egw": "ga"})
    want = nftstate.desired(plan)
    assert want.comments == {("inet", "g-egw-egress"): "egw"}
    lines = nftstate.diff(nftstate.ObservedNft(), want).lines
    assert "add set inet vipmgr g-egw-egress { type ipv4_addr; comment \"egw\"; }" in lines
    # not a difference by itself: a set created without one (older vipmgr) is kept as is
    have = nftstate.ObservedNft(tables=set(want.tables), sets=dict(want.sets),
                                elements=dict(want.elements),
                                counters={k: (0, 0) for k in want.counters},
                                chains={k: want.fingerprints(k) for k in want.chains})
    assert nftstate.diff(have, want).lines == []
    long_plan = plan_for("ga", {LONG: "ga"}, gateways=[gateway(LONG)], policies=[policy(gw=LONG)])
    assert nftstate.desired(long_plan).comments == {}


def test_parse_reads_the_comment_back():
    ob = nftstate.parse([
        {"table": {"family": "inet", "name": "vipmgr"}},
        {"set": {"family": "inet", "name": "g-egw-egress", "table": "vipmgr",
                 "type": "ipv4_addr", "comment": "egw", "elem": [VIP]}},
        {"set": {"family": "inet", "name": "g-old-egress", "table": "vipmgr",
                 "type": "ipv4_addr", "elem": [VIP]}}])
    assert ob.comments == {("inet", "g-egw-egress"): "egw"}
    assert ob.elements[("inet", "g-egw-egress")] == frozenset({VIP})


@pytest.mark.netns
def test_a_fresh_agent_names_the_leave_flush_from_the_kernel(world):
    """Round trip through the kernel: the comment survives, and an agent that never saw the
    gateway's config (a restart after it was deleted) still names it."""
    gws = [gateway(), gateway(LONG, mode="PrimaryIPFromEgressGatewayNodeInterface")]
    pols = [policy(), policy("long", gw=LONG, app="frontend")]
    take = plan_for("ga", {"egw": "ga", LONG: "ga"}, gateways=gws, policies=pols)
    with Dataplane(world["ga"].name) as dp:
        dp.reconcile(take, arm=True)
        ob = dp.read().nft
        assert ob.comments == {("inet", "g-egw-egress"): "egw"}
        assert ("inet", L.gateway_egress(LONG)) in ob.elements
    with Dataplane(world["ga"].name) as fresh:  # knows no previous plan
        report = fresh.reconcile(NodePlan("ga"))
    assert set(report.conntrack_deleted) == {("egw", conntrack.LEAVE),
                                             (L.gateway_egress(LONG), conntrack.LEAVE)}
