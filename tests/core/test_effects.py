"""What a move carries besides its new role: entry/exit effects, the epoch its
RoleChanged names, eligibility given with Start, and the sender's advert interval."""

from __future__ import annotations

import pytest

from vipmgr.core.election import Role
from vipmgr.core.messages import (
    ROLE_STANDBY, Acquire, Advert, Cordoned, EtcdResult, HealthChanged, Heartbeat, RoleChanged,
    SendAdvert, Start, SwitchoverRequested, Tick, WatchUpdate,
)
from vipmgr.core.roles import DATAPATH_ROLES, ON_ENTER, ON_EXIT, Effect

from test_transitions import GW, T, Driver, active_driver


def test_leaving_or_entering_a_serving_role_advertises_at_once():
    """Both effects are data (roles.py); _goto only applies them."""
    assert (DATAPATH_ROLES, (Effect.WITHDRAW, Effect.ADVERT_NOW, Effect.FORGET_ECHOES)) in ON_EXIT
    assert all(Effect.ADVERT_NOW in ON_ENTER[role] for role in DATAPATH_ROLES)
    d = active_driver()
    d.feed(SwitchoverRequested("b"), 0.02)
    adverts = [a.advert for a in d.of(SendAdvert) if a.advert.stamp == 0.02]
    assert [a.role for a in adverts] == [ROLE_STANDBY]


def test_adopting_our_own_key_names_its_epoch():
    """The acquire applied but its reply was lost: the watch shows the key bound to our
    lease, and the adopt move carries that epoch (not 0)."""
    d = Driver()
    d.feed(Start(), 0.0)
    d.delay = 1.0  # from now on replies come late; the transactions apply at once
    d.run_until(T.listen_time + 0.005)
    (acquire,) = d.of(Acquire)
    d.later.clear()
    d.feed(EtcdResult(acquire.op_id, "unreachable"))
    assert d.el.role is Role.STANDBY
    d.delay = 0.0
    epoch = d.etcd.view(d.keys).epoch
    d.feed(WatchUpdate(d.etcd.view(d.keys)))
    (adopt,) = [c for c in d.of(RoleChanged) if c.cause == "adopt-own-key"]
    assert (adopt.new, adopt.epoch, d.el.epoch) == ("fenced", epoch, epoch)


def test_a_release_names_the_epoch_given_up():
    d = active_driver()
    epoch = d.el.epoch
    d.feed(SwitchoverRequested("b"), 0.02)
    (released,) = [c for c in d.of(RoleChanged) if c.cause == "released"]
    assert (released.new, released.epoch, d.el.epoch) == ("standby", epoch, 0)


@pytest.mark.parametrize("before,start", [
    ([HealthChanged(False)], Start()), ([], Start(healthy=False)),
    ([Cordoned(True)], Start()), ([], Start(cordoned=True)),
])
def test_eligibility_goes_out_with_the_first_advert(before, start):
    """Given with Start or fed before it: the same."""
    d = Driver()
    for event in before:
        d.feed(event, 0.0)
    d.feed(start, 0.0)
    assert [a.advert.eligible for a in d.of(SendAdvert)] == [False]
    d.run_until(1.0)
    assert d.el.role is Role.STANDBY and not d.of(Acquire)


def test_a_peer_counts_as_heard_for_its_own_advert_interval():
    d = Driver()
    d.feed(Start(), 0.0)
    slow = T.standby_advert_interval * 2
    d.feed(Heartbeat(Advert(GW, "b", ROLE_STANDBY, 0, 50, True, True, (), 0.0,
                            interval=slow)), 0.01)
    d.hear("c", role=ROLE_STANDBY, at=0.01)  # no interval: ours for its role
    d.feed(Tick(), 0.01 + T.suspect_after * T.standby_advert_interval + 0.001)
    assert d.el._heard_peers() == ("b",)
    d.feed(Tick(), 0.01 + T.suspect_after * slow + 0.001)
    assert d.el._heard_peers() == ()
