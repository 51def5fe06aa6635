"""Events the election core consumes and actions it emits: plain frozen dataclasses.

The agent (or the simulator) turns the world into events and actions into
effects. etcd actions map 1:1 onto etcd v3 transactions (see
``vipmgr/store/authority.py`` and docs/architecture.md for the compare/success
branches); every etcd action carries an ``op_id`` that its ``EtcdResult`` echoes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

ROLE_ACTIVE = "active"
ROLE_STANDBY = "standby"

OK = "ok"                    # the transaction's compares held; success branch applied
REFUSED = "refused"          # a compare failed (or the lease is gone); nothing written
UNREACHABLE = "unreachable"  # no answer within etcdTimeout; the op may or may not have applied


# --- what etcd says ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChallengeInfo:
    """One standby's question "is the holder of ``epoch`` alive?" stored in etcd."""

    challenger: str
    rev: int          # mod_revision of the challenge key
    lease: int        # the challenger's lease: answers keep the key bound to it
    epoch: int        # authority create_revision it targets (0: key absent, term held)
    hears: int        # how many peers the challenger hears (isolated-side rule)
    priority: int
    preempt: bool     # a request to hand over, not a suspicion
    answered: bool
    round: int = 0    # the posting PostChallenge's op_id: tells this challenge from older ones


@dataclass(frozen=True, slots=True)
class EtcdView:
    """A consistent snapshot of one gateway's keys at ``revision``."""

    revision: int
    holder: str | None = None     # authority key's node; None when absent
    epoch: int = 0                # authority key's create_revision: the fencing epoch
    holder_lease: int = 0
    term_rev: int = 0             # term key's mod_revision (0: never held)
    term_node: str | None = None  # last holder
    vacated: bool = False         # the last holder gave it up or was deposed: free to take
    successor: str | None = None  # who should take it first after a vacate
    vacated_by: str | None = None  # who vacated it (a releaser lets others go first)
    challenges: tuple[ChallengeInfo, ...] = ()


# --- events -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Advert:
    """A heartbeat. Sent by the core as an action, received as the ``Heartbeat`` event.

    ``stamp`` is the sender's own clock at sending; a standby echoes the latest
    stamp it received from the node it considers active (``echo_node``), which
    tells that active, in its own clock, how long that standby cannot take over.
    """

    gateway: str
    node: str
    role: str                 # ROLE_ACTIVE / ROLE_STANDBY
    epoch: int
    priority: int             # 0: releasing (VRRP convention)
    eligible: bool
    etcd_ok: bool
    heard: tuple[str, ...]
    stamp: float
    echo_node: str | None = None
    echo_stamp: float = 0.0
    interval: float = 0.0     # when the sender's next advert is due (its role's period)


@dataclass(frozen=True, slots=True)
class Start:
    """The process (re)starts: kernel state for this gateway is unknown and withdrawn.

    Carries eligibility so that even the advert sent at Start tells the truth (peers
    rank only eligible nodes). It only adds to what came before: a ``HealthChanged`` or
    ``Cordoned`` fed earlier still counts.
    """

    healthy: bool = True
    cordoned: bool = False


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed; the agent delivers this at ``next_deadline``."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    advert: Advert


@dataclass(frozen=True, slots=True)
class AdvertNow:
    """The node's heartbeat goes out now (another gateway's advert fell due): this
    gateway's advert rides in the same packet (vipmgr.core.heartbeat)."""


@dataclass(frozen=True, slots=True)
class EtcdResult:
    op_id: int
    outcome: str                  # OK / REFUSED / UNREACHABLE
    revision: int = 0             # header revision of the transaction
    view: EtcdView | None = None  # snapshot read in the same transaction
    lease: int = 0                # GrantLease: the new lease id


@dataclass(frozen=True, slots=True)
class WatchUpdate:
    """The gateway's keys changed (or the watch was re-established)."""

    view: EtcdView


@dataclass(frozen=True, slots=True)
class HealthChanged:
    ok: bool
    reason: str = "health check failed"  # what failed: the release's detail, status


@dataclass(frozen=True, slots=True)
class Cordoned:
    on: bool


@dataclass(frozen=True, slots=True)
class Shutdown:
    """SIGTERM: hand over at once, then stop."""


@dataclass(frozen=True, slots=True)
class SwitchoverRequested:
    target: str | None = None


@dataclass(frozen=True, slots=True)
class MembersChanged:
    """The gateway's member set (its nodeSelector's pick) or our own priority changed.

    Applied live: role, epoch and lease stay. ``members`` must include this node
    (a node that is no longer selected leaves with ``Shutdown``); ``priority``
    None keeps the current one.
    """

    members: tuple[str, ...]
    priority: int | None = None
    move_delay: float | None = None  # rebalance stagger (ElectionConfig.move_delay); None: keep
    first_choice: str | None = None  # ElectionConfig.first_choice; None: keep


Event = (Start | Tick | Heartbeat | AdvertNow | EtcdResult | WatchUpdate | HealthChanged | Cordoned
         | Shutdown | SwitchoverRequested | MembersChanged)


# --- actions ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendAdvert:
    """This gateway's advert; vipmgr.core.heartbeat gathers a node's into one packet."""

    advert: Advert


@dataclass(frozen=True, slots=True)
class Program:
    """Take or refresh the datapath; kernel state must expire by itself at ``until``
    (core clock). Re-check ``until`` against the clock right before the kernel call."""

    until: float


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Drop the datapath now (addresses, SNAT, ARP guard; this gateway's conntrack)."""


@dataclass(frozen=True, slots=True)
class RoleChanged:
    """A move of the election (``roles.TRANSITIONS``).

    ``epoch`` is the authority epoch the move is about: the one held after it (adopted,
    acquired, confirmed), or, for a move that gives the authority up (to standby or
    stopped: lost, released, stopped), the one given up; 0 when none is involved.
    """

    old: str
    new: str
    cause: str
    detail: str = ""
    epoch: int = 0


class NoteKind(enum.StrEnum):
    """What a ``Note`` action reports (status and metrics count them)."""

    PAUSED = "paused"                            # not scheduled for longer than the pause gap
    HEARTBEAT_PATH_BROKEN = "heartbeat-path-broken"  # our challenge was answered
    MEMBERS_CHANGED = "members-changed"
    SWITCHOVER_IGNORED = "switchover-ignored"


@dataclass(frozen=True, slots=True)
class Note:
    """Something status/metrics should count ("heartbeat path broken", ...)."""

    kind: NoteKind
    detail: str = ""


@dataclass(frozen=True, slots=True)
class EtcdOp:
    op_id: int


@dataclass(frozen=True, slots=True)
class GrantLease(EtcdOp):
    ttl: int


@dataclass(frozen=True, slots=True)
class KeepAlive(EtcdOp):
    """REFUSED when the lease no longer exists."""

    lease: int


@dataclass(frozen=True, slots=True)
class RevokeLease(EtcdOp):
    lease: int


@dataclass(frozen=True, slots=True)
class Watch(EtcdOp):
    """Start watching the gateway's keys; each change arrives as WatchUpdate."""


@dataclass(frozen=True, slots=True)
class Acquire(EtcdOp):
    """If authority is absent and the term key is at ``term_rev`` (0: absent):
    put authority (bound to ``lease``) and term {node, held}."""

    lease: int
    term_rev: int


@dataclass(frozen=True, slots=True)
class PostChallenge(EtcdOp):
    """If authority's create_revision is ``epoch`` (and, for 0, term at ``term_rev``):
    put challenge/<gw>/<me> bound to ``lease``."""

    lease: int
    epoch: int
    term_rev: int
    hears: int
    priority: int
    preempt: bool


@dataclass(frozen=True, slots=True)
class DropChallenge(EtcdOp):
    """Delete challenge/<gw>/<me>."""


@dataclass(frozen=True, slots=True)
class Answer(EtcdOp):
    """If I still hold ``epoch`` and the challenge is unchanged since ``challenge.rev``:
    mark it answered (keeping it bound to the challenger's lease)."""

    epoch: int
    challenge: ChallengeInfo


@dataclass(frozen=True, slots=True)
class Confirm(EtcdOp):
    """If I still hold ``epoch``: read the challenges (the result's view)."""

    epoch: int


@dataclass(frozen=True, slots=True)
class Depose(EtcdOp):
    """If authority is still ``epoch`` (for 0: term at ``term_rev``) and my challenge is
    still unanswered at ``challenge_rev``: delete authority, put term vacated with me
    as successor, delete my challenge."""

    epoch: int
    term_rev: int
    challenge_rev: int


@dataclass(frozen=True, slots=True)
class Release(EtcdOp):
    """If I hold ``epoch``: delete authority, put term vacated (successor hint)."""

    epoch: int
    successor: str | None


@dataclass(frozen=True, slots=True)
class Vacate(EtcdOp):
    """My lease expired under me: if authority is absent and term is still at
    ``term_rev`` (my held record), mark it vacated (I have withdrawn)."""

    term_rev: int


Action = (SendAdvert | Program | Withdraw | RoleChanged | Note | GrantLease | KeepAlive
          | RevokeLease | Watch | Acquire | PostChallenge | DropChallenge | Answer | Confirm
          | Depose | Release | Vacate)

