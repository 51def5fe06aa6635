"""The holder's side: evidence and its fence, challenges (answer, yield, hand over),
the etcd-cut handover and the holder's timers (lapse, confirm, handover)."""

from __future__ import annotations

import math

from vipmgr.core.messages import Answer, Confirm, EtcdView
from vipmgr.core.peers import NEVER
from vipmgr.core.roles import Role, Cause


class Holder:
    """What an active (or fenced) holder of the authority decides."""

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

    def _cut_for(self) -> float:
        """How long etcd has not answered us (0 while it does)."""
        since = self._etcd_failing_since
        return 0.0 if since is None or self.etcd_ok else self._now - since

    def _maybe_hand_over(self) -> None:
        """Active cut from etcd for handoverAfter, a peer reaches etcd: withdraw and say
        so, and let that peer take authority through etcd (challenge, depose, acquire)
        before our lease expires and the workers, who follow etcd, see no holder."""
        if self.role is not Role.ACTIVE or self._cut_for() < self._handover_after:
            return
        peer = self._etcd_peer()
        if peer:
            self._goto(Cause.ETCD_CUT_HANDOVER, f"etcd unreachable for "
                       f"{self._cut_for() * 1e3:.0f} ms; {peer} reaches it")

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
                self._release(ch.challenger, "preempted" if self.cfg.preempt or
                              not self.cfg.rebalance else f"rebalance to {ch.challenger}")
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

    def _lapse(self) -> None:
        validity = self.validity()
        if self.role is not Role.ACTIVE or validity > self._now:
            return
        # Noticed late means we were paused (frozen, swapped out): whatever we knew is
        # stale, so even the VRRP fallback must wait for etcd's word.
        on_time = self._now - validity <= self.cfg.timers.advert_interval
        if on_time and self._may_fall_back():
            self._goto(Cause.EVIDENCE_LAPSED, "no proof from peers or etcd: VRRP fallback")
        elif on_time and self._etcd_lost():  # a peer reaches etcd: it takes over
            self._goto(Cause.ETCD_CUT_HANDOVER, f"evidence lapsed without etcd; "
                                                f"{self._etcd_peer()} reaches it")
        elif self._vrrp_policy():
            self._goto(Cause.PAUSED, "woke up past the fence deadline")
        else:
            self._goto(Cause.EVIDENCE_LAPSED, "no proof from peers or etcd within "
                                              "fenceDeadline")

    def _fallback_expired(self) -> None:
        """A VRRP fallback active scheduled again only after its dead-man expired (frozen,
        swapped out): peers count it gone once its fallback horizon passed and may have
        taken over through etcd since, so it must not program again on its own word. It
        stands by and listens a suspect time, as any node that woke up does."""
        late = self._now - self._fallback_until
        self._goto(Cause.PAUSED, f"woke up {late * 1e3:.0f} ms after the fallback's "
                                 "dead-man expired")
        self._active_heard_at = self._now

    def _schedule_holder_timers(self) -> None:
        timers = self._timers
        # While a challenge waits for word on our hearing ("deaf"), a confirmation
        # could not extend the evidence anyway (an unanswered challenge is pending).
        busy = self._in_flight("confirm") or self._in_flight("answer") or "deaf" in timers
        if self.role is Role.ACTIVE:
            v = self.validity()
            timers["lapse"] = v
            since = self._etcd_failing_since
            if since is not None and not self.etcd_ok \
                    and since + self._handover_after > self._now:
                timers["handover"] = since + self._handover_after
            else:
                timers.pop("handover", None)
            if busy:
                timers.pop("confirm", None)
            else:
                timers["confirm"] = v - self._confirm_lead
            return
        timers.pop("lapse", None)
        timers.pop("handover", None)
        if self.role in (Role.FENCED, Role.VRRP_ACTIVE) and self.epoch and not busy:
            timers.setdefault("confirm", self._confirmed_at + self.cfg.timers.advert_interval)
        else:
            timers.pop("confirm", None)

    def _tick_confirm(self) -> None:
        if self.role in (Role.ACTIVE, Role.FENCED, Role.VRRP_ACTIVE) and self.epoch \
                and not self._in_flight("confirm") and not self._in_flight("answer"):
            self._confirmed_at = self._now
            self._etcd("confirm", Confirm, epoch=self.epoch)
