"""The election's named timers: firing what is due, and the periodic ones
(advert, keep-alive, re-watch)."""

from __future__ import annotations

import math

from vipmgr.core.messages import (
    ROLE_ACTIVE, ROLE_STANDBY, Advert, GrantLease, KeepAlive, Program, SendAdvert, Watch,
)
from vipmgr.core.roles import DATAPATH_ROLES, Role

# Every named deadline and the method that runs when it is due.
TIMERS = {
    "advert": "_tick_advert",           # send an advert (and refresh the dead-man)
    "act": "_act",                      # standby: the decision's instant (standby.py)
    "window": "_window_end",            # challenger: the window W is over
    "lapse": "_lapse",                  # holder: evidence runs out
    "confirm": "_tick_confirm",         # holder: confirm through etcd
    "keepalive": "_tick_keepalive",
    "rewatch": "_tick_rewatch",
    "suspect": "_wake",                 # standby: the active's silence reaches S
    "handover": "_maybe_hand_over",     # holder cut from etcd for handoverAfter
    "fallback": "_wake",                # a VRRP fallback's horizon has passed
    "deaf": "_holder_challenged",       # challenged holder: its own hearing is known
}
MAX_ROUNDS = 8  # a handler may make another timer due; more rounds than this is a loop


class TimerLoop(RuntimeError):
    """Timers kept making each other due at the same instant: a bug, not a state."""


class TimerWheel:
    """Named deadlines in ``self._timers``; ``_fire_due`` runs what is due."""

    def _fire_due(self) -> None:
        timers, now = self._timers, self._now
        for _ in range(MAX_ROUNDS):
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
                    getattr(self, TIMERS[name])()
        raise TimerLoop(f"{self.cfg.gateway}/{self.cfg.node}: timers still due after "
                        f"{MAX_ROUNDS} rounds at {now}: {sorted(timers)} (role {self.role})")

    @property
    def advert_period(self) -> float:
        """How often this election advertises in its role now."""
        t = self.cfg.timers
        return t.advert_interval if self.role in DATAPATH_ROLES else t.standby_advert_interval

    @property
    def advert_due(self) -> float | None:
        """When the next advert falls due (None: not advertising: not started, stopped)."""
        return self._timers.get("advert")

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
            self._fallback_until = now + self._D
            self._emit(Program(self._fallback_until))
        interval = self.advert_period
        echo_node, echo_stamp = None, 0.0
        # A preempt request never deposes (its window ends in a back-off), so the
        # preempter keeps echoing: the holder's evidence does not lapse over it.
        if (self.role is Role.STANDBY or self._preempting()) and not self._silent_for(self._S):
            echo_node, echo_stamp = self._active_node, self._active_stamp
        self._emit(SendAdvert(Advert(
            gateway=self.cfg.gateway, node=self.cfg.node,
            role=ROLE_ACTIVE if active else ROLE_STANDBY, epoch=self.epoch,
            priority=0 if self.role is Role.RELEASING else self.cfg.priority,
            # A fallback active is not etcd-backed until etcd confirms it (ACTIVE).
            eligible=self.eligible, etcd_ok=self.etcd_ok and self.role is not Role.VRRP_ACTIVE,
            heard=self._heard_peers(),
            stamp=now, echo_node=echo_node, echo_stamp=echo_stamp, interval=interval)))
        self._timers["advert"] = now + interval

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
