"""The standby's side: when to acquire free authority, challenge the active,
preempt, or fall back to VRRP, and what to do when the challenge window ends.

One pure function, ``_standby_decision``, says what to do next and from when;
``_reconsider`` arms the timer for it and ``_act`` asks it again when that timer
fires, so scheduling and moving can never apply different conditions.
"""

from __future__ import annotations

import enum
import math

from vipmgr.core.config import FIRST_CHOICE_WAIT
from vipmgr.core.messages import Acquire, Confirm, Depose, PostChallenge, Release
from vipmgr.core.peers import NEVER
from vipmgr.core.roles import Role, Cause


class Next(enum.Enum):
    """What a standby does next (the kind of ``_standby_decision``)."""

    NOTHING = enum.auto()         # no snapshot, ineligible, no lease, outranked, hold policy
    ADOPT = enum.auto()           # the key is bound to our lease: take it up, at once
    RELEASE_STALE = enum.auto()   # a key of ours we may not serve: hand it over, at once
    ETCD_PEER = enum.auto()       # cut from etcd, a peer reaches it: it takes over, not us
    AWAIT_FALLBACK = enum.auto()  # free, but a VRRP fallback may still serve: wake then
    AWAIT_SILENCE = enum.auto()   # we hear the active: wake when its silence reaches S
    ACQUIRE = enum.auto()         # free authority
    CHALLENGE = enum.auto()       # the active is silent: suspect it
    PREEMPT = enum.auto()         # ask a worse-placed active to hand over
    FALL_BACK = enum.auto()       # onEtcdLoss vrrp: serve without etcd


# The timer ``_reconsider`` arms for a decision: "act" runs ``_act``, the others wake us.
ARMS = {Next.ACQUIRE: "act", Next.CHALLENGE: "act", Next.PREEMPT: "act",
        Next.FALL_BACK: "act", Next.AWAIT_FALLBACK: "fallback", Next.AWAIT_SILENCE: "suspect"}


class Standby:
    """What a standby decides (``_standby_decision``) and does (``_reconsider``, ``_act``)."""

    def _standby_decision(self) -> tuple[Next, float]:
        """What to do next and from when (``math.inf``: never). Reads state only."""
        now, never = self._now, (Next.NOTHING, math.inf)
        view, me = self.view, self.cfg.node
        if self.role is not Role.STANDBY or not self._started or not view.revision:
            return never  # no snapshot of etcd yet
        if view.holder == me:
            if view.holder_lease == self.lease and self.lease and self.eligible:
                return Next.ADOPT, now
            if self.etcd_ok and not self._in_flight("release"):
                # A previous incarnation's key (or ours while ineligible): our kernel
                # state was withdrawn at start, so handing it over is safe.
                return Next.RELEASE_STALE, now
            return never
        if not self.eligible or not self.lease:
            return never
        if not self.etcd_ok:
            if not self._may_fall_back():
                return (Next.ETCD_PEER, now) if self._etcd_lost() else never
            if self._rank():
                return never  # a better-ranked peer we hear falls back first (or still serves)
            # From when the fallback became possible (the last etcd-reaching peer heard).
            return Next.FALL_BACK, max(self._active_heard_at + (self._S + self._W),
                                       self._etcd_peer_heard_at)
        if self._authority_free():
            if self._fallback_active():
                return Next.AWAIT_FALLBACK, self._fallback_gone_at()  # let it yield first
            return Next.ACQUIRE, self._free_at()
        if self._silent_for(self._S):
            return Next.CHALLENGE, max(self._active_heard_at + self._S, self._backoff_until) \
                + self._rank(via_etcd=True) * self.cfg.timers.advert_interval
        if self._may_preempt():
            return Next.PREEMPT, max(self._move_at(), self._backoff_until)
        return Next.AWAIT_SILENCE, self._active_heard_at + self._S

    def _free_since_now(self) -> float:
        """Since when the authority has been free in its current term (now: just freed)."""
        free = self._free_since
        return free[1] if free is not None and free[0] == self.view.term_rev else self._now

    def _free_at(self) -> float:
        """A named successor acquires at once; others after listening (rule 8), one
        advert interval per better-ranked peer (and one more behind a named successor)."""
        view, me = self.view, self.cfg.node
        since = self._free_since_now()
        if view.successor == me:
            return since
        if view.vacated_by == me:
            since += self._S + self._W  # we just handed it over: others first
        if self._awaits_first_choice():  # never held, or held before we joined
            since = max(since, self._started_at + FIRST_CHOICE_WAIT)
        return max(since, self._listen_until(view.vacated_by)) \
            + (self._rank() + (1 if view.successor else 0)) * self.cfg.timers.advert_interval

    def _move_at(self) -> float:
        """When to ask a worse-placed active to hand over: preempt after preemptDelay;
        rebalance once we have been eligible for hold_down, then our place in the queue
        of moves into this node (move_delay) past that or past noticing, whichever is
        later. Both are requests: the holder hands over gracefully or the window ends."""
        since = self._now if self._preempt_since == NEVER else self._preempt_since
        if self.cfg.preempt:
            return since + self.cfg.preempt_delay
        return max(self._eligible_since + self.cfg.hold_down, since) + self.cfg.move_delay

    def _reconsider(self) -> None:
        """Standby: take the decision, remember what it saw, arm its timer (adopting or
        releasing a key of ours happens at once)."""
        self._timers.pop("act", None)
        kind, at = self._standby_decision()
        now, view = self._now, self.view
        if kind is Next.ETCD_PEER:
            self._etcd_peer_heard_at = now  # it takes over, through etcd
        elif kind is Next.ACQUIRE:
            self._free_since = (view.term_rev, self._free_since_now())
        elif kind is Next.PREEMPT:
            self._preempt_since = self._preempt_since if self._preempt_since != NEVER else now
        elif kind in (Next.CHALLENGE, Next.AWAIT_SILENCE):
            self._preempt_since = NEVER
        if kind is Next.ADOPT:
            self.epoch = view.epoch
            self._goto(Cause.ADOPT, f"epoch {view.epoch} is bound to our lease")
            self._etcd("confirm", Confirm, epoch=self.epoch)
        elif kind is Next.RELEASE_STALE:
            self._etcd("release", Release, epoch=view.epoch, successor=None)
        elif kind in ARMS:
            self._timers[ARMS[kind]] = at

    def _act(self) -> None:
        """The decision timer fired: decide again and move if that decision is due."""
        kind, at = self._standby_decision()
        if ARMS.get(kind) != "act" or at > self._now:
            return
        view = self.view
        if kind is Next.FALL_BACK:
            self.epoch = 0
            self._goto(Cause.VRRP_TAKEOVER, "etcd unreachable, no active heard")
        elif kind is Next.ACQUIRE:
            self._goto(Cause.FREE, f"term {view.term_rev} vacated={view.vacated}")
            self._etcd("acquire", Acquire, lease=self.lease, term_rev=view.term_rev)
        else:
            preempt = kind is Next.PREEMPT
            self._challenge = (view.epoch, view.term_rev, preempt)
            withdrew = "; it withdrew, cut from etcd" if self._holder_withdrew else ""
            move = ("rebalance: " if not self.cfg.preempt else "") if preempt else ""
            self._goto(Cause.PREEMPT if preempt else Cause.SUSPECTED,
                       f"{move}epoch {view.epoch} holder {view.holder}{withdrew}")
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
        fallback = self._fallback_active()
        if fallback:
            self._drop_challenge()
            self._goto(Cause.HEARD_ACTIVE, f"{fallback} serves as VRRP fallback")
            return
        if preempt:
            self._drop_challenge()
            self._backoff_until = self._now + self._challenge_backoff
            self._goto(Cause.ANSWERED, "preempt request not honoured")
            return
        self._etcd("depose", Depose, epoch=epoch, term_rev=term_rev,
                   challenge_rev=self._challenge_rev)
