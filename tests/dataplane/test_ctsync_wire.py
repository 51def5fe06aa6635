"""Replication frames and the standby's follower state, without a kernel."""

from __future__ import annotations

import pytest

from vipmgr.agent.ctsync import (DELTA, KEEPALIVE, RECORDS_PER_FRAME, SNAPSHOT, SNAPSHOT_END,
                                 FollowState, Frame, FrameError, decode, encode)
from vipmgr.dataplane.ctsync import TCP, UDP, Flow, inject_state
from vipmgr.wire.keys import KeyRing

KEY, OTHER = b"k" * 32, b"o" * 32
RING = KeyRing((KEY,))
NOW = 1_800_000_000.0


def flow(i: int, proto: int = TCP) -> Flow:
    return Flow(proto, "198.18.1.2", 40000 + i, "203.0.113.10", 9000, 40000 + i, 3)


def frame(kind=DELTA, seq=1, flows=(), session=7, begin=False, node="ga", sent=NOW):
    return Frame(kind, "egw", node, session, seq, sent, tuple(flows), begin)


def test_a_frame_round_trips_signed_and_fits_one_datagram():
    f = frame(flows=[(flow(i), i % 2 == 0) for i in range(RECORDS_PER_FRAME)])
    data = encode(f, RING)
    assert len(data) <= 1400
    assert decode(data, RING, NOW) == f
    assert decode(data, KeyRing((OTHER, KEY)), NOW) == f, "any key of the ring verifies"


@pytest.mark.parametrize("change", ["other-key", "tampered", "unsigned", "stale", "truncated"])
def test_a_frame_that_does_not_verify_is_refused_with_a_reason(change):
    data = encode(frame(flows=[(flow(1), False)]), RING)
    ring, now = RING, NOW
    if change == "other-key":
        ring = KeyRing((OTHER,))
    elif change == "tampered":
        data = data[:40] + bytes([data[40] ^ 1]) + data[41:]
    elif change == "unsigned":
        data = encode(frame(flows=[(flow(1), False)]), KeyRing())
    elif change == "stale":
        now = NOW + 60
    else:
        data = data[:20]
    with pytest.raises(FrameError) as err:
        decode(data, ring, now)
    assert err.value.reason == {"stale": "stale", "truncated": "malformed"}.get(change, "auth")


def test_without_keys_frames_are_unsigned_and_accepted():
    f = frame(flows=[(flow(1, UDP), False)])
    assert decode(encode(f, KeyRing()), KeyRing(), NOW) == f


def test_the_follower_keeps_a_session_in_order_and_asks_for_a_snapshot_on_a_gap():
    st = FollowState("egw")
    assert st.on_frame(frame(SNAPSHOT, 1, begin=True), NOW) == (0, False)
    assert st.on_frame(frame(SNAPSHOT, 2, [(flow(1), False), (flow(2), False)]), NOW)[0] == 2
    st.on_frame(frame(SNAPSHOT_END, 3), NOW)
    assert st.synced and len(st.flows) == 2
    assert st.on_frame(frame(DELTA, 4, [(flow(1), True), (flow(3), False)]), NOW + 0.25) == (2, False)
    assert set(st.flows) == {flow(2).key, flow(3).key} and st.lag == pytest.approx(0.25)
    assert st.on_frame(frame(DELTA, 4, [(flow(9), False)]), NOW) == (0, False), "replay ignored"
    assert flow(9).key not in st.flows
    applied, wanted = st.on_frame(frame(KEEPALIVE, 6), NOW)
    assert wanted and not st.synced, "seq 5 was lost: ask for a snapshot"


def test_a_snapshot_prunes_what_the_sender_no_longer_has_but_keeps_deltas_sent_during_it():
    st = FollowState("egw")
    st.on_frame(frame(DELTA, 1, [(flow(1), False), (flow(2), False)]), NOW)
    st.on_frame(frame(SNAPSHOT, 2, begin=True), NOW)
    st.on_frame(frame(DELTA, 3, [(flow(5), False)]), NOW)   # while the dump runs
    st.on_frame(frame(SNAPSHOT, 4, [(flow(2), False)]), NOW)
    st.on_frame(frame(SNAPSHOT_END, 5), NOW)
    assert set(st.flows) == {flow(2).key, flow(5).key}


def test_a_new_sender_is_followed_and_asked_for_everything():
    st = FollowState("egw")
    st.on_frame(frame(DELTA, 1, [(flow(1), False)]), NOW)
    applied, wanted = st.on_frame(frame(DELTA, 1, [(flow(2), False)], session=8, node="gb"), NOW)
    assert (applied, wanted) == (1, True) and st.source == "gb"
    assert set(st.flows) == {flow(1).key, flow(2).key}, "kept until gb's snapshot says otherwise"


def test_the_cache_is_bounded_and_counts_what_it_refused():
    st = FollowState("egw", max_entries=3)
    st.on_frame(frame(DELTA, 1, [(flow(i), False) for i in range(5)]), NOW)
    assert len(st.flows) == 3 and st.overflow == 2
    st.on_frame(frame(DELTA, 2, [(flow(0), True), (flow(4), False)]), NOW)
    assert flow(4).key in st.flows and len(st.flows) == 3


def test_injected_tcp_state_resumes_live_flows_and_skips_ended_ones():
    syn = Flow(TCP, "198.18.1.2", 1, "203.0.113.10", 2, 1, 1)
    assert inject_state(syn) == 3, "a flow known from its NEW event is resumed established"
    assert inject_state(Flow(TCP, "198.18.1.2", 1, "203.0.113.10", 2, 1, 4)) == 4
    assert inject_state(Flow(TCP, "198.18.1.2", 1, "203.0.113.10", 2, 1, 7)) is None
    assert inject_state(Flow(UDP, "198.18.1.2", 1, "203.0.113.10", 2, 1, 0)) == 0


def test_only_vip_gateways_are_followed_with_the_other_members_internal_addresses():
    from dpworld import NODES, gateway, plan_for, policy

    from vipmgr.agent.ctsync import SyncGateway, sync_gateways
    from vipmgr.agent.snapshot import Snapshot

    vip, prim = gateway("egw"), gateway("pgw", mode="PrimaryIPFromEgressGatewayNodeInterface")
    snap = Snapshot(gateways={"egw": vip, "pgw": prim}, nodes={n.name: n for n in NODES})
    plan = plan_for("ga", {"egw": "gb", "pgw": None}, gateways=[vip, prim],
                    policies=[policy(), policy("pp", "pgw")])
    assert sync_gateways("ga", plan, snap) == {
        "egw": SyncGateway("egw", "192.0.2.100", ("198.51.100.12",))}
    assert sync_gateways("w", plan_for("w", {"egw": "gb"}), snap) == {}, "not a member"
