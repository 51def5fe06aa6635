"""The agent's side of the dataplane: which gateways this node serves, who holds the
others, and one reconciler task that makes the kernel match.

The election core says *when* to serve (``Program``/``Withdraw``); etcd says who
holds the other gateways (for steering); the store says what is selected. This
module has the three joined into one ``NodePlan`` (by the inventory, on its own
thread: vipmgr.agent.inventory) and hands it to the reconciler,
coalescing bursts of changes into one kernel update. A take is armed in the
same nft transaction that installs it; withdrawing never waits behind a
queued reconcile of something else.

The bookkeeping (what is served until when, what this process armed, which
generation the kernel reflects) is vipmgr.agent.servebook.ServeBook, sans I/O;
this class is the asyncio adapter around it: events, the worker task, the
dataplane's thread futures, logs and metrics.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import Awaitable, Callable, Iterable, Mapping

from vipmgr.agent.ctsync import ConntrackSync
from vipmgr.agent.metrics import AgentMetrics
from vipmgr.agent.servebook import Outcome, Serve, ServeBook
from vipmgr.dataplane.kernel import KernelError
from vipmgr.dataplane.nftstate import Refresh
from vipmgr.dataplane.plan import GarpSettings, NodePlan
from vipmgr.dataplane.reconcile import Dataplane

LOG = logging.getLogger("vipmgr.datapath")
RETRY_AFTER = 0.2  # seconds before a failed reconcile is tried again
INVENTORY_GATHER = 0.1  # inventory-only changes wait this long for more of their burst


# (serving, holders, interfaces, garp) -> the node's plan, built off the event loop
Planner = Callable[[Iterable[str], Mapping[str, str], Mapping[str, ipaddress.IPv4Interface],
                    GarpSettings], Awaitable[NodePlan]]


class NodeDatapath:
    def __init__(self, node: str, dataplane: Dataplane, metrics: AgentMetrics,
                 garp: GarpSettings, clock: Callable[[], float], planner: Planner):
        self.node = node
        self.dp = dataplane
        self.metrics = metrics
        self.garp = garp
        self.clock = clock
        self.planner = planner
        self.ctsync: ConntrackSync | None = None  # set by the runtime: VIP-mode flow replication
        self.interfaces: dict[str, ipaddress.IPv4Interface] = {}
        self.book = ServeBook()
        self.holders: dict[str, str] = {}     # gateway -> node holding authority (etcd)
        self.plan = NodePlan(node)
        self.error: str = ""                  # last reconcile failure, for datapath-ready
        self._dirty = asyncio.Event()   # something to reconcile
        self._urgent = asyncio.Event()  # ... that must not wait for a burst to gather
        self._applied_event = asyncio.Event()
        self._deferred_flush = None  # the background flush whose counts are hooked already
        self._refreshes: dict[str, float] = {}  # gateway -> until: this turn's refreshes
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    @property
    def serving(self) -> dict[str, float]:
        """gateway -> until (core clock): what this node serves."""
        return self.book.serving

    # --- inputs ---------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._worker(), name="datapath")
        self._kick()

    def set_interfaces(self, interfaces: dict[str, ipaddress.IPv4Interface]) -> None:
        if interfaces != self.interfaces:
            self.interfaces = interfaces
            self._kick()

    def set_holders(self, holders: dict[str, str]) -> None:
        if holders != self.holders:
            self.holders = holders
            self._kick()

    def program(self, gateway: str, until: float) -> None:
        """Serve ``gateway`` until ``until`` (core clock): the take arms the dead-man in the
        transaction that installs it, later calls re-arm it without waiting. State
        changes here, in the core's order; the kernel follows. Refreshes asked for in one
        turn of the loop (the node's advert refreshes every gateway it holds) go to the
        kernel as one transaction, each gateway still to its own ``until``."""
        serve = self.book.program(gateway, until, self.clock())
        if serve is Serve.REFRESH:
            if not self._refreshes:
                self._loop.call_soon(self._refresh_batch)
            self._refreshes[gateway] = until
        elif serve is not Serve.NOTHING:
            self._kick()  # a take, or its take is in flight / its arming came late: arm

    def _refresh_batch(self) -> None:
        batch, self._refreshes = self._refreshes, {}
        now = self.clock()
        # one withdrawn since it asked: not ours to arm any more
        batch = {gw: until for gw, until in batch.items() if gw in self.book.armed}
        if batch:
            future = self.dp.refresh_nowait({gw: until - now for gw, until in batch.items()})
            future.add_done_callback(lambda f: self._loop.call_soon_threadsafe(
                self._refresh_outcomes, list(batch), f))

    def _refresh_outcomes(self, gateways: list[str], future) -> None:
        exc = future.exception()
        results: dict[str, Refresh] = {} if exc is not None else future.result()
        for gateway in gateways:
            self._refresh_outcome(gateway, results.get(gateway), exc)

    def _refresh_outcome(self, gateway: str, result: Refresh | None,
                         exc: BaseException | None) -> None:
        outcome = self.book.refresh_outcome(gateway, result)
        if outcome is Outcome.REFRESHED:
            self.metrics.deadman_refreshed(gateway)
        elif outcome is Outcome.LATE:
            # the kernel state expires by itself and the core fences on its own clock;
            # nothing broke
            LOG.warning(f"dead-man refresh of {gateway} came too late (the machine is loaded?)",
                        extra={"node": self.node, "gateway": gateway})
        elif outcome is Outcome.REPAIR:
            # Only a kernel error makes the datapath "not ready"; a missing element is
            # drift the reconcile repairs.
            LOG.error(f"dead-man refresh of {gateway} failed: {exc or 'not in the kernel'}",
                      extra={"node": self.node, "gateway": gateway})
            if exc is not None:
                self.error = f"dead-man refresh of {gateway} failed: {exc}"
            self._kick()

    def withdraw(self, gateway: str) -> int:
        """Stop serving ``gateway``; returns the generation ``settled`` waits for."""
        if self.book.withdraw(gateway):
            if self.ctsync is not None:
                self.ctsync.stop_serving(gateway)  # before the leave flush: none of it is sent
            self._kick()
        return self.book.generation

    async def settled(self, generation: int, limit: float) -> None:
        """Until the kernel reflects every change up to ``generation``, or ``limit``
        seconds (the dead-man timeout: by then the kernel has let go by itself).

        The member awaits this before an etcd op that follows a Withdraw (a
        release, a revoke): the successor must never find our VIP, SNAT or ARP
        answers still in the kernel.
        """
        async def applied() -> None:
            while not self.book.settled(generation):
                self._applied_event.clear()
                await self._applied_event.wait()

        if not self.book.settled(generation):
            try:
                await asyncio.wait_for(applied(), limit)
            except asyncio.TimeoutError:
                LOG.warning("withdraw not applied in time; the dead-man switch has expired it",
                            extra={"node": self.node})

    def request(self) -> None:
        """The inventory changed (policies, VMs): reconcile within INVENTORY_GATHER, so a
        burst of changes costs one plan and one kernel transaction, not one each."""
        self._kick(urgent=False)

    def _kick(self, urgent: bool = True) -> None:
        """Reconcile: at once for what moves roles (takes, withdraws, holders, drift)."""
        self._dirty.set()
        if urgent:
            self._urgent.set()

    # --- the reconciler ---------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            await self._dirty.wait()
            if not self._urgent.is_set():
                try:  # only the inventory changed: gather the burst (a take cuts it short)
                    await asyncio.wait_for(self._urgent.wait(), INVENTORY_GATHER)
                except asyncio.TimeoutError:
                    pass
            async with self._lock:
                await self._apply(verify=self.book.verify_next)

    async def verify(self) -> None:
        """Periodic: re-read the kernel and repair drift (someone flushed our table)."""
        async with self._lock:
            await self._apply(verify=True)

    async def _apply(self, verify: bool) -> None:
        self._dirty.clear()
        self._urgent.clear()
        book = self.book
        generation = book.generation
        plan = await self.planner(book.serving, self.holders, self.interfaces, self.garp)
        taking = book.taking()
        if taking and self.ctsync is not None and book.current(generation):
            await self.ctsync.before_take(taking)  # replicated flows in before the VIP is added
        if not book.commit(generation, verify):
            self._kick()  # a take or withdraw while planning: plan again with it
            return
        arm = book.arm_request(self.clock())
        started = time.perf_counter()
        try:
            report = await asyncio.wrap_future(
                self.dp.reconcile_nowait(plan, arm=arm, verify=verify))
        except (KernelError, OSError) as exc:
            self.error = f"dataplane reconcile failed: {exc}"
            LOG.error(self.error, extra={"node": self.node})
            book.reconcile_failed()
            asyncio.get_running_loop().call_later(RETRY_AFTER, self._kick)
            return
        self.error = ""
        self.plan = plan
        if self.ctsync is not None:
            self.ctsync.applied(plan)
        book.applied(generation, report.armed, {g.name for g in plan.active})
        self._applied_event.set()
        for problem in plan.problems:
            LOG.warning(problem, extra={"node": self.node})
        if report:
            LOG.info(f"dataplane: {report}", extra={
                "node": self.node, "ms": round((time.perf_counter() - started) * 1e3, 2)})
        for gw in plan.gateways:
            sources = sum(len(s.sources) for s in gw.selections)
            cidrs = sum(len(s.cidrs) for s in gw.selections)
            self.metrics.snat_sets(gw.name, sources, cidrs)
        self._count_deleted(report.conntrack_deleted)
        if report.deferred_flush is not None and report.deferred_flush is not self._deferred_flush:
            # one future serves a burst of reconciles: count its result once
            self._deferred_flush = report.deferred_flush
            report.deferred_flush.add_done_callback(self._deferred_done)
        vip_owner = {(g.active.interface, g.active.egress_ip): g.name
                     for g in plan.active if g.active is not None}
        for future in report.announcements:
            future.add_done_callback(lambda f: self._garp_done(f, vip_owner))

    def _count_deleted(self, deleted: Mapping[tuple[str, str], int]) -> None:
        for (gateway, reason), count in deleted.items():
            self.metrics.conntrack_entries_deleted(gateway, count, reason=reason)

    def _deferred_done(self, future) -> None:
        """Runs on the flusher's thread: count what it deleted (metrics are thread-safe)."""
        exc = future.exception()
        if exc is not None:
            LOG.warning(f"deferred conntrack deletion failed: {exc}", extra={"node": self.node})
            return
        self._count_deleted(future.result())

    def read_drops(self) -> None:
        """Periodic: the kernel's drop counters into ``vipmgr_dropped_packets_total``.

        Not awaited: the read queues behind reconciles on the kernel thread, and the
        caller's self-check must not wait for them. The result is handled on that thread
        (the only one that ever calls ``drops_read``)."""
        self.dp.drops_nowait().add_done_callback(self._drops_done)

    def _drops_done(self, future) -> None:
        exc = future.exception()
        if isinstance(exc, (KernelError, OSError)):
            LOG.warning(f"reading the drop counters failed: {exc}", extra={"node": self.node})
        elif exc is not None:
            LOG.error(f"reading the drop counters: {exc!r}", exc_info=exc,
                      extra={"node": self.node})
        else:
            self.metrics.drops_read(future.result())

    def _garp_done(self, future, vip_owner: dict[tuple[str, str], str]) -> None:
        """Runs on the GARP thread: count what went out (metrics are thread-safe)."""
        if future.exception() is not None:
            LOG.error(f"gratuitous ARP failed: {future.exception()}", extra={"node": self.node})
            return
        for ann in future.result():
            if ann.frames_sent:
                gateway = vip_owner.get((ann.interface, ann.ip), "?")
                self.metrics.garp_sent(gateway, ann.interface, ann.frames_sent)

    def announce(self, gateway: str) -> None:
        """Re-announce a VIP now (periodic refresh, or a healed split)."""
        for future in self.dp.announce(gateway):
            future.add_done_callback(lambda f: self._garp_done(
                f, {(g.active.interface, g.active.egress_ip): g.name
                    for g in self.plan.active if g.active is not None}))

    async def close(self) -> None:
        """Stop the worker after carrying out what is pending (a shutdown's withdraws)."""
        if self._task is None:
            return  # never started: no snapshot yet, so no plan may touch the kernel
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        if self._dirty.is_set():
            async with self._lock:
                await self._apply(verify=False)

