"""Table-driven transition tests of one Election with a scripted clock.

etcd is the simulator's in-memory model answering at once, so each test reads as
a timeline: events at given instants, then the role and the actions.
"""

from __future__ import annotations

import itertools

import pytest

from vipmgr.config.timers import Timers
from vipmgr.core.election import (
    TRANSITIONS, VRRP_TRANSITIONS, Cause, Election, ElectionConfig, IllegalTransition, Role,
)
from vipmgr.core.messages import (
    OK, ROLE_ACTIVE, ROLE_STANDBY, Acquire, Advert, Answer, Cordoned, Depose, EtcdResult,
    GrantLease, HealthChanged, Heartbeat, KeepAlive, PostChallenge, Program, Release, RevokeLease,
    RoleChanged, Shutdown, Start, SwitchoverRequested, Tick, Watch, WatchUpdate, Withdraw,
)
from vipmgr.sim.etcd import EtcdModel
from vipmgr.store.authority import GatewayKeys, plan

T = Timers()
S, W, F = T.suspect_time, T.challenge_window, T.fence_deadline
DEAF = 3 * T.standby_advert_interval  # a challenged holder that heard no member this long yields
GW = "gw"


class Driver:
    """One node's Election, an instant etcd shared with other drivers, a scripted clock."""

    def __init__(self, node="a", members=("a", "b", "c"), priority=100, etcd=None,
                 cut=False, **cfg):
        self.el = Election(ElectionConfig(GW, node, tuple(members), priority, T, **cfg))
        self.etcd = etcd or EtcdModel()
        self.keys = GatewayKeys("/vipmgr", GW)
        self.cut = cut          # etcd unreachable from this node
        self.delay = 0.0        # etcd answers this much later (0: at once)
        self.actions: list = []
        self.later: list = []   # (when, event) for unreachable results
        self.now = 0.0

    def feed(self, event, at: float | None = None) -> list:
        if at is not None:
            self.now = at
        out = self.el.handle(event, self.now)
        self.actions += out
        for a in out:
            result = self._etcd(a)
            if result is None:
                continue
            if self.cut:  # no answer until the request times out
                self.later.append((self.now + T.etcd_timeout, result))
            elif self.delay:
                self.later.append((self.now + self.delay, result))
            else:
                self.feed(result)
        return out

    def _etcd(self, a):
        if isinstance(a, Watch):
            return None if self.cut else WatchUpdate(self.etcd.view(self.keys))
        if not hasattr(a, "op_id"):
            return None
        if self.cut:
            return EtcdResult(a.op_id, "unreachable")
        if isinstance(a, GrantLease):
            return EtcdResult(a.op_id, OK, lease=self.etcd.grant(a.ttl, self.now))
        if isinstance(a, KeepAlive):
            return EtcdResult(a.op_id, OK if self.etcd.keepalive(a.lease, self.now) else "refused")
        if isinstance(a, RevokeLease):
            return EtcdResult(a.op_id, OK if self.etcd.revoke(a.lease) else "refused")
        ok, rev, view = self.etcd.txn(plan(a, self.el.cfg.node, self.keys), self.keys)
        return EtcdResult(a.op_id, OK if ok else "refused", rev, view)

    def run_until(self, t: float) -> None:
        """Deliver Tick at every deadline up to ``t``."""
        while True:
            due = [self.el.next_deadline] if self.el.next_deadline is not None else []
            due += [w for w, _ in self.later]
            if not due or min(due) > t:
                break
            when = min(due)
            if self.later and min(w for w, _ in self.later) == when:
                item = min(self.later, key=lambda x: x[0])
                self.later.remove(item)
                self.feed(item[1], max(self.now, when))
            else:
                self.feed(Tick(), max(self.now, when))
        self.now = t

    def hear(self, node, role=ROLE_ACTIVE, epoch=0, priority=50, echo=None, at=None,
             etcd_ok=True, eligible=True):
        adv = Advert(GW, node, role, epoch, priority, eligible, etcd_ok, (), self.now if at is None
                     else at, echo and self.el.cfg.node, echo or 0.0)
        return self.feed(Heartbeat(adv), at)

    def of(self, cls) -> list:
        return [a for a in self.actions if isinstance(a, cls)]


def active_driver(**kw) -> Driver:
    """Active at once: it has heard every other member (all ranked below it) at start,
    so it need not listen for the others' ranks first."""
    d = Driver(**kw)
    d.feed(Start(), 0.0)
    for member in d.el.cfg.members:
        if member != d.el.cfg.node:
            d.hear(member, role=ROLE_STANDBY)
    d.run_until(0.01)
    assert d.el.role is Role.ACTIVE
    return d


# --- the table itself -------------------------------------------------------------

# The protocol's moves, written out here independently of TRANSITIONS (a wrong or
# missing row there fails these tests): (from, cause) -> to.
PROTOCOL = {
    ("standby", "suspected"): "challenging",        # no active heard for S
    ("standby", "preempt"): "challenging",          # better priority, preemptDelay over
    ("standby", "authority-free"): "acquiring",
    ("standby", "adopt-own-key"): "fenced",         # the key is bound to our lease
    ("standby", "vrrp-takeover"): "vrrp-active",    # no etcd, no active for S + W
    ("standby", "stop"): "stopped",
    ("challenging", "heard-active"): "standby",
    ("challenging", "answered"): "standby",
    ("challenging", "superseded"): "standby",
    ("challenging", "ineligible"): "standby",
    ("challenging", "etcd-unreachable"): "standby",
    ("challenging", "window-expired"): "acquiring",  # deposed
    ("challenging", "stop"): "stopped",
    ("acquiring", "acquired"): "active",
    ("acquiring", "fallback-active-heard"): "fenced",  # holds authority, datapath down
    ("acquiring", "superseded"): "standby",
    ("acquiring", "etcd-unreachable"): "standby",
    ("active", "evidence-lapsed"): "fenced",
    ("active", "paused"): "fenced",
    ("active", "lost-authority"): "standby",
    ("active", "release"): "releasing",
    ("active", "etcd-cut-handover"): "fenced",
    ("fenced", "confirmed"): "active",
    ("fenced", "lost-authority"): "standby",
    ("fenced", "release"): "releasing",
    ("fenced", "vrrp-takeover"): "vrrp-active",
    ("releasing", "released"): "standby",
    ("releasing", "etcd-unreachable"): "standby",
    ("releasing", "stop"): "stopped",
    ("vrrp-active", "confirmed"): "active",
    ("vrrp-active", "lost-authority"): "standby",
    ("vrrp-active", "vrrp-yield"): "standby",
    ("vrrp-active", "ineligible"): "standby",
    ("vrrp-active", "paused"): "standby",     # woke after its dead-man expired
    ("vrrp-active", "stop"): "stopped",
}
# onEtcdLoss vrrp: an active whose evidence lapses keeps serving like a VRRP master.
PROTOCOL_VRRP = {**PROTOCOL, ("active", "evidence-lapsed"): "vrrp-active"}
SERVING = {"active", "vrrp-active"}


@pytest.mark.parametrize("policy,protocol", [("hold", PROTOCOL), ("vrrp", PROTOCOL_VRRP)])
@pytest.mark.parametrize("role,cause", list(itertools.product(Role, Cause)))
def test_every_move_is_the_protocols_and_nothing_else(role, cause, policy, protocol):
    d = Driver(on_etcd_loss=policy)
    d.el.role = role
    target = protocol.get((role.value, cause.value))
    if target is None:
        with pytest.raises(IllegalTransition):
            d.el._goto(cause)
    else:
        d.el._goto(cause, "test")
        assert d.el.role.value == target
        leaving = role.value in SERVING and target not in SERVING
        assert any(isinstance(a, Withdraw) for a in d.el._out) == leaving


def test_the_table_names_no_move_the_protocol_lacks():
    table = {(r.value, c.value): t.value for (r, c), t in TRANSITIONS.items()}
    vrrp = {(r.value, c.value): t.value for (r, c), t in VRRP_TRANSITIONS.items()}
    assert table == PROTOCOL
    assert {**table, **vrrp} == PROTOCOL_VRRP


# --- behaviour, one timeline per row ------------------------------------------------

def test_fresh_gateway_is_acquired_and_programmed_within_evidence():
    d = active_driver()
    (prog, *_) = d.of(Program)
    assert prog.until <= d.el.validity() and prog.until <= d.now + T.deadman_timeout


def test_standby_hearing_the_active_never_challenges():
    etcd = EtcdModel()
    holder = active_driver(node="b", etcd=etcd)
    d = Driver(etcd=etcd)
    d.feed(Start(), 0.0)
    for i in range(1, 60):
        d.hear("b", epoch=holder.el.epoch, at=i * T.advert_interval)
        d.run_until(i * T.advert_interval)
    assert not d.of(PostChallenge) and d.el.role is Role.STANDBY


def test_silence_for_the_suspect_time_starts_a_challenge_then_depose_and_acquire():
    etcd = EtcdModel()
    holder = active_driver(node="b", etcd=etcd)
    d = Driver(etcd=etcd)
    d.feed(Start(), 0.0)
    d.hear("b", epoch=holder.el.epoch, at=0.1)
    d.run_until(0.1 + S - 0.001)
    assert not d.of(PostChallenge)
    d.run_until(0.1 + S + 0.001)
    assert d.el.role is Role.CHALLENGING and len(d.of(PostChallenge)) == 1
    d.run_until(0.1 + S + W - 0.001)
    assert not d.of(Depose)
    d.run_until(0.1 + S + W + 0.002)
    assert d.el.role is Role.ACTIVE and len(d.of(Depose)) == 1
    assert d.el.epoch > holder.el.epoch


def test_holder_answers_a_challenge_and_the_challenger_backs_off():
    etcd = EtcdModel()
    holder = active_driver(node="b", etcd=etcd)
    d = Driver(etcd=etcd)
    d.feed(Start(), 0.0)
    d.run_until(S + 0.001)  # never heard b: suspects
    assert d.el.role is Role.CHALLENGING
    holder.feed(WatchUpdate(etcd.view(holder.keys)), d.now)
    assert holder.of(Answer)
    d.feed(WatchUpdate(etcd.view(d.keys)))
    assert d.el.role is Role.STANDBY and holder.el.role is Role.ACTIVE
    d.run_until(d.now + W + 0.01)
    assert not d.of(Depose)


def challenged_holder(last_heard: float) -> tuple[Driver, Driver]:
    """b holds (it heard a and c at 0, then c again at ``last_heard``); a, which hears
    c but not b, challenges at S and b sees the challenge at once."""
    etcd = EtcdModel()
    holder = active_driver(node="b", etcd=etcd)
    d = Driver(etcd=etcd)
    d.feed(Start(), 0.0)
    d.hear("c", role=ROLE_STANDBY, at=0.005)
    if last_heard:
        holder.run_until(last_heard)
        holder.hear("c", role=ROLE_STANDBY)
    holder.run_until(S)  # (its confirmations must not read the challenge early)
    d.run_until(S + 0.001)
    assert d.el.role is Role.CHALLENGING
    holder.feed(WatchUpdate(etcd.view(holder.keys)), d.now)
    return holder, d


def test_holder_deaf_for_three_standby_adverts_yields_to_the_challenger():
    """Its heartbeat link is down: it heard nobody since 0, the challenger hears others.
    (It heard both peers within the standby horizon, which used to make it answer.) It
    yields once three adverts of every member are missing, within the challenge window."""
    holder, d = challenged_holder(last_heard=0.0)
    assert holder.el.role is Role.ACTIVE and not holder.of(Answer)
    holder.run_until(DEAF - 0.0005)
    assert holder.el.role is Role.ACTIVE and not holder.of(Release)
    holder.run_until(DEAF + 0.0005)
    assert DEAF < S + W and holder.el.role is Role.STANDBY and holder.of(Withdraw)
    assert [r.successor for r in holder.of(Release)] == ["a"] and not holder.of(Answer)
    d.feed(WatchUpdate(d.etcd.view(d.keys)))
    assert d.el.role is Role.ACTIVE  # named successor: no stagger


def test_holder_that_still_hears_a_peer_answers():
    """Heartbeat path broken (b -> a lost), b itself hears fine: it keeps the role."""
    holder, _ = challenged_holder(last_heard=0.04)
    assert holder.el.role is Role.ACTIVE and holder.of(Answer) and not holder.of(Release)


@pytest.mark.parametrize("advert", [0.005, 0.045, None],
                         ids=["advert-comes", "two-adverts-lost", "silence"])
def test_holder_in_doubt_waits_for_word_on_its_own_hearing(advert):
    """Last heard c 66 ms before the challenge: past S - advertInterval, it neither
    answers nor yields until the next advert (answer) or DEAF of silence (yield). Random
    loss (20 %) drops two adverts in a row often: a silence of S is no proof of deafness."""
    holder, _ = challenged_holder(last_heard=0.015)
    assert holder.el.role is Role.ACTIVE and not holder.of(Answer) \
        and not holder.of(Release)
    if advert is not None:
        holder.run_until(holder.now + advert)  # every deadline before it fires first
        holder.hear("c", role=ROLE_STANDBY)
        assert holder.of(Answer) and holder.el.role is Role.ACTIVE \
            and not holder.of(Release)
    else:
        holder.run_until(0.015 + DEAF - 0.0005)
        assert holder.el.role is Role.ACTIVE and not holder.of(Release)
        holder.run_until(0.015 + DEAF + 0.0005)
        assert holder.el.role is Role.STANDBY and not holder.of(Answer)
        assert [r.successor for r in holder.of(Release)] == ["a"]


def test_two_node_holder_keeps_the_role_when_isolated():
    etcd = EtcdModel()
    holder = active_driver(node="b", members=("a", "b"), etcd=etcd)
    d = Driver(members=("a", "b"), etcd=etcd)
    d.feed(Start(), 0.0)
    d.run_until(S + 0.001)
    holder.feed(WatchUpdate(etcd.view(holder.keys)), d.now)
    assert holder.el.role is Role.ACTIVE and holder.of(Answer)


def test_holder_without_evidence_fences_itself_before_anyone_could_take_over():
    d = active_driver()
    d.cut = True
    acquired_at = 0.0
    d.run_until(1.0)
    assert d.el.role is Role.FENCED and d.of(Withdraw)
    last = max(p.until for p in d.of(Program))
    assert last <= acquired_at + 0.01 + F  # etcd evidence ends fenceDeadline after it


def test_peer_echoes_keep_the_holder_active_without_etcd():
    """An etcd outage (no peer reaches etcd either): the holder serves on echoes."""
    d = active_driver(members=("a", "b"))
    d.cut = True
    for i in range(1, 100):
        t = 0.01 + i * T.standby_advert_interval / 2
        d.run_until(t)
        d.hear("b", role=ROLE_STANDBY, echo=t - 0.021, at=t, etcd_ok=False)
    assert d.el.role is Role.ACTIVE
    assert all(p.until <= d.now + T.deadman_timeout for p in d.of(Program))


def test_vrrp_policy_keeps_serving_when_evidence_lapses_live():
    d = active_driver(on_etcd_loss="vrrp")
    d.cut = True
    d.run_until(1.0)
    assert d.el.role is Role.VRRP_ACTIVE


def test_a_paused_holder_fences_even_with_vrrp_policy():
    d = active_driver(on_etcd_loss="vrrp")
    d.cut = True
    d.feed(Tick(), 1.0)  # nothing ran for a second: a freeze
    assert d.el.role is Role.FENCED


def test_a_fallback_active_that_woke_after_its_dead_man_expired_does_not_program_again():
    """Simulator seed 168186: n2, VRRP fallback during an etcd outage, froze for a second;
    etcd came back and n4 took the gateway through etcd once n2's fallback horizon had
    passed; n2 woke and refreshed its dead-man on its own word: two effective actives."""
    d = active_driver(on_etcd_loss="vrrp")
    d.cut = True
    d.run_until(1.0)
    assert d.el.role is Role.VRRP_ACTIVE
    d.run_until(1.0 + T.advert_interval)      # scheduled on time: it keeps serving
    assert d.el.role is Role.VRRP_ACTIVE and isinstance(d.actions[-2], Program)
    before = len(d.actions)
    d.feed(Tick(), 1.0 + T.advert_interval + T.deadman_timeout + 0.5)  # a freeze
    tail = d.actions[before:]
    assert not [a for a in tail if isinstance(a, Program)], "programmed after waking late"
    assert Withdraw in [type(a) for a in tail]
    changes = [(c.old, c.new, c.cause) for c in tail if isinstance(c, RoleChanged)]
    assert changes[0] == ("vrrp-active", "standby", "paused")
    # its key is still bound to its lease: it may serve again once etcd confirms it
    assert d.el.role in (Role.STANDBY, Role.FENCED)


@pytest.mark.parametrize("event", [HealthChanged(False), Cordoned(True), Shutdown(),
                                   SwitchoverRequested("b")], ids=lambda e: type(e).__name__)
def test_graceful_paths_withdraw_then_release(event):
    d = active_driver()
    before = len(d.actions)
    d.feed(event, 0.02)
    tail = d.actions[before:]
    kinds = [type(a) for a in tail]
    assert Withdraw in kinds and Release in kinds
    assert kinds.index(Withdraw) < kinds.index(Release)
    assert d.el.role in (Role.STANDBY, Role.STOPPED)
    assert d.etcd.view(d.keys).vacated


def test_releaser_lets_others_go_first():
    etcd = EtcdModel()
    d = active_driver(etcd=etcd)
    d.feed(SwitchoverRequested(None), 0.02)
    d.run_until(0.02 + S)
    assert d.el.role is Role.STANDBY


def test_restart_hands_over_the_previous_incarnations_key():
    etcd = EtcdModel()
    active_driver(etcd=etcd)
    again = Driver(etcd=etcd)
    out = again.feed(Start(), 0.5)
    assert isinstance(out[0], Withdraw)
    again.run_until(0.5 + S + W - 0.01)  # lets others take it first
    assert again.of(Release) and again.el.role is Role.STANDBY
    again.run_until(0.5 + S + W + 0.02)
    assert again.el.role is Role.ACTIVE


# --- start-up: placement decides, not who started first ------------------------------

L = T.listen_time


def test_a_new_node_that_heard_nobody_listens_before_taking_free_authority():
    d = Driver()
    d.feed(Start(), 0.0)
    d.run_until(L - 0.001)
    assert d.el.role is Role.STANDBY and not d.of(Acquire)
    d.run_until(L + 0.005)
    assert d.el.role is Role.ACTIVE


def test_a_lower_ranked_node_defers_to_a_better_one_that_just_started():
    """b starts 30 ms after a and outranks it: b needs a listen time of its own to learn
    that; a, which has heard everyone, still leaves it that long (plus its stagger)."""
    d = Driver()
    d.feed(Start(), 0.0)
    d.hear("c", role=ROLE_STANDBY, priority=50, at=0.001)
    d.hear("b", role=ROLE_STANDBY, priority=200, at=0.030)
    deferred_until = 0.030 + L + T.advert_interval  # b's listen time, then a's stagger
    t = 0.030
    while t + T.standby_advert_interval < deferred_until:  # b and c keep advertising
        t += T.standby_advert_interval
        d.run_until(t)
        d.hear("b", role=ROLE_STANDBY, priority=200)
        d.hear("c", role=ROLE_STANDBY, priority=50)
    d.run_until(deferred_until - 0.001)
    assert not d.of(Acquire)
    d.run_until(deferred_until + 0.005)
    assert d.el.role is Role.ACTIVE  # b never took it: a does, late but live
