"""What each etcd result means for the election (one handler per kind of op),
and how a newer snapshot of the gateway's keys is absorbed."""

from __future__ import annotations

from vipmgr.core.messages import (
    NoteKind,
    OK, REFUSED, UNREACHABLE, Acquire, EtcdResult, EtcdView, Note, Program, RevokeLease,
)
from vipmgr.core.peers import NEVER
from vipmgr.core.roles import Role, Cause


class EtcdResults:
    """Handlers for EtcdResult by op kind, and snapshot absorption."""

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
        elif ev.outcome == REFUSED and self._challenge is not None \
                and self._guard_held(ev.view, *self._challenge[:2]):
            self._lease_gone()
            self._goto(Cause.SUPERSEDED, "own lease gone: challenge not stored")
        elif ev.outcome == REFUSED:
            self._goto(Cause.SUPERSEDED, "authority changed before the challenge")
        else:
            self._goto(Cause.ETCD_UNREACHABLE, "posting challenge")

    @staticmethod
    def _guard_held(view: EtcdView | None, epoch: int, term_rev: int) -> bool:
        """The compares of a refused put held in its own snapshot: then only the lease
        the put was bound to can have been missing (it expired while we were cut)."""
        return view is not None and view.epoch == epoch \
            and (epoch != 0 or view.term_rev == term_rev)

    def _lease_gone(self) -> None:
        """Get a new lease now instead of re-posting with a dead one until the next
        keep-alive (a tight loop of refused puts)."""
        self.lease = 0
        self._timers["keepalive"] = self._now

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
            fallback = self._fallback_active()
            if fallback:  # hold the authority, datapath down, until it has yielded
                self._goto(Cause.FALLBACK_HEARD, f"epoch {self.epoch}; {fallback} serves "
                                                 "as VRRP fallback")
            else:
                self._goto(Cause.ACQUIRED, f"epoch {self.epoch}")
            if not self.eligible:
                self._release(None, "ineligible while acquiring")
        elif ev.outcome == REFUSED and self._guard_held(ev.view, 0, self.view.term_rev) \
                and ev.view is not None and ev.view.term_rev == self.view.term_rev:
            self._lease_gone()
            self._goto(Cause.SUPERSEDED, "own lease gone: authority not stored")
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
            if self.role is Role.FENCED and self.eligible and self._silent_for(self._S) \
                    and self._may_fall_back():
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
            if self.role is not Role.ACTIVE and self._fallback_active():
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
        if self.stopping:
            self._stop()
        elif ev.outcome == UNREACHABLE:
            self._goto(Cause.ETCD_UNREACHABLE, "releasing")
        else:
            self._goto(Cause.RELEASED)
        self.epoch = 0  # after the move: its RoleChanged names the epoch given up

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
                self._emit(Note(NoteKind.HEARTBEAT_PATH_BROKEN, f"{view.holder} answered"))
                self._drop_challenge()
                self._backoff_until = self._now + self._challenge_backoff
                self._goto(Cause.ANSWERED, str(view.holder))
