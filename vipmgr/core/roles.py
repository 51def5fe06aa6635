"""The election's roles, the causes of a move, and the table of allowed moves.

``TRANSITIONS`` is the state machine as data: (from role, cause) -> to role;
``Election._goto`` refuses anything else (``IllegalTransition``) and applies the
effects of leaving and entering roles (``ON_EXIT``, ``ON_ENTER``), also data. The guards that
decide *when* a move is taken live with the side that takes it: ``standby.py``
(acquire, challenge, preempt, VRRP fallback), ``holder.py`` (fence, hand over,
answer or yield), ``results.py`` (what etcd said), ``lifecycle.py`` (health,
cordon, membership, shutdown). docs/architecture.md states the protocol.
"""

from __future__ import annotations

import enum


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
    FALLBACK_HEARD = "fallback-active-heard"
    ETCD_CUT_HANDOVER = "etcd-cut-handover"


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
    (R.ACQUIRING, C.FALLBACK_HEARD): R.FENCED,
    (R.ACQUIRING, C.SUPERSEDED): R.STANDBY,
    (R.ACQUIRING, C.ETCD_UNREACHABLE): R.STANDBY,
    (R.ACTIVE, C.EVIDENCE_LAPSED): R.FENCED,
    (R.ACTIVE, C.PAUSED): R.FENCED,
    (R.ACTIVE, C.LOST): R.STANDBY,
    (R.ACTIVE, C.RELEASE): R.RELEASING,
    (R.ACTIVE, C.ETCD_CUT_HANDOVER): R.FENCED,
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
    (R.VRRP_ACTIVE, C.PAUSED): R.STANDBY,
    (R.VRRP_ACTIVE, C.STOP): R.STOPPED,
}
# onEtcdLoss=vrrp only: the active keeps serving like a VRRP master instead of fencing.
VRRP_TRANSITIONS: dict[tuple[Role, Cause], Role] = {
    (R.ACTIVE, C.EVIDENCE_LAPSED): R.VRRP_ACTIVE,
}
# The roles that serve traffic (program the datapath); status counts them as "up".
DATAPATH_ROLES = frozenset({Role.ACTIVE, Role.VRRP_ACTIVE})


class Effect(enum.StrEnum):
    """What a move does besides changing the role; ``Election._goto`` applies them."""

    WITHDRAW = "withdraw"            # drop the datapath before anything else goes out
    ADVERT_NOW = "advert-now"        # peers learn the new role now, not at the next tick
    # Echoes (and carried evidence) proved nobody could take over while we served; back
    # from here only through etcd (a Confirm), so a peer may challenge once it hears us.
    FORGET_ECHOES = "forget-echoes"
    CLEAR_ACT = "clear-act"          # the standby's decision timer ("act")
    CLEAR_WINDOW = "clear-window"    # the challenge window ("window")


# The timer each CLEAR_ effect drops (names as in timers.TIMERS).
CLEARS_TIMER: dict[Effect, str] = {Effect.CLEAR_ACT: "act", Effect.CLEAR_WINDOW: "window"}
# Leaving a group of roles for a role outside it: (group, effects in order).
ON_EXIT: tuple[tuple[frozenset[Role], tuple[Effect, ...]], ...] = (
    # Tell the peers at once that we no longer serve, so one may challenge right away.
    (DATAPATH_ROLES, (Effect.WITHDRAW, Effect.ADVERT_NOW, Effect.FORGET_ECHOES)),
    (frozenset({R.STANDBY}), (Effect.CLEAR_ACT,)),
    (frozenset({R.CHALLENGING}), (Effect.CLEAR_WINDOW,)),
)
# Entering a role (from any other): announce a serving role at once.
ON_ENTER: dict[Role, tuple[Effect, ...]] = {
    R.ACTIVE: (Effect.ADVERT_NOW,),
    R.VRRP_ACTIVE: (Effect.ADVERT_NOW,),
}


class IllegalTransition(RuntimeError):
    pass


__all__ = ["Role", "Cause", "TRANSITIONS", "VRRP_TRANSITIONS", "DATAPATH_ROLES", "Effect",
           "CLEARS_TIMER", "ON_EXIT", "ON_ENTER", "IllegalTransition"]
