"""Eligibility, membership, switchover and shutdown: the graceful paths, and the
moves they share (release, lose, stop)."""

from __future__ import annotations

from dataclasses import replace

from vipmgr.core.messages import (
    NoteKind,
    Cordoned, DropChallenge, HealthChanged, MembersChanged, Note, Release, RevokeLease,
    Shutdown, SwitchoverRequested, Vacate,
)
from vipmgr.core.peers import NEVER
from vipmgr.core.roles import Role, Cause


class Lifecycle:
    """Health, cordon, membership, switchover, shutdown; release/lose/stop."""

    def _on_health(self, ev: HealthChanged) -> None:
        was = self.eligible
        self.healthy = ev.ok
        self._eligibility_changed(ev.reason, was)

    def _on_cordon(self, ev: Cordoned) -> None:
        was = self.eligible
        self.cordoned = ev.on
        self._eligibility_changed("cordoned", was)

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
        if priority != self.cfg.priority:
            self._ranks_since = now  # ranks may still be settling: free authority waits
        move_delay = self.cfg.move_delay if ev.move_delay is None else ev.move_delay
        first = self.cfg.first_choice if ev.first_choice is None else ev.first_choice
        self.cfg = replace(self.cfg, members=members, priority=priority, move_delay=move_delay,
                           first_choice=first)
        self._others = others
        self._emit(Note(NoteKind.MEMBERS_CHANGED, f"{','.join(members)} priority {priority}"))

    def _on_switchover(self, ev: SwitchoverRequested) -> None:
        if self.role in (Role.ACTIVE, Role.FENCED) and ev.target != self.cfg.node:
            self._release(ev.target or self._best_peer(), "switchover")
        else:
            self._emit(Note(NoteKind.SWITCHOVER_IGNORED, f"role {self.role}"))

    def _eligibility_changed(self, why: str, was: bool) -> None:
        if self.eligible:
            if not was:
                self._eligible_since = self._now  # a rebalance waits hold_down from here
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
