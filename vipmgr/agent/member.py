"""One node's membership in one gateway: the election core plus the I/O it asks for.

This is the thin adapter the design calls for: events in (heartbeats from the
wire, etcd results and watch snapshots, eligibility changes, a timer at the
core's deadline), actions out (program or withdraw the datapath, run an etcd
transaction, log and count a role change). Events go through the node's one
heartbeat (agent/heartbeat.py), which sends the adverts of all gateways in one
packet. It makes no decision of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from vipmgr.agent.datapath import NodeDatapath
from vipmgr.agent.events import GatewayEvents
from vipmgr.agent.heartbeat import NodeHeartbeat, from_wire
from vipmgr.agent.logs import state_change
from vipmgr.agent.metrics import AgentMetrics
from vipmgr.agent.tasks import cancel_all
from vipmgr.core.election import Election, ElectionConfig, Role
from vipmgr.core.messages import (
    Action,
    Cordoned,
    EtcdOp,
    Event,
    HealthChanged,
    Heartbeat,
    MembersChanged,
    Note,
    NoteKind,
    Program,
    RoleChanged,
    Shutdown,
    Start,
    SwitchoverRequested,
    Tick,
    Withdraw,
    WatchUpdate,
)
from vipmgr.core.roles import DATAPATH_ROLES
from vipmgr.resources.models import EgressGateway
from vipmgr.resources.status import GatewayMemberStatus
from vipmgr.store.authority import AuthorityExecutor
from vipmgr.wire.message import Advert as WireAdvert

LOG = logging.getLogger("vipmgr.member")

# A role is "up" for status and metrics when it serves traffic.
SERVING = frozenset(role.value for role in DATAPATH_ROLES)


@dataclass
class MemberContext:
    """What a member needs from the agent: where to send, what to program, how to count."""

    node: str
    datapath: NodeDatapath
    metrics: AgentMetrics
    heartbeat: NodeHeartbeat                 # the node's one packet: events go through it
    clock: Callable[[], float]               # the core's clock: the loop's monotonic time
    prefix: str
    on_change: Callable[[], None] = lambda: None  # publish status soon
    hold_down: float = 0.0  # placement's (placementHoldDown): before a rebalance move here


@dataclass
class MemberInfo:
    """Facts about this node's part in the gateway, for status."""

    interface: str | None
    egress_ip: str | None
    since: float = field(default_factory=time.time)
    left_standby_at: float | None = None
    previous_holder: str | None = None
    last_failover: dict = field(default_factory=dict)
    heartbeat_path_ok: bool = True


class GatewayMember:
    def __init__(self, ctx: MemberContext, gateway: EgressGateway, members: tuple[str, ...],
                 priority: int, interface: str | None, egress_ip: str | None, client,
                 move_delay: float = 0.0, first_choice: str | None = None):
        self.ctx = ctx
        self.gateway = gateway
        self.name = gateway.name
        self.vrid = gateway.vrid
        self.info = MemberInfo(interface, egress_ip)
        failover = gateway.failover
        self.timers = failover.timers
        self.election = Election(ElectionConfig(
            gateway=gateway.name, node=ctx.node, members=members, priority=priority,
            timers=failover.timers, on_etcd_loss=failover.on_etcd_loss,
            preempt=failover.preempt, preempt_delay=failover.preempt_delay,
            rebalance=failover.rebalances, hold_down=ctx.hold_down, move_delay=move_delay,
            first_choice=first_choice))
        self.executor = AuthorityExecutor(client, gateway.name, ctx.node, prefix=ctx.prefix,
                                          timeout=failover.timers.etcd_timeout,
                                          on_update=self._on_watch)
        self.events = GatewayEvents(client, ctx.prefix, gateway.name, ctx.node, ctx.metrics)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # the deadline self._timer is set for
        self._withdrawn = 0  # datapath generation of our latest Withdraw
        self._tasks: set[asyncio.Task] = set()
        self.stopped = asyncio.Event()
        ctx.heartbeat.add(self)

    # --- lifecycle ------------------------------------------------------------------

    def start(self, healthy: bool, cordoned: bool) -> None:
        """Eligibility with Start, so the very first advert tells the truth."""
        self.feed(Start(healthy=healthy, cordoned=cordoned))

    async def stop(self, timeout: float = 1.0) -> None:
        """Graceful: release authority (the successor takes over at once), then stop."""
        self.feed(Shutdown())
        try:
            await asyncio.wait_for(self.stopped.wait(), timeout)
        except asyncio.TimeoutError:
            LOG.warning(f"{self.name}: release did not finish within {timeout:g}s",
                        extra={"gateway": self.name, "node": self.ctx.node})
        await self.close()

    async def close(self) -> None:
        self.ctx.heartbeat.remove(self)
        if self._timer is not None:
            self._timer.cancel()
        await cancel_all(self._tasks, LOG, self.name,
                         {"gateway": self.name, "node": self.ctx.node})
        await self.events.close()
        if self.serving:
            self.ctx.datapath.withdraw(self.name)

    @property
    def role(self) -> str:
        return self.election.role.value

    @property
    def serving(self) -> bool:
        return self.role in SERVING

    # --- events in -------------------------------------------------------------------

    def on_advert(self, advert: WireAdvert) -> None:
        self.ctx.metrics.heartbeat_received(self.name)
        self.feed(Heartbeat(from_wire(advert)))

    def set_eligible(self, healthy: bool, reason: str = "") -> None:
        """``reason``: what failed (status and the release's log line); "" the default."""
        self.feed(HealthChanged(healthy, reason) if reason else HealthChanged(healthy))

    def set_cordoned(self, cordoned: bool) -> None:
        self.feed(Cordoned(cordoned))

    def set_members(self, members: tuple[str, ...], priority: int,
                    move_delay: float | None = None, first_choice: str | None = None) -> None:
        """Another node joined or left, priorities were edited or placement changed: no
        handover needed."""
        cfg = self.election.cfg
        if members != cfg.members or priority != cfg.priority \
                or move_delay not in (None, cfg.move_delay) \
                or first_choice not in (None, cfg.first_choice):
            self.feed(MembersChanged(members, priority, move_delay, first_choice))

    def switchover(self, target: str | None) -> None:
        self.feed(SwitchoverRequested(target))

    def _on_watch(self, update: WatchUpdate) -> None:
        self.ctx.metrics.etcd_connection(True)
        self.events.saw_holder(update.view.holder or update.view.term_node)
        self.feed(update)
        # Every member exports the epoch etcd holds, not only a new active.
        self.ctx.metrics.epoch_seen(self.name, update.view.epoch)

    def feed(self, event: Event) -> None:
        """Hand one event to the core, through the node's heartbeat (an advert takes every
        gateway's along); a closed member's late events go nowhere."""
        if self.ctx.heartbeat.members.get(self.name) is self:
            self.ctx.heartbeat.feed(self.name, event)

    def apply(self, actions: list[Action]) -> None:
        """Carry out what the core asked, in order, and wake it at its next deadline."""
        for action in actions:
            self._do(action)
        self._reschedule()

    # --- actions out -----------------------------------------------------------------

    def _do(self, action: Action) -> None:
        if isinstance(action, Program):
            self.ctx.datapath.program(self.name, action.until)
        elif isinstance(action, Withdraw):
            self._withdrawn = self.ctx.datapath.withdraw(self.name)
        elif isinstance(action, RoleChanged):
            self._role_changed(action)
        elif isinstance(action, Note):
            self._note(action)
        elif isinstance(action, EtcdOp):
            self._spawn(self._etcd(action))

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            LOG.error(f"{self.name}: {task.exception()!r}", exc_info=task.exception(),
                      extra={"gateway": self.name, "node": self.ctx.node})

    async def _etcd(self, op: EtcdOp) -> None:
        # Actions run in the core's order: nothing reaches etcd (a release that lets a
        # successor in) before the kernel has let go of what we withdrew.
        await self.ctx.datapath.settled(self._withdrawn, self.timers.deadman_timeout)
        with self.ctx.metrics.etcd_request(type(op).__name__.lower()):
            result = await self.executor.run(op)
        self.ctx.metrics.etcd_connection(result.outcome != "unreachable")
        self.feed(result)

    def _role_changed(self, change: RoleChanged) -> None:
        reason = self.events.role_changed(change, change.epoch,
                                          self.election.view.holder
                                          or self.election.view.term_node)
        now = time.time()
        old, new = change.old, change.new
        state_change(self.name, self.ctx.node, old, new,
                     f"{change.cause}{': ' + change.detail if change.detail else ''}",
                     change.epoch)
        self.ctx.metrics.role_changed(self.name, old, new, change.cause, active=new in SERVING)
        if old == Role.STANDBY.value and new not in SERVING:
            self.info.left_standby_at = now
            self.info.previous_holder = (self.election.view.holder or self.election.view.term_node
                                         or self.events.last_holder)
        if new in SERVING and self.info.left_standby_at is not None:
            previous = self.info.previous_holder
            self.info.last_failover = {
                "from": previous if previous != self.ctx.node else None, "to": self.ctx.node,
                "reason": reason,
                "duration_ms": round((now - self.info.left_standby_at) * 1e3, 1), "at": now}
            self.info.left_standby_at = None
        if new in SERVING:
            self.ctx.metrics.epoch_seen(self.name, change.epoch)
        if new == Role.VRRP_ACTIVE.value or old == Role.VRRP_ACTIVE.value:
            self.ctx.metrics.etcd_loss_mode_changed(self.name, new == Role.VRRP_ACTIVE.value)
        if new == Role.STANDBY.value:
            self.info.left_standby_at = None
        if new == Role.STOPPED.value:
            self.stopped.set()
        self.info.since = now
        self.ctx.on_change()

    def _note(self, note: Note) -> None:
        LOG.info(f"{self.name}: {note.kind} {note.detail}".rstrip(),
                 extra={"gateway": self.name, "node": self.ctx.node, "note": note.kind})
        if note.kind == NoteKind.HEARTBEAT_PATH_BROKEN:
            self.info.heartbeat_path_ok = False
            self.ctx.metrics.heartbeat_path_changed(self.name, False)
            self.ctx.on_change()

    def _reschedule(self) -> None:
        """Wake the core at its next deadline; an unchanged deadline keeps its timer (the
        node's advert touches every member: no timer churn per packet)."""
        deadline = self.election.next_deadline
        if self.election.role is Role.STOPPED:
            deadline = None
        if self._timer is not None:
            if deadline == self._timer_at:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._wake)
            self._timer_at = deadline

    def _wake(self) -> None:
        self._timer = None  # fired (asyncio may run it a clock tick early: set it again)
        self.feed(Tick())

    # --- status ----------------------------------------------------------------------

    def status(self, eligible: bool, reasons: list[str],
               heard: dict[str, float]) -> GatewayMemberStatus:
        if heard and not self.info.heartbeat_path_ok:
            self.info.heartbeat_path_ok = True
            self.ctx.metrics.heartbeat_path_changed(self.name, True)
        return GatewayMemberStatus(
            gateway=self.name, node=self.ctx.node,
            role="active" if self.serving else self.role, epoch=self.election.epoch,
            since=self.info.since, priority=self.election.cfg.priority, eligible=eligible,
            reasons=reasons, egress_ip=self.info.egress_ip or "",
            interface=self.info.interface or "", heard_peers=heard,
            heartbeat_path_ok=self.info.heartbeat_path_ok, etcd_ok=self.election.etcd_ok,
            last_failover=self.info.last_failover, updated=time.time())
