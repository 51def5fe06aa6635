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

Where each rule lives: ``roles.py`` (roles, causes, the table of moves and their
entry/exit effects), ``peers.py`` (what we hear), ``guards.py`` (the named
conditions of the moves), ``standby.py`` (acquire, challenge, preempt, VRRP
fallback), ``holder.py`` (evidence, fence, challenges, etcd-cut handover),
``results.py`` (etcd results and snapshots), ``lifecycle.py`` (health, cordon,
membership, switchover, shutdown), ``timers.py`` (named deadlines). This module
is the machine that holds the state, dispatches events, results and timers, and
treats a long gap between calls as a pause (``_paused``).
"""

from __future__ import annotations

import math

from vipmgr.core.config import ON_ETCD_LOSS, UNSAFE_SWITCHES, ElectionConfig
from vipmgr.core.guards import Guards
from vipmgr.core.holder import Holder
from vipmgr.core.lifecycle import Lifecycle
from vipmgr.core.messages import (
    NoteKind,
    UNREACHABLE, Action, AdvertNow, Cordoned, EtcdResult, EtcdView, Event, GrantLease, HealthChanged,
    Heartbeat, MembersChanged, Note, RoleChanged, Shutdown, Start, SwitchoverRequested, Tick,
    Watch, WatchUpdate, Withdraw, ROLE_ACTIVE,
)
from vipmgr.core.peers import NEVER, Hearing, _Peer
from vipmgr.core.results import EtcdResults
from vipmgr.core.roles import (
    CLEARS_TIMER, DATAPATH_ROLES, ON_ENTER, ON_EXIT, TRANSITIONS, VRRP_TRANSITIONS, Cause, Effect,
    IllegalTransition, Role,
)
from vipmgr.core.standby import Standby
from vipmgr.core.timers import TimerWheel


class Election(Hearing, Guards, Holder, Standby, EtcdResults, Lifecycle, TimerWheel):
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
        # within _answer_quiet and is the isolated one once it heard none for _deaf_after:
        # three standby adverts of every member lost (VRRP's master-down count), not one
        # or two, which 20 % random loss drops together on ~1 challenge in 150. That also
        # outlasts _pause_gap, so a loop stall alone cannot look like deafness (a longer
        # one is a pause and restarts the count), and it ends before the challenger's
        # window does (the release beats the depose).
        self._answer_quiet = self._S - t.advert_interval
        self._deaf_after = max(self._S, min(3 * t.standby_advert_interval,
                                            self._S + self._W - t.etcd_timeout))
        # A VRRP fallback active's kernel state lives deadmanTimeout past its last advert
        # (its clock): heard within this, it may still be effective.
        self._fallback_horizon = max(self._S, self._D * t.drift_factor)
        # An active cut from etcd this long (several retries, so never one slow reply)
        # hands over to a peer that reaches etcd: its lease, last renewed at most
        # leaseTTL/3 before the first failed request, outlives the handover by about
        # leaseTTL/3 - (W + a few round trips), so the workers always see a holder.
        self._handover_after = t.lease_ttl / 3
        self._etcd_failing_since: float | None = None  # first unanswered request since etcd last answered
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
        # VRRP fallback: when the dead-man we last programmed expires (each of its advert
        # ticks pushes it on; entering the role programs at once, in the same call).
        self._fallback_until = math.inf
        self._active_node: str | None = None
        self._holder_withdrew: str | None = None  # it said so, cut from etcd (handover)
        self._etcd_peer_heard_at = NEVER  # last heard an eligible peer that reaches etcd
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
        self._eligible_since = 0.0  # Start sets it; eligibility regained resets it
        self._ranks_since = NEVER   # our priority last changed (placement recomputed)
        self._out: list[Action] = []
        self._now = 0.0

    # --- public -----------------------------------------------------------------

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
        if self.role is Role.VRRP_ACTIVE and now >= self._fallback_until:
            self._fallback_expired()
        _HANDLERS[type(event)](self, event)
        if self._started and self.role is not Role.STOPPED:
            self._fire_due()
        return out

    # --- plumbing ---------------------------------------------------------------

    def _paused(self, gap: float) -> None:
        """We were not scheduled for a while (freeze, swap): what we heard is stale, so
        listen again for a suspect time before any takeover. The active needs nothing
        here: its evidence already lapsed and etcd must confirm it first."""
        self._emit(Note(NoteKind.PAUSED, f"{gap * 1e3:.0f} ms"))
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
        if self._vrrp_policy():
            new = VRRP_TRANSITIONS.get((self.role, cause))
        if new is None:
            new = TRANSITIONS.get((self.role, cause))
        if new is None:
            raise IllegalTransition(f"{self.cfg.gateway}/{self.cfg.node}: no transition "
                                    f"from {self.role} on {cause}")
        old, self.role = self.role, new
        self._emit(RoleChanged(old.value, new.value, cause.value, detail, self.epoch))
        for group, effects in ON_EXIT:
            if old in group and new not in group:
                self._apply(effects)
        self._apply(ON_ENTER.get(new, ()))

    def _apply(self, effects: tuple[Effect, ...]) -> None:
        """Carry out a move's entry or exit effects (roles.py states which)."""
        for effect in effects:
            if effect is Effect.WITHDRAW:
                self._emit(Withdraw())
            elif effect is Effect.ADVERT_NOW:
                self._timers["advert"] = self._now
            elif effect is Effect.FORGET_ECHOES:
                for peer in self._peers.values():
                    peer.echo = NEVER
                self._carried = NEVER
            else:
                self._timers.pop(CLEARS_TIMER[effect], None)

    # --- events in (the rest: lifecycle.py; etcd results: results.py) ---------

    def _on_start(self, ev: Start) -> None:
        self._started = True
        self.healthy = self.healthy and ev.healthy
        self.cordoned = self.cordoned or ev.cordoned
        # Whatever a previous incarnation left in the kernel is not ours to trust.
        self._emit(Withdraw())
        self._etcd("lease", GrantLease, ttl=self.cfg.timers.lease_ttl)
        self._etcd("watch", Watch)
        self._active_heard_at = self._now  # listen for a suspect time before acting
        self._started_at = self._deaf_from = self._eligible_since = self._now
        self._timers["advert"] = self._now
        self._timers["keepalive"] = self._now + self.cfg.timers.lease_ttl / 3

    def _on_tick(self, _: Tick) -> None:
        """Only time passed: _fire_due does the work."""

    def _on_advert_now(self, _: AdvertNow) -> None:
        """The node's packet leaves now: advertise in it if we advertise at all (started,
        not stopped). Earlier than our own period is safe: evidence only gets fresher."""
        if "advert" in self._timers:
            self._timers["advert"] = self._now

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
            if self._withdrawn_holder(adv):
                # The holder, cut from etcd, says it withdrew: no need to wait S for
                # silence (it is back only through etcd; the window W still applies).
                self._active_heard_at = min(self._active_heard_at, now - self._S)
                self._active_stamp = adv.stamp
                self._holder_withdrew = adv.node
            elif self.role is Role.ACTIVE and adv.etcd_ok:
                self._maybe_hand_over()
            return
        self._active_heard_at = now
        self._holder_withdrew = None
        self._active_node = adv.node
        self._active_stamp = adv.stamp
        role = self.role
        if role is Role.CHALLENGING and not self._in_flight("depose") \
                and not self._preempting():
            self._drop_challenge()
            self._goto(Cause.HEARD_ACTIVE, adv.node)
        elif role is Role.ACTIVE and adv.epoch > self.epoch:
            self._lose(f"{adv.node} is active with newer epoch {adv.epoch}")
        elif role is Role.VRRP_ACTIVE and self._vrrp_outranked_by(adv):
            self._goto(Cause.VRRP_YIELD, adv.node)

    def _on_watch(self, ev: WatchUpdate) -> None:
        self.etcd_ok = True
        self._etcd_failing_since = None
        self._absorb(ev.view)

    def _etcd_back(self) -> None:
        """etcd answers again: a VRRP fallback active without authority gives way to it."""
        if self.role is Role.VRRP_ACTIVE and not self.epoch:
            self._goto(Cause.VRRP_YIELD, "etcd reachable again")

    def _on_result(self, ev: EtcdResult) -> None:
        kind, issued = self._pending.pop(ev.op_id, ("stale", self._now))
        self.etcd_ok = ev.outcome != UNREACHABLE
        if self.etcd_ok:
            self._etcd_failing_since = None
        elif self._etcd_failing_since is None:
            # Unanswered since it was sent, or (a watch that breaks) for one timeout.
            self._etcd_failing_since = max(issued, self._now - self.cfg.timers.etcd_timeout)
        _RESULT_HANDLERS[kind](self, ev, issued)
        if ev.view is not None:
            self._absorb(ev.view)
        elif self.etcd_ok:
            self._etcd_back()


_HANDLERS = {
    Start: Election._on_start,
    Tick: Election._on_tick,
    AdvertNow: Election._on_advert_now,
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


__all__ = ["Election", "ElectionConfig", "Role", "Cause", "TRANSITIONS", "VRRP_TRANSITIONS",
           "IllegalTransition", "ON_ETCD_LOSS", "UNSAFE_SWITCHES", "NEVER"]
