"""An etcd-backed node never becomes effective while it hears a VRRP fallback active
(``onEtcdLoss: vrrp``): on every path — acquire after free authority, acquire after a
depose, confirm after a fence — it lets the fallback yield first. A fallback follows
no evidence rule, so only its own yield (or its kernel's dead-man) ends its datapath.
"""

from __future__ import annotations

from vipmgr.core.election import Role
from vipmgr.core.messages import (
    OK, ROLE_STANDBY, Acquire, Depose, EtcdResult, Program, Release, SendAdvert, Start,
    SwitchoverRequested, Tick, WatchUpdate,
)
from vipmgr.sim.etcd import EtcdModel

from test_transitions import T, Driver, active_driver

S, W, D = T.suspect_time, T.challenge_window, T.deadman_timeout
HORIZON = max(S, D * T.drift_factor)  # a fallback's kernel state may live this long


def programs_after(d: Driver, since: int) -> list[Program]:
    return [a for a in d.actions[since:] if isinstance(a, Program)]


def deposing_standby() -> tuple[Driver, float]:
    """b held the authority and crashed at 0.1; a (which hears c) suspects, challenges
    and, the window over, has its Depose in flight (etcd answers 2 ms late)."""
    etcd = EtcdModel()
    holder = active_driver(node="b", etcd=etcd)
    d = Driver(etcd=etcd)
    d.delay = 0.002
    d.feed(Start(), 0.0)
    d.run_until(0.01)
    d.hear("b", epoch=holder.el.epoch, at=0.1)
    d.hear("c", role=ROLE_STANDBY, at=0.1)
    t = 0.1
    while not d.of(Depose):
        t += 0.0005
        d.run_until(t)
        if int(t * 2000) % 80 == 0:  # c keeps advertising as a standby
            d.hear("c", role=ROLE_STANDBY, at=t)
        assert t < 0.6, "never deposed"
    return d, t


def test_a_fallback_heard_while_deposing_keeps_the_datapath_down_until_it_yields():
    """The bug of seed 26814: c became vrrp-active while a's Depose was in flight; a
    acquired and programmed while c was still effective."""
    d, t = deposing_standby()
    before = len(d.actions)
    d.hear("c", etcd_ok=False, at=t + 0.0005)  # c: VRRP fallback active (epoch 0)
    d.run_until(t + 0.03)
    assert d.of(Acquire) and d.el.role is Role.FENCED and d.el.epoch
    assert not programs_after(d, before)
    d.run_until(t + 0.05)
    d.hear("c", etcd_ok=False)  # still serving: still nothing
    d.run_until(t + 0.07)
    assert not programs_after(d, before) and d.el.role is Role.FENCED
    yielded = d.now
    d.hear("c", role=ROLE_STANDBY)  # c yields (its etcd answered)
    d.run_until(yielded + 3 * T.advert_interval)
    assert d.el.role is Role.ACTIVE and programs_after(d, before)


def test_a_fallback_that_stops_advertising_is_waited_out_for_its_dead_man():
    """c dies while vrrp-active: its kernel state lives deadmanTimeout past its last
    advert, longer than the suspect time. a programs only after that."""
    d, t = deposing_standby()
    before = len(d.actions)
    last = t + 0.0005
    d.hear("c", etcd_ok=False, at=last)
    while not programs_after(d, before):
        assert d.now < last + 0.5, "never became active"
        d.run_until(d.now + 0.0005)
    assert d.el.role is Role.ACTIVE and d.now >= last + HORIZON


def test_free_authority_waits_for_a_fallbacks_dead_man_not_just_the_suspect_time():
    """Authority vacated (b handed over, naming nobody) while a hears c serving as VRRP
    fallback: a acquires only once c can no longer be effective."""
    etcd = EtcdModel()
    holder = active_driver(node="b", etcd=etcd)
    d = Driver(etcd=etcd)
    d.feed(Start(), 0.0)
    for i in range(1, 16):  # b serves, c stands by
        d.run_until(i * T.advert_interval)
        d.hear("b", epoch=holder.el.epoch)
        d.hear("c", role=ROLE_STANDBY)
    last = d.now
    assert d.el.role is Role.STANDBY
    d.hear("c", etcd_ok=False, at=last)
    holder.feed(SwitchoverRequested(None), last)
    assert holder.of(Release)
    d.hear("b", role=ROLE_STANDBY, priority=0, at=last)
    d.feed(WatchUpdate(etcd.view(d.keys)), last + 0.001)
    d.run_until(last + S + 0.005)
    assert not d.of(Acquire), "took free authority while the fallback may be effective"
    while not d.of(Program):
        assert d.now < last + 0.5, "never became active"
        d.run_until(d.now + 0.0005)
    assert d.el.role is Role.ACTIVE and d.now >= last + HORIZON


def test_a_fallback_active_does_not_advertise_itself_as_etcd_backed():
    """Its etcd answers again (a keep-alive) but no confirm yet: it still serves
    without etcd's word, so its adverts must not pass for an etcd-backed active's."""
    d = active_driver(on_etcd_loss="vrrp")
    d.cut = True
    d.run_until(1.0)
    assert d.el.role is Role.VRRP_ACTIVE and d.el.epoch
    d.feed(EtcdResult(op_id=10**6, outcome=OK), 1.001)  # a reply: etcd reachable
    assert d.el.etcd_ok and d.el.role is Role.VRRP_ACTIVE
    d.feed(Tick(), 1.0 + T.advert_interval)
    adverts = [a.advert for a in d.actions[-5:] if isinstance(a, SendAdvert)]
    assert adverts and all(a.role == "active" and not a.etcd_ok for a in adverts)
