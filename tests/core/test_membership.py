"""Live membership and priority changes (``MembersChanged``) on a running Election:
role, epoch and lease stay, and the evidence rule follows the new member set
without ever crediting evidence that leaves out a node that may take over."""

from __future__ import annotations

import pytest

from vipmgr.core.election import Role
from vipmgr.core.messages import (
    ROLE_STANDBY, Confirm, MembersChanged, Program, Release, RoleChanged, SendAdvert, Start,
    WatchUpdate, Withdraw,
)
from vipmgr.sim.etcd import EtcdModel

from test_transitions import DEAF, T, Driver, active_driver

S, W, F = T.suspect_time, T.challenge_window, T.fence_deadline
STEP = T.standby_advert_interval / 2


def echoing(d: Driver, start: float, end: float, echoers: dict[str, float]) -> None:
    """Run ``d`` from ``start`` to ``end``; each node in ``echoers`` echoes our latest
    advert every STEP until its own stop time. While ``d`` is cut from etcd so are
    they (an etcd outage: the active keeps serving on echoes, no handover)."""
    t = start
    while t < end:
        t = min(t + STEP, end)
        d.run_until(t)
        for node, stop in echoers.items():
            if t <= stop and d.el.role is Role.ACTIVE:
                d.hear(node, role=ROLE_STANDBY, echo=t - T.advert_interval, at=t,
                       etcd_ok=not d.cut)


def cut_active(members=("a", "b")) -> Driver:
    """An active living on peer echoes alone: etcd is unreachable from here on."""
    d = active_driver(members=members)
    d.cut = True
    echoing(d, 0.01, 0.5, {m: 1.0 for m in members if m != "a"})
    assert d.el.role is Role.ACTIVE
    return d


def test_change_keeps_role_epoch_and_lease_and_emits_no_handover():
    d = active_driver()
    epoch, lease, before = d.el.epoch, d.el.lease, len(d.actions)
    d.feed(MembersChanged(("a", "b", "c", "d"), priority=7), 0.02)
    tail = d.actions[before:]
    assert not [a for a in tail if isinstance(a, (RoleChanged, Withdraw, Release))]
    assert (d.el.role, d.el.epoch, d.el.lease) == (Role.ACTIVE, epoch, lease)
    assert d.el.cfg.members == ("a", "b", "c", "d") and d.el.cfg.priority == 7


def test_new_priority_goes_out_with_the_next_advert():
    d = active_driver()
    d.feed(MembersChanged(("a", "b", "c"), priority=3), 0.02)
    d.run_until(0.02 + 2 * T.advert_interval)
    assert d.of(SendAdvert)[-1].advert.priority == 3
    d.feed(MembersChanged(("a", "b", "c")), d.now)  # None keeps it
    assert d.el.cfg.priority == 3


def test_own_node_missing_is_a_caller_error():
    d = active_driver()
    with pytest.raises(ValueError, match="Shutdown"):
        d.feed(MembersChanged(("b", "c")), 0.02)


def test_added_member_without_echo_does_not_fence_at_once():
    d = cut_active()
    validity = d.el.validity()
    d.feed(MembersChanged(("a", "b", "c")), d.now)
    assert d.el.role is Role.ACTIVE and d.el.validity() >= validity
    # ... but b's echoes alone no longer extend it: c might take over, etcd is cut.
    echoing(d, d.now, d.now + S + F + 0.1, {"b": 10.0})
    assert d.el.role is Role.FENCED
    assert max(p.until for p in d.of(Program)) <= validity + 1e-9


def test_added_member_once_it_echoes_extends_evidence_again():
    d = cut_active()
    d.feed(MembersChanged(("a", "b", "c")), d.now)
    echoing(d, d.now, d.now + 1.0, {"b": 10.0, "c": 10.0})
    assert d.el.role is Role.ACTIVE


def test_added_member_is_covered_by_etcd_confirms():
    d = active_driver(members=("a", "b"))
    start = d.now
    echoing(d, start, start + 0.3, {"b": 10.0})
    confirms = len(d.of(Confirm))
    d.feed(MembersChanged(("a", "b", "c")), d.now)
    echoing(d, d.now, d.now + 1.0, {"b": 10.0})  # c never echoes
    assert d.el.role is Role.ACTIVE and len(d.of(Confirm)) > confirms


def test_removed_member_is_no_longer_required_after_its_grace():
    d = cut_active(("a", "b", "c"))
    change = d.now
    d.feed(MembersChanged(("a", "b")), change)
    # c has not heard of it yet and echoes a little longer, then leaves.
    echoing(d, change, change + 1.0, {"b": 10.0, "c": change + 0.05})
    assert d.el.role is Role.ACTIVE


def test_without_the_change_the_same_silence_fences():
    d = cut_active(("a", "b", "c"))
    change = d.now
    echoing(d, change, change + 1.0, {"b": 10.0, "c": change + 0.05})
    assert d.el.role is Role.FENCED


def test_removed_member_still_counts_during_its_grace():
    """A removed node may not know yet and could still challenge: until S + W after
    the change its echo is still required."""
    d = cut_active(("a", "b", "c"))
    change = d.now
    d.feed(MembersChanged(("a", "b")), change)
    echoing(d, change, change + S + W, {"b": 10.0})  # c silent from the change on
    fenced = [a for a in d.of(RoleChanged) if a.new == "fenced"]
    assert fenced and d.el.role is Role.FENCED


def test_isolated_side_rule_follows_the_member_count():
    etcd = EtcdModel()
    holder = active_driver(node="b", members=("a", "b"), etcd=etcd)  # hears nobody
    holder.feed(MembersChanged(("a", "b", "c")), 0.02)
    d = Driver(etcd=etcd)  # a, members a b c
    d.feed(Start(), 0.0)
    d.hear("c", role=ROLE_STANDBY, at=0.005)
    d.run_until(S + 0.001)
    assert d.el.role is Role.CHALLENGING
    holder.feed(WatchUpdate(etcd.view(holder.keys)), d.now)
    holder.run_until(0.02 + DEAF + 0.001)  # silent since it learnt of c
    assert holder.el.role is Role.STANDBY and holder.of(Release)


def test_removed_node_is_not_counted_as_heard():
    d = Driver(members=("a", "b", "c"))
    d.feed(Start(), 0.0)
    d.hear("c", role=ROLE_STANDBY, at=0.01)
    assert d.el._heard_peers() == ("c",)
    d.feed(MembersChanged(("a", "b")), 0.011)
    assert d.el._heard_peers() == ()
