"""The agent's side of gateway history: one call per RoleChanged, a cause that names the fault.

The core says *how* a role changed (``suspected``, ``authority-free``,
``acquired``...); operators ask *why*. :func:`classify` maps the core's cause
and detail to a bounded reason, and :class:`GatewayEvents` adds what only the
cluster knows: when a node takes over after the holder released, the holder
wrote its own reason (cordon, health, switchover, shutdown, link-down...)
into the history just before its release, and the new active reads it
between leaving standby and serving. A holder that went quiet (crashed or
frozen: a standby cannot tell which) leaves no word: ``silence``.

Every change is appended to the gateway's history in etcd
(:mod:`vipmgr.store.events`) in a background task; a failed write is logged
and counted, never allowed to delay the election.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aetcd.exceptions
import grpc

from vipmgr.agent.tasks import cancel_all
from vipmgr.core.messages import RoleChanged
from vipmgr.core.roles import DATAPATH_ROLES, Role
from vipmgr.store import events as store

LOG = logging.getLogger("vipmgr.events")

SERVING = DATAPATH_ROLES  # the roles that serve (a role change's old/new are their values)
# the roles a holder lets go from: serving, or fenced (holding authority, datapath down)
HOLDING = DATAPATH_ROLES | {Role.FENCED}
# Every failover reason label value; the metrics create them at 0 at join.
REASONS = ("initial", "silence", "link-down", "cordon", "health", "switchover", "shutdown",
           "preempt", "rebalance", "etcd", "restart", "released", "superseded")
WRITE_TIMEOUT = 2.0
ETCD_ERRORS = (aetcd.exceptions.ClientError, grpc.RpcError, ConnectionError, OSError,
               asyncio.TimeoutError)
LOOKUP_WINDOW = 10.0
NOTE_WAIT = 1.0  # s the history waits for a holder's note after the takeover


def classify(change: RoleChanged) -> str:
    """The bounded reason of one role change, from the core's cause and detail alone."""
    cause, detail = change.cause, change.detail.lower()
    if cause in ("etcd-unreachable", "vrrp-takeover", "vrrp-yield", "etcd-cut-handover") \
            or any(w in detail for w in ("lease expired", "etcd unreachable", "cut from etcd")):
        return "etcd"
    if cause in ("confirmed", "acquired"):
        return "released" if cause == "acquired" else "restart"
    if "isolated" in detail:
        return "link-down"
    for word, reason in (("cordon", "cordon"), ("health", "health"), ("switchover", "switchover"),
                         ("shutdown", "shutdown"), ("preempt", "preempt"),
                         ("rebalanc", "rebalance")):
        if word in detail:
            return reason
    if cause in ("suspected", "window-expired"):
        return "silence"
    if cause == "preempt":
        return "preempt"
    if cause == "adopt-own-key":
        return "restart"
    if cause == "ineligible":
        return "health"
    if cause in ("authority-free", "released", "release"):
        return "released"
    if cause == "stop":
        return "shutdown"
    return "superseded"


class GatewayEvents:
    """One member's history writer and failover counter (``vipmgr_gateway_failovers_total``
    under the reason the history gets); ``role_changed`` returns the reason known at once."""

    def __init__(self, client, prefix: str, gateway: str, node: str, metrics=None) -> None:
        self.client, self.prefix, self.gateway, self.node = client, prefix, gateway, node
        self.metrics = metrics
        self._tasks: set[asyncio.Task] = set()
        self._left_standby: tuple[float, str, str | None] | None = None  # (when, reason, holder)
        self._holder_note: asyncio.Task | None = None
        self._last_holder: str | None = None  # the latest other node seen holding the gateway
        self._appended = 0

    def saw_holder(self, holder: str | None) -> None:
        """Remember the latest other node etcd named as holder (every authority update, not
        only at our own role changes: a standby that never moved still knows who let go)."""
        if holder and holder != self.node:
            self._last_holder = holder

    @property
    def last_holder(self) -> str | None:
        return self._last_holder

    def role_changed(self, change: RoleChanged, epoch: int, holder: str | None) -> str:
        """Record ``change``; the reason a failover to this node is counted under."""
        now = time.time()
        reason = classify(change)
        self.saw_holder(holder)
        # a vacated authority names no holder any more: the last one we knew let go
        holder = holder or self._last_holder
        self._write(store.GatewayEvent(self.gateway, self.node, "role", now, reason, change.old,
                                       change.new, change.detail or change.cause, epoch))
        if change.old == "standby" and change.new not in SERVING:
            others = self._other(holder)
            self._left_standby = (now, reason, others)
            self._holder_note = self._spawn(self._holder_reason(others, now)) if others else None
        if change.new not in SERVING:
            if change.new == "standby":
                self._left_standby = None
            return reason
        left = self._left_standby
        self._left_standby = None
        if left is None and change.old != "standby":
            return reason  # back to serving without a takeover (fenced -> active): no failover
        if left is None:  # straight from standby to serving (vrrp takeover)
            failover_reason, previous, duration = reason, self._other(holder), None
        else:
            started, failover_reason, previous = left
            duration = round((now - started) * 1e3, 1)
            note = self._holder_note
            if note is not None and note.done() and not note.cancelled() \
                    and note.exception() is None and note.result():
                failover_reason = note.result()
            elif previous is None and failover_reason in ("released", "superseded"):
                failover_reason = "initial"
            elif note is not None and not note.done():
                # the holder's note is still on its way: the history and the failover count
                # wait for it (bounded); the caller gets what is known now
                event = store.GatewayEvent(self.gateway, self.node, "failover", now,
                                           failover_reason, change.old, change.new,
                                           change.detail or change.cause, epoch, previous or "",
                                           duration)
                self._spawn(self._append_after(note, event))
                return failover_reason
        self._failover(store.GatewayEvent(
            self.gateway, self.node, "failover", now, failover_reason, change.old, change.new,
            change.detail or change.cause, epoch, previous or "", duration))
        return failover_reason

    def _failover(self, event: store.GatewayEvent) -> None:
        """Count a failover to this node under its final reason and write it to the history."""
        if self.metrics is not None:
            self.metrics.failover_completed(self.gateway, event.reason)
        self._write(event)

    async def _append_after(self, note: asyncio.Task, event: store.GatewayEvent) -> None:
        """Count and write ``event`` with the holder's reason once its note arrived (at
        most 1 s)."""
        done, _ = await asyncio.wait([note], timeout=NOTE_WAIT)
        if done and not note.cancelled() and note.exception() is None and note.result():
            event.reason = note.result()
        self._failover(event)

    def _other(self, holder: str | None) -> str | None:
        return holder if holder and holder != self.node else None

    async def _holder_reason(self, holder: str, since: float) -> str | None:
        """The reason the holder gave for letting go, if it wrote one just now."""
        try:
            recent = await asyncio.wait_for(
                store.history(self.client, self.prefix, self.gateway, limit=10), WRITE_TIMEOUT)
        except ETCD_ERRORS:
            return None
        for event in reversed(recent):
            if event.node == holder and event.kind == "role" and event.old in HOLDING \
                    and since - event.at < LOOKUP_WINDOW:
                return event.reason
        return None

    def _write(self, event: store.GatewayEvent) -> None:
        self._spawn(self._append(event))

    async def _append(self, event: store.GatewayEvent) -> None:
        try:
            self._appended += 1
            await asyncio.wait_for(store.append(self.client, self.prefix, event,
                                                trim=self._appended % store.TRIM_EVERY == 1),
                                   WRITE_TIMEOUT)
        except ETCD_ERRORS as exc:
            LOG.warning(f"{self.gateway}: history not written ({event.kind} {event.reason}): "
                        f"{type(exc).__name__}: {exc}",
                        extra={"gateway": self.gateway, "node": self.node})
            if self.metrics is not None:
                self.metrics.history_write_failed(self.gateway)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Let pending writes finish (bounded), then cancel what is left."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=0.3)
        await cancel_all(self._tasks, LOG, f"{self.gateway}: history",
                         {"gateway": self.gateway, "node": self.node})
