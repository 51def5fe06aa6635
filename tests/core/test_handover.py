"""An active cut from etcd while its peers still reach it hands over (etcd-cut-handover)
before its lease expires, so the workers, who follow the authority key, always see a
holder; in a real etcd outage (no peer reaches etcd) it keeps serving on echoes."""

from __future__ import annotations

import pytest

from vipmgr.core.election import Cause, Role
from vipmgr.core.messages import (
    ROLE_STANDBY, Depose, PostChallenge, Program, RoleChanged, SendAdvert, Start,
    Withdraw,
)
from vipmgr.sim.etcd import EtcdModel

from test_transitions import T, Driver, active_driver

S, W = T.suspect_time, T.challenge_window
H = T.lease_ttl / 3  # etcd unanswered this long before the handover
STEP = T.standby_advert_interval / 2


def echoed(d: Driver, until: float, etcd_ok: bool = True) -> None:
    """b and c echo every advert of d's, advertising whether they reach etcd."""
    t = d.now
    while t < until:
        t = min(t + STEP, until)
        d.run_until(t)
        for peer in ("b", "c"):
            d.hear(peer, role=ROLE_STANDBY, echo=t - T.advert_interval, at=t, etcd_ok=etcd_ok)


def cut_active(policy: str) -> Driver:
    """Active on echoes of b and c; from 0.1 on etcd does not answer it."""
    d = active_driver(on_etcd_loss=policy)
    echoed(d, 0.1)
    d.cut = True
    return d


@pytest.mark.parametrize("policy", ["hold", "vrrp"])
def test_cut_active_withdraws_then_says_so_when_a_peer_reaches_etcd(policy):
    d = cut_active(policy)
    keepalive = T.lease_ttl / 3  # the next request, whose answer never comes
    echoed(d, keepalive + H - 0.01)
    assert d.el.role is Role.ACTIVE  # several retries failed, but not for H yet
    before = len(d.actions)
    echoed(d, keepalive + H + 0.06)
    tail = d.actions[before:]
    change = next(a for a in tail if isinstance(a, RoleChanged))
    assert (change.new, change.cause) == ("fenced", Cause.ETCD_CUT_HANDOVER.value)
    kinds = [type(a) for a in tail]
    withdraw = kinds.index(Withdraw)
    advert = next(a for a in tail[withdraw:] if isinstance(a, SendAdvert)).advert
    assert advert.role == ROLE_STANDBY and advert.epoch == d.el.epoch and not advert.etcd_ok
    assert Program not in kinds[withdraw:]
    # Never back while cut (also not as a VRRP fallback: the peers reach etcd).
    after = len(d.actions)
    echoed(d, d.now + 3.0)
    assert d.el.role is Role.FENCED
    assert not [a for a in d.actions[after:] if isinstance(a, Program)]


def test_an_etcd_outage_keeps_the_holder_serving():
    """Nobody reaches etcd: nobody could take over, so handing over would stop egress."""
    d = cut_active("hold")
    echoed(d, 3.0, etcd_ok=False)
    assert d.el.role is Role.ACTIVE


def test_a_short_etcd_hiccup_never_hands_over():
    d = active_driver()
    echoed(d, 0.6)
    d.cut = True  # the keep-alive at leaseTTL/3 and two retries go unanswered
    echoed(d, 0.9)
    d.cut = False
    echoed(d, 3.0)
    assert d.el.role is Role.ACTIVE
    assert not [a for a in d.actions if isinstance(a, RoleChanged) and a.new == "fenced"]


def test_standby_challenges_at_once_when_the_cut_holder_withdraws():
    """It need not wait the suspect time for silence: the holder said it withdrew (and
    comes back only through etcd); the challenge window still protects the rest."""
    etcd = EtcdModel()
    holder = active_driver(node="b", etcd=etcd)
    d = Driver(etcd=etcd)
    d.feed(Start(), 0.0)
    for i in range(1, 30):
        d.run_until(i * T.advert_interval)
        d.hear("b", epoch=holder.el.epoch, etcd_ok=i < 10)
        if i % 3 == 0:
            d.hear("c", role=ROLE_STANDBY)
    withdrew = d.now + 0.002
    d.hear("b", role=ROLE_STANDBY, epoch=holder.el.epoch, priority=200, etcd_ok=False,
           at=withdrew)
    d.run_until(withdrew + 0.001)
    assert d.el.role is Role.CHALLENGING and d.of(PostChallenge)
    d.run_until(withdrew + W - 0.002)
    assert not d.of(Depose)
    d.run_until(withdrew + W + 0.005)
    assert d.el.role is Role.ACTIVE


def test_a_standby_advert_of_an_etcd_backed_holder_does_not_cut_suspicion_short():
    """A holder that reaches etcd and advertises standby is releasing or fenced: it
    answers challenges, so the standby waits for silence as before."""
    etcd = EtcdModel()
    holder = active_driver(node="b", etcd=etcd)
    d = Driver(etcd=etcd)
    d.feed(Start(), 0.0)
    for i in range(1, 30):
        d.run_until(i * T.advert_interval)
        d.hear("b", epoch=holder.el.epoch)
    last = d.now
    d.hear("b", role=ROLE_STANDBY, epoch=holder.el.epoch, at=last + 0.002)
    d.run_until(last + S - 0.002)
    assert not d.of(PostChallenge)


def test_vrrp_standby_cut_from_etcd_leaves_the_takeover_to_a_peer_that_reaches_it():
    d = Driver(on_etcd_loss="vrrp")
    d.feed(Start(), 0.0)
    d.cut = True  # from just after it got its lease
    t = 0.0
    while t < 1.0:
        t += STEP
        d.run_until(t)
        d.hear("c", role=ROLE_STANDBY, at=t)  # eligible, reaches etcd
    assert d.el.role is Role.STANDBY
    d.run_until(t + S + W + T.listen_time + 0.1)  # c goes quiet: fall back
    assert d.el.role is Role.VRRP_ACTIVE
