"""Per-gateway election: one ``Election`` per (gateway, node), sans-I/O.

Drive it with ``actions = election.handle(event, now)`` and call again with
``Tick()`` at ``election.next_deadline``. ``now`` is this node's monotonic
clock in seconds; the core never reads a clock, a socket or etcd itself.

Safety rests on one rule: the active keeps its datapath only while it has
*evidence* that no standby can have taken authority yet. Every takeover path
(challenge + depose, expired lease, VRRP fallback) needs a standby to not hear
any active for the suspect time ``S`` and then wait the challenge window ``W``.
Evidence is either a standby's echo of one of our adverts sent at ``a`` (that
standby cannot take over before ``a + S + W``; we need one from every peer) or
an etcd read at ``s`` showing no unanswered challenge (no takeover before
``s + W``). The active keeps its datapath until ``fenceDeadline`` past the
evidence, and its kernel state expires by itself at that same instant, so a
frozen or killed process is fenced by its kernel. docs/architecture.md has
the timelines.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, replace

from vipmgr.config.timers import Timers
from vipmgr.core.messages import (
    OK, REFUSED, ROLE_ACTIVE, ROLE_STANDBY, UNREACHABLE, Acquire, Action, Advert, Answer,
    Confirm, Cordoned, Depose, DropChallenge, EtcdResult, EtcdView, Event,
    GrantLease, HealthChanged, Heartbeat, KeepAlive, MembersChanged, Note, PostChallenge,
    Program, Release, RevokeLease, RoleChanged, SendAdvert, Shutdown, Start,
    SwitchoverRequested, Tick, Vacate, Watch, WatchUpdate, Withdraw,
)
from vipmgr.core.placement import rank_key

NEVER = -math.inf
ON_ETCD_LOSS = ("hold", "vrrp")
# Test-only switches that remove one protection, so the simulator can prove it matters.
UNSAFE_SWITCHES = frozenset({"challenge", "fence"})


class Role(enum.StrEnum):
    STANDBY = "standby"
    CHALLENGING = "challenging"    # suspects the active; challenge posted, window running
    ACQUIRING = "acquiring"        # authority free; acquire transaction in flight
    ACTIVE = "active"              # holds authority, datapath programmed under evidence
    FENCED = "fenced"              # may hold authority, evidence lapsed: datapath down
    RELEASING = "releasing"        # datapath down, release transaction in flight
    VRRP_ACTIVE = "vrrp-active"    # onEtcdLoss=vrrp fallback: active without etcd
    STOPPED = "stopped"


class Cause(enum.StrEnum):
    SUSPECTED = "suspected"
    PREEMPT = "preempt"
    FREE = "authority-free"
    ADOPT = "adopt-own-key"
    HEARD_ACTIVE = "heard-active"
    ANSWERED = "answered"
    SUPERSEDED = "superseded"
    WINDOW_EXPIRED = "window-expired"
    ACQUIRED = "acquired"
    CONFIRMED = "confirmed"
    EVIDENCE_LAPSED = "evidence-lapsed"
    PAUSED = "paused"
    LOST = "lost-authority"
    RELEASE = "release"
    RELEASED = "released"
    ETCD_UNREACHABLE = "etcd-unreachable"
    VRRP_TAKEOVER = "vrrp-takeover"
    VRRP_YIELD = "vrrp-yield"
    INELIGIBLE = "ineligible"
    STOP = "stop"


R, C = Role, Cause
# The state machine as data: (from, cause) -> to. Anything else raises IllegalTransition.
TRANSITIONS: dict[tuple[Role, Cause], Role] = {
    (R.STANDBY, C.SUSPECTED): R.CHALLENGING,
    (R.STANDBY, C.PREEMPT): R.CHALLENGING,
    (R.STANDBY, C.FREE): R.ACQUIRING,
    (R.STANDBY, C.ADOPT): R.FENCED,
    (R.STANDBY, C.VRRP_TAKEOVER): R.VRRP_ACTIVE,
    (R.STANDBY, C.STOP): R.STOPPED,
    (R.CHALLENGING, C.HEARD_ACTIVE): R.STANDBY,
    (R.CHALLENGING, C.ANSWERED): R.STANDBY,
    (R.CHALLENGING, C.SUPERSEDED): R.STANDBY,
    (R.CHALLENGING, C.INELIGIBLE): R.STANDBY,
    (R.CHALLENGING, C.ETCD_UNREACHABLE): R.STANDBY,
    (R.CHALLENGING, C.WINDOW_EXPIRED): R.ACQUIRING,
    (R.CHALLENGING, C.STOP): R.STOPPED,
    (R.ACQUIRING, C.ACQUIRED): R.ACTIVE,
    (R.ACQUIRING, C.SUPERSEDED): R.STANDBY,
    (R.ACQUIRING, C.ETCD_UNREACHABLE): R.STANDBY,
    (R.ACTIVE, C.EVIDENCE_LAPSED): R.FENCED,
    (R.ACTIVE, C.PAUSED): R.FENCED,
    (R.ACTIVE, C.LOST): R.STANDBY,
    (R.ACTIVE, C.RELEASE): R.RELEASING,
    (R.FENCED, C.CONFIRMED): R.ACTIVE,
    (R.FENCED, C.LOST): R.STANDBY,
    (R.FENCED, C.RELEASE): R.RELEASING,
    (R.FENCED, C.VRRP_TAKEOVER): R.VRRP_ACTIVE,
    (R.RELEASING, C.RELEASED): R.STANDBY,
    (R.RELEASING, C.ETCD_UNREACHABLE): R.STANDBY,
    (R.RELEASING, C.STOP): R.STOPPED,
    (R.VRRP_ACTIVE, C.CONFIRMED): R.ACTIVE,
    (R.VRRP_ACTIVE, C.LOST): R.STANDBY,
    (R.VRRP_ACTIVE, C.VRRP_YIELD): R.STANDBY,
    (R.VRRP_ACTIVE, C.INELIGIBLE): R.STANDBY,
    (R.VRRP_ACTIVE, C.STOP): R.STOPPED,
}
# onEtcdLoss=vrrp only: the active keeps serving like a VRRP master instead of fencing.
VRRP_TRANSITIONS: dict[tuple[Role, Cause], Role] = {
    (R.ACTIVE, C.EVIDENCE_LAPSED): R.VRRP_ACTIVE,
}
DATAPATH_ROLES = frozenset({Role.ACTIVE, Role.VRRP_ACTIVE})


class IllegalTransition(RuntimeError):
    pass


@dataclass(frozen=True)
class ElectionConfig:
    gateway: str
    node: str
    members: tuple[str, ...]         # every node that may become active for this gateway
    priority: int                    # own priority (placement.node_priority)
    timers: Timers = field(default_factory=Timers)
    on_etcd_loss: str = "hold"
    preempt: bool = False
    preempt_delay: float = 0.0
    unsafe: frozenset[str] = frozenset()  # test-only: UNSAFE_SWITCHES to disable

    def __post_init__(self) -> None:
        if self.on_etcd_loss not in ON_ETCD_LOSS:
            raise ValueError(f"on_etcd_loss must be one of {ON_ETCD_LOSS}")
        if not self.unsafe <= UNSAFE_SWITCHES:
            raise ValueError(f"unknown unsafe switches {set(self.unsafe) - UNSAFE_SWITCHES}")


@dataclass(slots=True)
class _Peer:
    advert: Advert
    heard_at: float
    since: float            # start of the current unbroken run of hearing it
    echo: float = NEVER     # latest stamp of ours this peer echoed while we were active


class Election:
    """The decision logic of one node for one gateway. See the module docstring."""

    def __init__(self, config: ElectionConfig):
        self.cfg = config
        t = config.timers
        self._S = t.suspect_time
        self._W = t.challenge_window
        self._F = t.fence_deadline
        self._D = t.deadman_timeout
        self._confirm_lead = t.confirm_lead
        self._challenge_backoff = 5 * (self._S + self._W)
        # We always have a timer within standbyAdvertInterval; a longer silence is a pause.
        self._pause_gap = 2 * t.standby_advert_interval + t.advert_interval
        self._listen = t.listen_time
        # Challenged by a node that hears others, the holder answers if it heard a peer
        # within _answer_quiet and is the isolated one once it heard none for _deaf_after.
        self._answer_quiet = self._S - t.advert_interval
        self._deaf_after = max(self._S, t.standby_advert_interval + t.advert_interval)
        self._others = tuple(m for m in config.members if m != config.node)
        # Removed members whose echo we still require until the given instant (our clock).
        self._leaving: dict[str, float] = {}
        # Evidence earned before a member was added (it has not echoed yet): serve until.
        self._carried = NEVER
        self.role = Role.STANDBY
        self.epoch = 0
        self.view = EtcdView(revision=0)
        self.lease = 0
        self.etcd_ok = False
        self.healthy = True
        self.cordoned = False
        self.stopping = False
        self._started = False
        self._started_at = NEVER
        self._deaf_from = NEVER  # silence before this (start, a pause) proves nothing
        self._op = 0
        self._pending: dict[int, tuple[str, float]] = {}  # op_id -> (kind, issued at)
        self._peers: dict[str, _Peer] = {}
        self._active_heard_at = NEVER      # last advert from any node claiming active
        self._active_node: str | None = None
        self._etcd_evidence = NEVER
        self._confirmed_at = NEVER  # when the last Confirm was sent
        self._timers: dict[str, float] = {}
        self._challenge: tuple[int, int, bool] | None = None  # (epoch, term_rev, preempt)
        self._challenge_rev = 0
        self._challenge_round = 0
        self._active_stamp = 0.0
        self._answering: set[int] = set()
        self._free_since: tuple[int, float] | None = None  # (term_rev, since)
        self._backoff_until = NEVER
        self._preempt_since = NEVER
        self._out: list[Action] = []
        self._now = 0.0

    # --- public ----------------------------------------------------------------

    @property
    def next_deadline(self) -> float | None:
        return min(self._timers.values()) if self._timers else None

    @property
    def eligible(self) -> bool:
        return self.healthy and not self.cordoned and not self.stopping

    def handle(self, event: Event, now: float) -> list[Action]:
        """Feed one event; returns the actions to execute, in order."""
        self._out = out = []
        if self.role is Role.STOPPED:
            return out
        if self._started and now - self._now > self._pause_gap:
            self._paused(now - self._now)
        self._now = now
        _HANDLERS[type(event)](self, event)
        if self._started and self.role is not Role.STOPPED:
            self._fire_due()
        return out

    def validity(self) -> float:
        """Until when (our clock) we may keep the datapath: fenceDeadline past the evidence."""
        if "fence" in self.cfg.unsafe:
            return math.inf
        best = max(self._etcd_evidence + self._F, self._carried)
        required = self._others + tuple(m for m, until in self._leaving.items()
                                        if until > self._now)
        if required:
            peers = self._peers
            oldest = min((peers[m].echo if m in peers else NEVER) for m in required)
            best = max(best, oldest + self._S + self._F)
        return best

    # --- plumbing --------------------------------------------------------------

    def _paused(self, gap: float) -> None:
        """We were not scheduled for a while (freeze, swap): what we heard is stale, so
        listen again for a suspect time before any takeover. The active needs nothing
        here: its evidence already lapsed and etcd must confirm it first."""
        self._emit(Note("paused", f"{gap * 1e3:.0f} ms"))
        self._deaf_from = self._now + gap
        if self.role not in DATAPATH_ROLES:
            self._active_heard_at = self._now + gap


    def _emit(self, action: Action) -> None:
        self._out.append(action)

    def _next_op(self) -> int:
        self._op += 1
        return self._op

    def _etcd(self, kind: str, cls, **kw) -> int:
        op_id = self._next_op()
        self._pending[op_id] = (kind, self._now)
        self._emit(cls(op_id=op_id, **kw))
        return op_id

    def _in_flight(self, kind: str) -> bool:
        return any(k == kind for k, _ in self._pending.values())

    def _goto(self, cause: Cause, detail: str = "") -> None:
        new = None
        if self.cfg.on_etcd_loss == "vrrp":
            new = VRRP_TRANSITIONS.get((self.role, cause))
        if new is None:
            new = TRANSITIONS.get((self.role, cause))
        if new is None:
            raise IllegalTransition(f"{self.cfg.gateway}/{self.cfg.node}: no transition "
                                    f"from {self.role} on {cause}")
        old, self.role = self.role, new
        self._emit(RoleChanged(old.value, new.value, cause.value, detail))
        if old in DATAPATH_ROLES and new not in DATAPATH_ROLES:
            self._emit(Withdraw())
        if new is not Role.CHALLENGING:
            self._timers.pop("window", None)
        if new in (Role.ACTIVE, Role.VRRP_ACTIVE):
            self._timers["advert"] = self._now  # announce at once
        self._timers.pop("act", None)

    # --- events ----------------------------------------------------------------

    def _on_start(self, _: Start) -> None:
        self._started = True
        # Whatever a previous incarnation left in the kernel is not ours to trust.
        self._emit(Withdraw())
        self._etcd("lease", GrantLease, ttl=self.cfg.timers.lease_ttl)
        self._etcd("watch", Watch)
        self._active_heard_at = self._now  # listen for a suspect time before acting
        self._started_at = self._deaf_from = self._now
        self._timers["advert"] = self._now
        self._timers["keepalive"] = self._now + self.cfg.timers.lease_ttl / 3

    def _on_tick(self, _: Tick) -> None:
        """Only time passed: _fire_due does the work."""

    def _on_heartbeat(self, ev: Heartbeat) -> None:
        adv = ev.advert
        now = self._now
        peer = self._peers.get(adv.node)
        if peer is None:
            peer = self._peers[adv.node] = _Peer(adv, now, now)
        else:
            if now - peer.heard_at >= self._listen:
                peer.since = now
            peer.advert, peer.heard_at = adv, now
        if "deaf" in self._timers and adv.node in self._others:
            # A challenge waits for word on our own hearing: this is it.
            del self._timers["deaf"]
            self._holder_challenged()
        if adv.echo_node == self.cfg.node and adv.echo_stamp <= now \
                and self.role in (Role.ACTIVE, Role.VRRP_ACTIVE) and adv.echo_stamp > peer.echo:
            peer.echo = adv.echo_stamp
        if adv.role != ROLE_ACTIVE:
            return
        self._active_heard_at = now
        self._active_node = adv.node
        self._active_stamp = adv.stamp
        role = self.role
        if role is Role.CHALLENGING and not self._in_flight("depose"):
            self._drop_challenge()
            self._goto(Cause.HEARD_ACTIVE, adv.node)
        elif role is Role.ACTIVE and adv.epoch > self.epoch:
            self._lose(f"{adv.node} is active with newer epoch {adv.epoch}")
        elif role is Role.VRRP_ACTIVE and self._vrrp_outranked_by(adv):
            self._goto(Cause.VRRP_YIELD, adv.node)

    def _vrrp_outranked_by(self, adv: Advert) -> bool:
        """A VRRP fallback active yields to an etcd-backed active or a better VRRP master."""
        if adv.epoch > 0 and adv.etcd_ok:
            return True
        return rank_key(adv.priority, adv.node) < rank_key(self.cfg.priority, self.cfg.node)

    def _on_watch(self, ev: WatchUpdate) -> None:
        self.etcd_ok = True
        self._absorb(ev.view)

    def _etcd_back(self) -> None:
        """etcd answers again: a VRRP fallback active without authority gives way to it."""
        if self.role is Role.VRRP_ACTIVE and not self.epoch:
            self._goto(Cause.VRRP_YIELD, "etcd reachable again")

    def _on_result(self, ev: EtcdResult) -> None:
        kind, issued = self._pending.pop(ev.op_id, ("stale", self._now))
        self.etcd_ok = ev.outcome != UNREACHABLE
        _RESULT_HANDLERS[kind](self, ev, issued)
        if ev.view is not None:
            self._absorb(ev.view)
        elif self.etcd_ok:
            self._etcd_back()

    def _on_health(self, ev: HealthChanged) -> None:
        self.healthy = ev.ok
        self._eligibility_changed("health check failed")

    def _on_cordon(self, ev: Cordoned) -> None:
        self.cordoned = ev.on
        self._eligibility_changed("cordoned")

    def _on_shutdown(self, _: Shutdown) -> None:
        self.stopping = True
        if self.role in (Role.ACTIVE, Role.FENCED):
            self._release(None, "shutdown")
        elif self.role not in (Role.RELEASING, Role.ACQUIRING):
            self._stop()

    def _on_members(self, ev: MembersChanged) -> None:
        """Live membership/priority change; role, epoch and lease stay.

        Echo evidence needs every member's echo, so the rule must cover the nodes
        that may take over: a removed member may not know yet and could still
        challenge, so its echo stays required for ``S + W`` (long enough for it to
        learn from the store and leave); an added member that has not echoed yet
        would void the echo evidence at once, so what we had earned is carried
        (it was just as valid a moment ago) while the etcd confirm it schedules
        takes over. An etcd confirm sees every challenger, members or not.
        """
        me = self.cfg.node
        if me not in ev.members:
            raise ValueError(f"{self.cfg.gateway}: members {ev.members} lack this node {me}; "
                             "a node that is no longer selected leaves with Shutdown")
        old = set(self._others)
        members = tuple(dict.fromkeys(ev.members))
        others = tuple(m for m in members if m != me)
        if self.role is Role.ACTIVE and set(others) - old:
            self._carried = max(self._carried, self.validity())
        now = self._now
        self._leaving = {m: until for m, until in self._leaving.items() if until > now}
        for gone in old - set(others):
            self._leaving[gone] = now + self._S + self._W
        for back in others:
            self._leaving.pop(back, None)
        priority = self.cfg.priority if ev.priority is None else ev.priority
        self.cfg = replace(self.cfg, members=members, priority=priority)
        self._others = others
        self._emit(Note("members-changed", f"{','.join(members)} priority {priority}"))

    def _on_switchover(self, ev: SwitchoverRequested) -> None:
        if self.role in (Role.ACTIVE, Role.FENCED) and ev.target != self.cfg.node:
            self._release(ev.target or self._best_peer(), "switchover")
        else:
            self._emit(Note("switchover-ignored", f"role {self.role}"))

    # --- etcd results ----------------------------------------------------------

    def _result_stale(self, ev: EtcdResult, issued: float) -> None:
        """Fire-and-forget ops (revoke, vacate, drop) and results from before a reset."""

    def _result_watch(self, ev: EtcdResult, issued: float) -> None:
        """A watch reports only when it ends (broken): re-establish it shortly."""
        self._timers["rewatch"] = self._now + self.cfg.timers.etcd_timeout

    def _result_lease(self, ev: EtcdResult, issued: float) -> None:
        if ev.outcome == OK:
            self.lease = ev.lease

    def _result_keepalive(self, ev: EtcdResult, issued: float) -> None:
        if ev.outcome == REFUSED:
            self.lease = 0
            if self.role in (Role.ACTIVE, Role.FENCED) or (self.role is Role.VRRP_ACTIVE
                                                          and self.epoch):
                self._lose("own lease expired")

    def _result_challenge(self, ev: EtcdResult, issued: float) -> None:
        if self.role is not Role.CHALLENGING:
            if ev.outcome == OK:
                self._drop_challenge()
            return
        if ev.outcome == OK:
            self._challenge_rev = ev.revision
            self._timers["window"] = self._now + (0.0 if "challenge" in self.cfg.unsafe
                                                  else self._W)
        elif ev.outcome == REFUSED:
            self._goto(Cause.SUPERSEDED, "authority changed before the challenge")
        else:
            self._goto(Cause.ETCD_UNREACHABLE, "posting challenge")

    def _result_depose(self, ev: EtcdResult, issued: float) -> None:
        if self.role is not Role.CHALLENGING:
            return
        epoch = self._challenge[0] if self._challenge else 0
        if ev.outcome == OK:
            holder_lease = self.view.holder_lease if self.view.epoch == epoch else 0
            self._goto(Cause.WINDOW_EXPIRED, f"deposed epoch {epoch}")
            self._challenge = None
            if holder_lease:
                self._etcd("revoke", RevokeLease, lease=holder_lease)
            self._etcd("acquire", Acquire, lease=self.lease, term_rev=ev.revision)
        elif ev.outcome == REFUSED:
            self._drop_challenge()
            self._goto(Cause.SUPERSEDED, "answered or changed before the window ended")
        else:
            self._drop_challenge()
            self._goto(Cause.ETCD_UNREACHABLE, "deposing")

    def _result_acquire(self, ev: EtcdResult, issued: float) -> None:
        if self.role is not Role.ACQUIRING:
            return
        if ev.outcome == OK:
            self.epoch = ev.revision
            self._etcd_evidence = issued  # no challenge of this epoch can predate it
            self._carried = NEVER
            for peer in self._peers.values():
                peer.echo = NEVER
            self._goto(Cause.ACQUIRED, f"epoch {self.epoch}")
            if not self.eligible:
                self._release(None, "ineligible while acquiring")
        elif ev.outcome == REFUSED:
            self._goto(Cause.SUPERSEDED, "someone else acquired")
        else:
            self._goto(Cause.ETCD_UNREACHABLE, "acquiring")
        if self.stopping and self.role is Role.STANDBY:
            self._stop()

    def _result_confirm(self, ev: EtcdResult, issued: float) -> None:
        if self.role not in (Role.ACTIVE, Role.FENCED, Role.VRRP_ACTIVE):
            return
        if ev.outcome == UNREACHABLE:
            if self.role is Role.FENCED and self.cfg.on_etcd_loss == "vrrp" and self.eligible \
                    and self._silent_for(self._S):
                self._goto(Cause.VRRP_TAKEOVER, "etcd unreachable, no other active heard")
        elif ev.outcome == REFUSED:
            self._lose("confirm refused")
        elif ev.outcome == OK and ev.view is not None:
            if not self._handle_challenges(ev.view):
                return  # released, or answers in flight: confirm again after them
            self._etcd_evidence = max(self._etcd_evidence, issued)
            until = min(self.validity(), self._now + self._D)
            if self.role is Role.ACTIVE and until > self._now:
                # Extend the kernel's dead-man now, not at the next advert: the old
                # `until` may fall before that tick (a needless datapath gap).
                self._emit(Program(until))
            if self.role is not Role.ACTIVE and not self._silent_for(self._S):
                return  # another node still serves (VRRP fallback): it yields to etcd first
            if self.role is not Role.ACTIVE and self.eligible:
                self._goto(Cause.CONFIRMED, "etcd confirmed the authority")
            elif self.role is not Role.ACTIVE:
                self._release(None, "ineligible")

    def _result_answer(self, ev: EtcdResult, issued: float) -> None:
        if not self._in_flight("answer"):
            self._answering.clear()
        if ev.outcome == REFUSED and self.role in (Role.ACTIVE, Role.FENCED) \
                and self.view.epoch != self.epoch:
            self._lose("answer refused: authority changed")

    def _result_release(self, ev: EtcdResult, issued: float) -> None:
        if self.role is not Role.RELEASING:
            return
        self.epoch = 0
        if self.stopping:
            self._stop()
        elif ev.outcome == UNREACHABLE:
            self._goto(Cause.ETCD_UNREACHABLE, "releasing")
        else:
            self._goto(Cause.RELEASED)

    # --- decisions -------------------------------------------------------------

    def _absorb(self, view: EtcdView) -> None:
        """Take a newer etcd snapshot and react to what changed."""
        if view.revision < self.view.revision:
            return
        self.view = view
        self._etcd_back()
        role = self.role
        if role in (Role.ACTIVE, Role.FENCED) or (role is Role.VRRP_ACTIVE and self.epoch):
            if view.epoch != self.epoch:
                self._lose(f"authority is now epoch {view.epoch}")
            else:
                self._handle_challenges(view)
        elif role is Role.CHALLENGING and self._challenge is not None:
            epoch, term_rev, _ = self._challenge
            mine = next((c for c in view.challenges if c.challenger == self.cfg.node
                         and c.round == self._challenge_round), None)
            if self._in_flight("depose"):
                return
            if view.epoch != epoch or (epoch == 0 and view.term_rev != term_rev):
                self._drop_challenge()
                self._goto(Cause.SUPERSEDED, f"authority is now epoch {view.epoch}")
            elif mine is not None and mine.answered:
                self._emit(Note("heartbeat-path-broken", f"{view.holder} answered"))
                self._drop_challenge()
                self._backoff_until = self._now + self._challenge_backoff
                self._goto(Cause.ANSWERED, str(view.holder))

    def _handle_challenges(self, view: EtcdView) -> bool:
        """As holder: answer, yield or hand over. True when nothing is left pending.

        The isolated-side rule needs our hearing *now*, not within the standby horizon
        (which still lists peers long after our own link died). Had our heartbeat link
        died, the challenger lost at most our last advert before the cut and then waited
        S, so by its challenge we would have heard nobody for ``S - advertInterval``: a
        peer heard more recently proves our receive path outlived its silence (the path
        is broken, not us: answer). No peer for ``_deaf_after`` makes us the deaf one
        (yield to the challenger). In between, wait for the next advert, within W."""
        settled = True
        isolated: bool | None = False
        if len(self._others) > 1 and self.role in (Role.ACTIVE, Role.FENCED) and any(
                ch.hears > 0 and not ch.answered and ch.epoch == self.epoch
                and ch.challenger != self.cfg.node for ch in view.challenges):
            isolated = self._isolated()
        for ch in view.challenges:
            if ch.answered or ch.epoch != self.epoch or ch.challenger == self.cfg.node:
                continue
            settled = False
            if ch.preempt and ch.priority > self.cfg.priority and self.role is Role.ACTIVE:
                self._release(ch.challenger, "preempted")
                return False
            if ch.hears > 0 and isolated:
                self._release(ch.challenger, f"isolated: heard no peer for "
                              f"{self._deaf_after * 1e3:.0f} ms, {ch.challenger} hears "
                              f"{ch.hears}")
                return False
            if ch.hears > 0 and isolated is None:
                continue
            if ch.rev not in self._answering:
                self._answering.add(ch.rev)
                self._etcd("answer", Answer, epoch=self.epoch, challenge=ch)
        return settled

    def _isolated(self) -> bool | None:
        """True: no member heard for ``_deaf_after`` (counted from Start or a pause at
        the earliest); False: one heard within ``_answer_quiet``; None: not known yet,
        decided by the next member advert or the "deaf" timer."""
        peers, now = self._peers, self._now
        last = max((peers[m].heard_at for m in self._others if m in peers), default=NEVER)
        deaf_at = max(last, self._deaf_from) + self._deaf_after
        if now - last < self._answer_quiet or now >= deaf_at:
            self._timers.pop("deaf", None)
            return now >= deaf_at
        self._timers["deaf"] = deaf_at
        return None

    def _holder_challenged(self) -> None:
        """Re-decide pending challenges (a member was heard, or the deaf time passed)."""
        if self.role in (Role.ACTIVE, Role.FENCED) and self.view.epoch == self.epoch:
            self._handle_challenges(self.view)

    def _eligibility_changed(self, why: str) -> None:
        if self.eligible:
            return
        role = self.role
        if role in (Role.ACTIVE, Role.FENCED):
            self._release(None, why)
        elif role is Role.CHALLENGING and not self._in_flight("depose"):
            self._drop_challenge()
            self._goto(Cause.INELIGIBLE, why)
        elif role is Role.VRRP_ACTIVE:
            self._goto(Cause.INELIGIBLE, why)

    def _release(self, successor: str | None, why: str) -> None:
        self._goto(Cause.RELEASE, why)
        self._etcd("release", Release, epoch=self.epoch, successor=successor)

    def _lose(self, why: str) -> None:
        view = self.view
        self._goto(Cause.LOST, why)
        self.epoch = 0
        self._carried = NEVER  # earned for that epoch only
        if view.epoch == 0 and view.term_node == self.cfg.node and not view.vacated \
                and view.term_rev:
            self._etcd("vacate", Vacate, term_rev=view.term_rev)

    def _stop(self) -> None:
        if self._challenge is not None:
            self._drop_challenge()
        self._goto(Cause.STOP, "shutdown")
        if self.lease:
            self._etcd("revoke", RevokeLease, lease=self.lease)
        self._timers.clear()

    def _drop_challenge(self) -> None:
        self._challenge = None
        self._etcd("drop", DropChallenge)

    def _silent_for(self, span: float) -> bool:
        """No active heard for ``span``; compared the way the timers add up (heard + span),
        so a timer set for that instant finds it true when it fires."""
        return self._now >= self._active_heard_at + span

    def _heard_peers(self) -> tuple[str, ...]:
        now, k, t = self._now, self.cfg.timers.suspect_after, self.cfg.timers
        out = []
        peers = self._peers
        for name in self._others:
            peer = peers.get(name)
            if peer is None:
                continue
            interval = t.advert_interval if peer.advert.role == ROLE_ACTIVE \
                else t.standby_advert_interval
            if now - peer.heard_at < k * interval:
                out.append(name)
        return tuple(out)

    def _best_peer(self) -> str | None:
        """The best-ranked eligible standby we hear: the natural switchover target."""
        heard = set(self._heard_peers())
        best = min((rank_key(p.advert.priority, name) for name, p in self._peers.items()
                    if name in heard and p.advert.eligible), default=None)
        return best[1] if best else None

    def _outranked_by(self) -> list[_Peer]:
        """The eligible standbys we hear that rank better than us."""
        mine = rank_key(self.cfg.priority, self.cfg.node)
        now, horizon, peers = self._now, self._listen, self._peers
        return [p for p in (peers[m] for m in self._others if m in peers)
                if now - p.heard_at < horizon and p.advert.eligible
                and p.advert.role != ROLE_ACTIVE
                and rank_key(p.advert.priority, p.advert.node) < mine]

    def _rank(self) -> int:
        """0 when no eligible standby we hear outranks us: it acts first, others skew."""
        return len(self._outranked_by())

    def _listen_until(self, vacated_by: str | None) -> float:
        """Placement needs ranks: act on free authority only once we know who outranks
        us (every member heard since Start, else the listen time since Start), and give
        a better-ranked peer we only just began to hear (it may have just started) the
        same listen time to learn its own rank and act first — unless it is the one
        that just gave the authority up (it lets others go first)."""
        until = NEVER if all(m in self._peers for m in self._others) \
            else self._started_at + self._listen
        return max([until] + [p.since + self._listen for p in self._outranked_by()
                              if p.advert.node != vacated_by])

    def _reconsider(self) -> None:
        """Standby: decide whether to acquire, challenge, preempt or fall back to VRRP."""
        if self.role is not Role.STANDBY or not self._started:
            return
        timers = self._timers
        timers.pop("act", None)
        view, me = self.view, self.cfg.node
        if not view.revision:
            return  # no snapshot of etcd yet
        if view.holder == me:
            if view.holder_lease == self.lease and self.lease and self.eligible:
                self._goto(Cause.ADOPT, f"epoch {view.epoch} is bound to our lease")
                self.epoch = view.epoch
                self._etcd("confirm", Confirm, epoch=self.epoch)
            elif self.etcd_ok and not self._in_flight("release"):
                # A previous incarnation's key (or ours while ineligible): our kernel
                # state was withdrawn at start, so handing it over is safe.
                self._etcd("release", Release, epoch=view.epoch, successor=None)
            return
        if not self.eligible or not self.lease:
            return
        if not self.etcd_ok:
            if self.cfg.on_etcd_loss == "vrrp":
                timers["act"] = self._active_heard_at + (self._S + self._W) \
                    + self._rank() * self.cfg.timers.advert_interval
            return
        adv = self.cfg.timers.advert_interval
        if view.epoch == 0 and (view.vacated or view.term_rev == 0):
            if not self._silent_for(self._S) \
                    and self._active_node not in (None, view.vacated_by, me):
                return  # a VRRP fallback active still serves: let it yield first
            if self._free_since is None or self._free_since[0] != view.term_rev:
                self._free_since = (view.term_rev, self._now)
            if view.successor == me:
                timers["act"] = self._free_since[1]
                return
            since = self._free_since[1]
            if view.vacated_by == me:
                since += self._S + self._W  # we just handed it over: others first
            timers["act"] = max(since, self._listen_until(view.vacated_by)) \
                + (self._rank() + (1 if view.successor else 0)) * adv
            return
        if self._silent_for(self._S):
            timers["act"] = max(self._active_heard_at + self._S, self._backoff_until) \
                + self._rank() * adv
        elif self.cfg.preempt and self._active_node in self._peers:
            active = self._peers[self._active_node].advert
            if self.cfg.priority > active.priority and self._rank() == 0:
                if self._preempt_since == NEVER:
                    self._preempt_since = self._now
                timers["act"] = max(self._preempt_since + self.cfg.preempt_delay,
                                    self._backoff_until)
                return
        self._preempt_since = NEVER
        if not self._silent_for(self._S):
            timers["suspect"] = self._active_heard_at + self._S

    def _act(self) -> None:
        """The standby's decision timer fired: re-check and move."""
        view = self.view
        if self.role is not Role.STANDBY or not self.eligible or not self.lease:
            return
        if not self.etcd_ok:
            if self.cfg.on_etcd_loss == "vrrp" \
                    and self._silent_for(self._S + self._W):
                self.epoch = 0
                self._goto(Cause.VRRP_TAKEOVER, "etcd unreachable, no active heard")
            return
        if view.epoch == 0 and (view.vacated or view.term_rev == 0):
            self._goto(Cause.FREE, f"term {view.term_rev} vacated={view.vacated}")
            self._etcd("acquire", Acquire, lease=self.lease, term_rev=view.term_rev)
            return
        suspect = self._silent_for(self._S)
        if suspect or self._preempt_since != NEVER:
            preempt = not suspect
            self._challenge = (view.epoch, view.term_rev, preempt)
            self._goto(Cause.PREEMPT if preempt else Cause.SUSPECTED,
                       f"epoch {view.epoch} holder {view.holder}")
            self._challenge_rev = 0
            self._challenge_round = self._etcd(
                "challenge", PostChallenge, lease=self.lease, epoch=view.epoch,
                term_rev=view.term_rev, hears=len(self._heard_peers()),
                priority=self.cfg.priority, preempt=preempt)

    def _window_end(self) -> None:
        if self.role is not Role.CHALLENGING or self._challenge is None \
                or self._in_flight("depose"):
            return
        epoch, term_rev, preempt = self._challenge
        if preempt:
            self._drop_challenge()
            self._backoff_until = self._now + self._challenge_backoff
            self._goto(Cause.ANSWERED, "preempt request not honoured")
            return
        self._etcd("depose", Depose, epoch=epoch, term_rev=term_rev,
                   challenge_rev=self._challenge_rev)

    # --- timers ----------------------------------------------------------------

    def _fire_due(self) -> None:
        timers, now = self._timers, self._now
        for _ in range(8):  # a handler may make another timer due; bounded
            if self.role is Role.STANDBY:
                self._reconsider()
            else:
                self._schedule_holder_timers()
            due = [name for name, at in timers.items() if at <= now]
            if not due:
                return
            for name in due:
                if timers.get(name, math.inf) <= now:
                    del timers[name]
                    _TIMER_HANDLERS[name](self)

    def _schedule_holder_timers(self) -> None:
        timers = self._timers
        # While a challenge waits for word on our hearing ("deaf"), a confirmation
        # could not extend the evidence anyway (an unanswered challenge is pending).
        busy = self._in_flight("confirm") or self._in_flight("answer") or "deaf" in timers
        if self.role is Role.ACTIVE:
            v = self.validity()
            timers["lapse"] = v
            if busy:
                timers.pop("confirm", None)
            else:
                timers["confirm"] = v - self._confirm_lead
            return
        timers.pop("lapse", None)
        if self.role in (Role.FENCED, Role.VRRP_ACTIVE) and self.epoch and not busy:
            timers.setdefault("confirm", self._confirmed_at + self.cfg.timers.advert_interval)
        else:
            timers.pop("confirm", None)

    def _tick_advert(self) -> None:
        now, t = self._now, self.cfg.timers
        role = self.role
        active = role in DATAPATH_ROLES
        if role is Role.ACTIVE:
            until = min(self.validity(), now + self._D)
            if until <= now:
                self._lapse()
                active = self.role in DATAPATH_ROLES
            else:
                self._emit(Program(until))
        if self.role is Role.VRRP_ACTIVE:
            self._emit(Program(now + self._D))
        echo_node, echo_stamp = None, 0.0
        if self.role is Role.STANDBY and not self._silent_for(self._S):
            echo_node, echo_stamp = self._active_node, self._active_stamp
        self._emit(SendAdvert(Advert(
            gateway=self.cfg.gateway, node=self.cfg.node,
            role=ROLE_ACTIVE if active else ROLE_STANDBY, epoch=self.epoch,
            priority=0 if self.role is Role.RELEASING else self.cfg.priority,
            eligible=self.eligible, etcd_ok=self.etcd_ok, heard=self._heard_peers(),
            stamp=now, echo_node=echo_node, echo_stamp=echo_stamp)))
        self._timers["advert"] = now + (t.advert_interval if active else
                                        t.standby_advert_interval)

    def _lapse(self) -> None:
        validity = self.validity()
        if self.role is not Role.ACTIVE or validity > self._now:
            return
        # Noticed late means we were paused (frozen, swapped out): whatever we knew is
        # stale, so even the VRRP fallback must wait for etcd's word.
        on_time = self._now - validity <= self.cfg.timers.advert_interval
        if self.cfg.on_etcd_loss == "vrrp" and not self.etcd_ok and on_time:
            self._goto(Cause.EVIDENCE_LAPSED, "no proof from peers or etcd: VRRP fallback")
        elif self.cfg.on_etcd_loss == "vrrp":
            self._goto(Cause.PAUSED, "woke up past the fence deadline")
        else:
            self._goto(Cause.EVIDENCE_LAPSED, "no proof from peers or etcd within "
                                              "fenceDeadline")

    def _tick_confirm(self) -> None:
        if self.role in (Role.ACTIVE, Role.FENCED, Role.VRRP_ACTIVE) and self.epoch \
                and not self._in_flight("confirm") and not self._in_flight("answer"):
            self._confirmed_at = self._now
            self._etcd("confirm", Confirm, epoch=self.epoch)

    def _tick_keepalive(self) -> None:
        t = self.cfg.timers
        if not self.lease:
            if not self._in_flight("lease"):
                self._etcd("lease", GrantLease, ttl=t.lease_ttl)
        elif not self._in_flight("keepalive"):
            self._etcd("keepalive", KeepAlive, lease=self.lease)
        self._timers["keepalive"] = self._now + (t.lease_ttl / 3 if self.etcd_ok and self.lease
                                                 else 2 * t.etcd_timeout)

    def _tick_rewatch(self) -> None:
        self._etcd("watch", Watch)

    def _wake(self) -> None:
        """A wake-up only (e.g. when suspicion starts): _fire_due re-evaluates."""


_HANDLERS = {
    Start: Election._on_start,
    Tick: Election._on_tick,
    Heartbeat: Election._on_heartbeat,
    EtcdResult: Election._on_result,
    WatchUpdate: Election._on_watch,
    HealthChanged: Election._on_health,
    Cordoned: Election._on_cordon,
    Shutdown: Election._on_shutdown,
    SwitchoverRequested: Election._on_switchover,
    MembersChanged: Election._on_members,
}
_RESULT_HANDLERS = {
    "stale": Election._result_stale,
    "watch": Election._result_watch,
    "lease": Election._result_lease,
    "keepalive": Election._result_keepalive,
    "revoke": Election._result_stale,
    "challenge": Election._result_challenge,
    "depose": Election._result_depose,
    "acquire": Election._result_acquire,
    "confirm": Election._result_confirm,
    "answer": Election._result_answer,
    "release": Election._result_release,
    "vacate": Election._result_stale,
    "drop": Election._result_stale,
}
_TIMER_HANDLERS = {
    "advert": Election._tick_advert,
    "act": Election._act,
    "window": Election._window_end,
    "lapse": Election._lapse,
    "confirm": Election._tick_confirm,
    "keepalive": Election._tick_keepalive,
    "rewatch": Election._tick_rewatch,
    "suspect": Election._wake,
    "deaf": Election._holder_challenged,
}

__all__ = ["Election", "ElectionConfig", "Role", "Cause", "TRANSITIONS", "VRRP_TRANSITIONS",
           "IllegalTransition"]
