"""The standby's side: when to acquire free authority, challenge the active,
preempt, or fall back to VRRP, and what to do when the challenge window ends."""

from __future__ import annotations

from vipmgr.core.config import FIRST_CHOICE_WAIT
from vipmgr.core.messages import Acquire, Confirm, Depose, PostChallenge, Release
from vipmgr.core.peers import NEVER
from vipmgr.core.roles import Role, Cause


class Standby:
    """What a standby decides (``_reconsider`` schedules, ``_act`` moves)."""

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
            if self.cfg.on_etcd_loss != "vrrp":
                return
            if self._etcd_peer():
                self._etcd_peer_heard_at = self._now  # it takes over, through etcd
                return
            if self._rank():
                return  # a better-ranked peer we hear falls back first (or still serves)
            # From when the fallback became possible (the last etcd-reaching peer heard).
            timers["act"] = max(self._active_heard_at + (self._S + self._W),
                                self._etcd_peer_heard_at)
            return
        adv = self.cfg.timers.advert_interval
        if view.epoch == 0 and (view.vacated or view.term_rev == 0):
            if self._fallback_active():
                timers["fallback"] = self._fallback_gone_at()
                return  # a VRRP fallback active still serves: let it yield first
            if self._free_since is None or self._free_since[0] != view.term_rev:
                self._free_since = (view.term_rev, self._now)
            if view.successor == me:
                timers["act"] = self._free_since[1]
                return
            since = self._free_since[1]
            if view.vacated_by == me:
                since += self._S + self._W  # we just handed it over: others first
            if self._awaits_first_choice():  # never held, or held before we joined
                since = max(since, self._started_at + FIRST_CHOICE_WAIT)
            timers["act"] = max(since, self._listen_until(view.vacated_by)) \
                + (self._rank() + (1 if view.successor else 0)) * adv
            return
        if self._silent_for(self._S):
            timers["act"] = max(self._active_heard_at + self._S, self._backoff_until) \
                + self._rank(via_etcd=True) * adv
        elif (self.cfg.preempt or self.cfg.rebalance) and self._active_node in self._peers:
            active = self._peers[self._active_node].advert
            if self.cfg.priority > active.priority and self._rank() == 0:
                if self._preempt_since == NEVER:
                    self._preempt_since = self._now
                timers["act"] = max(self._move_at(), self._backoff_until)
                return
        self._preempt_since = NEVER
        if not self._silent_for(self._S):
            timers["suspect"] = self._active_heard_at + self._S

    def _move_at(self) -> float:
        """When to ask a worse-placed active to hand over: preempt after preemptDelay;
        rebalance once we have been eligible for hold_down, then our place in the queue
        of moves into this node (move_delay) past that or past noticing, whichever is
        later. Both are requests: the holder hands over gracefully or the window ends."""
        if self.cfg.preempt:
            return self._preempt_since + self.cfg.preempt_delay
        return max(self._eligible_since + self.cfg.hold_down, self._preempt_since) \
            + self.cfg.move_delay

    def _act(self) -> None:
        """The standby's decision timer fired: re-check and move."""
        view = self.view
        if self.role is not Role.STANDBY or not self.eligible or not self.lease:
            return
        if not self.etcd_ok:
            if self.cfg.on_etcd_loss == "vrrp" and not self._etcd_peer() \
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
