"""Take/release in both modes against a real kernel: exactly the plan, idempotent, nothing left."""

from __future__ import annotations

import time

import pytest

from dpworld import GA_PRIMARY, VIP, VM1, gateway, plan_for, policy
from vipmgr.dataplane import nftstate
from vipmgr.dataplane.plan import NodePlan
from vipmgr.dataplane.reconcile import Dataplane, desired_routes

pytestmark = pytest.mark.netns


def assert_exactly(dp: Dataplane, plan: NodePlan) -> None:
    st = dp.read()
    want = nftstate.desired(plan)
    addrs, routes, rules = desired_routes(plan)
    assert st.addresses == addrs
    assert st.routes == routes
    assert st.rules == rules
    assert st.nft.tables == want.tables
    assert st.nft.sets == want.sets
    assert st.nft.elements == want.elements
    assert set(st.nft.counters) == want.counters
    assert {k: v for k, v in st.nft.chains.items()} == {k: want.fingerprints(k) for k in want.chains}


def nothing_left(ns) -> None:
    assert "vipmgr" not in ns.run(["nft", "list", "tables"]).stdout
    assert [line.split(":")[0] for line in ns.ip("rule").stdout.splitlines()] == \
        ["0", "32766", "32767"]
    assert ns.ip("route", "show", "table", "all", "proto", "118").stdout.strip() == ""
    assert "/32" not in ns.ip("-4", "addr", "show", "dev", "eth1").stdout


@pytest.mark.parametrize("mode", ["VirtualIPAddress", "PrimaryIPFromEgressGatewayNodeInterface"])
def test_take_release_exact_and_idempotent(world, mode):
    ga = world["ga"]
    gws = [gateway(mode=mode)]
    take = plan_for("ga", {"egw": "ga"}, gateways=gws)
    standby = plan_for("ga", {"egw": "gb"}, gateways=gws)
    egress = VIP if mode == "VirtualIPAddress" else GA_PRIMARY
    with Dataplane(ga.name) as dp:
        report = dp.reconcile(take, arm=True)
        assert report
        assert_exactly(dp, take)
        # independent view through the tools, not our own reader
        nft = ga.run(["nft", "list", "table", "inet", "vipmgr"]).stdout
        assert f"snat ip to {egress}" in nft and VM1 in nft and "jump g-egw-snat" in nft
        assert f"{VM1} via 198.51.100.21" in ga.ip("route", "show", "table", "7600").stdout
        has_vip = f"{VIP}/32" in ga.ip("addr", "show", "dev", "eth1").stdout
        assert has_vip == (mode == "VirtualIPAddress")
        arp = ga.run(["nft", "list", "tables"]).stdout
        assert ("table arp vipmgr" in arp) == (mode == "VirtualIPAddress")

        assert not dp.reconcile(take), "second reconcile must change nothing"
        assert not dp.reconcile(take, verify=True), "nor after re-reading the kernel"

        report = dp.reconcile(standby)
        assert report and any("delete set inet g-egw-egress" in c for c in report.changes)
        assert_exactly(dp, standby)
        nft = ga.run(["nft", "list", "ruleset"]).stdout
        assert "table arp" not in nft
        assert "gw_gate" in nft, "a member keeps the gate: stale steering is dropped here"
        # the SNAT and leak-guard rules stay ready in the gateway's own chains, unreachable:
        # the base chains no longer jump to them
        for base in ("gw_snat", "gw_out"):
            chain = ga.run(["nft", "list", "chain", "inet", "vipmgr", base]).stdout
            assert "jump" not in chain, chain
        assert f"snat ip to {egress}" in ga.run(["nft", "list", "chain", "inet", "vipmgr",
                                                "g-egw-snat"]).stdout
        # so do the return routes; the rule that makes their table count is gone
        assert f"{VM1} via 198.51.100.21" in ga.ip("route", "show", "table", "7600").stdout
        assert "lookup 7600" not in ga.ip("rule").stdout
        assert not dp.reconcile(standby, verify=True)

        dp.reconcile(take, arm=True)
        assert dp.flush()
        nothing_left(ga)
        assert not dp.flush()


def test_worker_steering_exact(world):
    w = world["w"]
    to_ga = plan_for("w", {"egw": "ga"})
    nobody = plan_for("w", {})
    with Dataplane(w.name) as dp:
        dp.reconcile(to_ga)
        assert_exactly(dp, to_ga)
        slot = to_ga.steering[0].slot
        assert "default via 198.51.100.11 dev eth0" in w.ip("route", "show", "table",
                                                              str(7600 + slot)).stdout
        assert f"fwmark 0x{slot << 16:x}/0xff0000 lookup {7600 + slot}" in w.ip("rule").stdout
        dp.reconcile(nobody)
        assert_exactly(dp, nobody)
        assert "blackhole default" in w.ip("route", "show", "table", str(7600 + slot)).stdout
        assert "drop" in w.run(["nft", "list", "chain", "inet", "vipmgr", "vm_steer"]).stdout
        assert not dp.reconcile(nobody, verify=True)

        # one VM more, one policy CIDR more: incremental, and still exact
        more = plan_for("w", {"egw": "ga"},
                        policies=[policy(cidrs=("203.0.113.0/25", "203.0.113.128/25",
                                                "198.51.100.0/24"), app="backend"),
                                  policy("pol2", app="frontend")])
        report = dp.reconcile(more)
        assert any("p-pol2-local +1" in c for c in report.changes)
        assert_exactly(dp, more)
        assert "203.0.113.0/24" in w.run(["nft", "list", "set", "inet", "vipmgr",
                                          "p-pol-dst"]).stdout, "CIDRs are written collapsed"
        assert not dp.reconcile(more, verify=True)
        dp.flush()
        nothing_left(w)


def test_steering_flush_waits_for_a_pause_in_the_reconciles_but_not_forever(netns_lab):
    """The background conntrack dump must not overlap a burst of commits (it slows them),
    and must still run when the changes never pause."""
    from vipmgr.dataplane.conntrack import FlowFlush
    from vipmgr.dataplane.reconcile import _DeferredFlusher

    ns = netns_lab.add("ct")
    spec = [FlowFlush("egw", "steer", frozenset({VM1}), ("203.0.113.0/24",))]
    idle = [0.0]  # seconds the kernel thread has been idle: 0 = a reconcile is running
    flusher = _DeferredFlusher(ns.name, lambda: idle[0])
    try:
        waiting = flusher.add(spec)
        time.sleep(0.4)
        assert not waiting.done(), "dumped in the middle of a burst"
        idle[0] = 1.0
        assert waiting.result(2) == {("egw", "steer"): 0}

        idle[0] = 0.0
        started = time.monotonic()
        assert flusher.add(spec).result(5) == {("egw", "steer"): 0}
        assert _DeferredFlusher.MAX_DEFER <= time.monotonic() - started < _DeferredFlusher.MAX_DEFER + 1
    finally:
        flusher.close()


def test_counter_reader_sees_what_nft_lists_and_nothing_without_the_table(netns_lab):
    from vipmgr.dataplane.kernel import NetnsThread
    from vipmgr.dataplane.nftarm import CounterReader

    ns = netns_lab.add("cnt")
    thread = NetnsThread(ns.name)
    reader = thread.call(CounterReader)
    try:
        assert thread.call(reader.packets) == {}
        ns.run(["nft", "-f", "-"], input="table inet vipmgr {\n"
               " counter g-egw-fenced { packets 7 bytes 700 }\n"
               " counter g-egw-misrouted { packets 0 bytes 0 }\n}\n"
               "table inet other {\n counter g-egw-fenced { packets 99 bytes 1 }\n}\n")
        assert thread.call(reader.packets) == {"g-egw-fenced": 7, "g-egw-misrouted": 0}
    finally:
        thread.call(reader.close)
        thread.close()
