"""``vipmgr agent``: the asyncio runtime that wires core, wire, store, dataplane and health.

One process per node. It registers the node, follows the store (resources,
authority holders, switchover requests) through etcd watches, runs one
``GatewayMember`` per gateway whose nodeSelector matches the node, steers
local VMs' traffic, publishes status bound to its lease, and survives etcd
restarts: every etcd loop reconnects with backoff, and the election cores
meanwhile keep deciding on heartbeats and their own deadlines.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import ipaddress
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from typing import Awaitable, Callable

import aetcd.exceptions
import grpc

from vipmgr.agent.backoff import Backoff
from vipmgr.agent.config import AgentConfig, internal_interface_problem, load_config
from vipmgr.config.errors import ConfigError
from vipmgr.agent.ctsync import ConntrackSync
from vipmgr.agent.datapath import NodeDatapath
from vipmgr.agent.inventory import Change, Inventory
from vipmgr.agent.keys import HeartbeatKeys
from vipmgr.agent.looplag import watch_loop_lag
from vipmgr.agent.heartbeat import NodeHeartbeat
from vipmgr.agent.member import GatewayMember, MemberContext
from vipmgr.agent.metrics import AgentMetrics
from vipmgr.agent.registration import primary_interfaces, register_node, routers
from vipmgr.agent.selfcheck import (
    KernelChanges, KernelCheck, check_kernel, gateway_problems, node_problems,
)
from vipmgr.agent.snapshot import Snapshot
from vipmgr.agent.tasks import await_chain
from vipmgr.agent.watch import watch_with_reconnect
from vipmgr.core.election import Cause
from vipmgr.agent.placement import NodePlacement
from vipmgr.dataplane.plan import GarpSettings, egress_ip
from vipmgr.dataplane.reconcile import Dataplane
from vipmgr.health.checks import run_monitor
from vipmgr.health.eligibility import Eligibility, evaluate, member_reasons
from vipmgr.health.monitor import HealthMonitor, Transition
from vipmgr.resources.models import EgressGateway
from vipmgr.resources.status import NodeStatus
from vipmgr.store.authority import read_holders
from vipmgr.store.client import EtcdClient, EtcdUnavailable, connect
from vipmgr.store.codec import CorruptObjectError, prefix_end
from vipmgr.store.placement import read_records
from vipmgr.store.resources import KeyLayout, ResourceStore
from vipmgr.store.switchover import decode_switchover, read_requests, switchover_key
from vipmgr.wire.codec import Encoder
from vipmgr.wire.message import Advert as WireAdvert
from vipmgr.wire.receiver import Receiver
from vipmgr.wire.transport import HeartbeatTransport, open_vrrp_socket

LOG = logging.getLogger("vipmgr.agent")

STATUS_LEASE_TTL = 3
ETCD_ERRORS = (aetcd.exceptions.ClientError, grpc.RpcError, EtcdUnavailable, ConnectionError,
               asyncio.TimeoutError)
RELEASE_LIMIT = 0.8  # per member: the release through etcd, then it is abandoned
SHUTDOWN_LIMIT = 1.4  # SIGTERM to exit, whatever hangs (the release normally takes ~50 ms)
SELF_CHECK_BACKSTOP = 5.0  # the self-check runs on netlink notifications; this is the backstop
SELF_CHECK_SETTLE = 0.005   # a burst of notifications (a take's routes) is read as one
GIL_SWITCH_INTERVAL = 0.001
STORE_RESYNC_INTERVAL = 60.0  # full re-read of the store behind the watch (a backstop only)
DROPS_INTERVAL = 1.0  # nft drop counters -> metric; a counter removed by a role change loses < 1 s


class Agent:
    def __init__(self, config: AgentConfig, metrics: AgentMetrics,
                 config_path: str | None = None):
        self.config = config
        self.config_path = config_path
        self.kernel = KernelCheck()
        self._status_lease = None
        self.node = config.node
        self.metrics = metrics
        self.layout = KeyLayout(config.etcd.prefix)
        self.snapshot = Snapshot()  # gateways and nodes; the rest is the inventory's
        self.inventory = Inventory(config.node)
        self._changes: list[Change] = []  # watch events not yet handed to the inventory
        self._draining: asyncio.Task | None = None
        self.members: dict[str, GatewayMember] = {}
        self.heard: dict[str, dict[str, float]] = {}  # gateway -> peer -> unix time
        self.monitor = HealthMonitor(config.probes)
        self.interfaces: dict[str, ipaddress.IPv4Interface] = {}
        self.transports: dict[str, HeartbeatTransport] = {}
        self.client: EtcdClient | None = None
        self.store: ResourceStore | None = None
        self.datapath: NodeDatapath | None = None
        self.heartbeat: NodeHeartbeat | None = None  # set at start: needs the loop's clock
        self.ctsync: ConntrackSync | None = None
        self.encoder = Encoder()
        self.receiver = Receiver(self.node, {})
        # heartbeat keys (etcd by default, a file, or none when configured insecure):
        # installed in place into the one encoder and receiver
        self.heartbeat_keys = HeartbeatKeys(self.node, self.layout.prefix, self.encoder,
                                            self.receiver, on_state=metrics.heartbeat_auth)
        self.stopping = asyncio.Event()
        self.reload_requested = asyncio.Event()
        self._status_dirty = asyncio.Event()
        self._resync = asyncio.Event()
        self._membership_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self._health_task: asyncio.Task | None = None
        self._last_eligibility: dict[str, Eligibility] = {}  # what each election was told
        self._corrupt_logged: set[str] = set()
        self._registration_problem: str | None = None
        self.placement = NodePlacement(self.node, config.placement_hold_down)
        self._placement_timer: asyncio.TimerHandle | None = None
        self._placement_published: tuple[int, bytes | None] | None = None  # (lease, value)
        self.holders: dict[str, str] = {}  # gateway -> the node etcd names its holder

    # --- setup ------------------------------------------------------------------------

    async def _connect(self) -> EtcdClient:
        backoff = Backoff()
        while True:
            try:
                client = await connect(self.config.etcd)
                client.log_extra = {"node": self.node}
                client.on_move = lambda _old, _new: self.metrics.etcd_member_moved()
                self.metrics.etcd_connection(True)
                return client
            except EtcdUnavailable as exc:
                self.metrics.etcd_connection(False)
                LOG.warning(str(exc), extra={"node": self.node})
                await backoff.wait()

    async def run(self) -> None:
        # The inventory and kernel threads run Python too: hand the GIL back to the loop
        # (heartbeats, timers) every 1 ms instead of the default 5 ms.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)
        loop.add_signal_handler(signal.SIGUSR1, self._dump_tasks, loop)
        # A SIGTERM while still starting (etcd unreachable, say) must stop us too.
        starting = asyncio.create_task(self._start(loop), name="start")
        stopped = asyncio.create_task(self.stopping.wait(), name="stop-signal")
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        else:
            starting.result()
            await stopped
        await self.shutdown()

    async def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.heartbeat_keys.apply_config(self.config)
        self.interfaces = await asyncio.to_thread(primary_interfaces)
        dataplane = await asyncio.to_thread(Dataplane)  # arms capped per gateway
        garp = self.config.garp
        self.datapath = NodeDatapath(self.node, dataplane, self.metrics,
                                     GarpSettings(garp.count, garp.interval, garp.refresh),
                                     loop.time, self.inventory.plan)
        self.ctsync = ConntrackSync(self.node, keyring=lambda: self.receiver.keyring,
                                    topology=lambda: self.snapshot, metrics=self.metrics)
        await self.ctsync.start()
        self.datapath.ctsync = self.ctsync
        self.heartbeat = NodeHeartbeat(self._send, self.metrics, loop.time)
        self.datapath.set_interfaces(self.interfaces)
        self.client = await self._connect()
        await self.heartbeat_keys.start(self.client)
        self.store = ResourceStore(self.client, self.layout)
        await self._register()
        LOG.info("agent started", extra={"node": self.node,
                                         "etcd": self.config.etcd.describe()})
        await self._check_kernel()
        await self._placement_read()
        await self._resync_now()
        self.datapath.start()
        self._start_health()
        self._tasks += [
            asyncio.create_task(self._watch_loop("resources", self.layout.resources_prefix,
                                                 self._resync_now, self._resource_changed),
                                name="watch-resources"),
            asyncio.create_task(self.heartbeat_keys.follow(), name="heartbeat-keys"),
            asyncio.create_task(self._watch_loop("placement", self.layout.placement_prefix,
                                                 self._placement_read,
                                                 lambda _e: self._placement_read()),
                                name="watch-placement"),
            asyncio.create_task(self._watch_loop("authority", self.layout.authority_prefix,
                                                 self._holders_changed,
                                                 lambda _e: self._holders_changed()),
                                name="watch-authority"),
            asyncio.create_task(self._watch_loop("switchover", self.layout.switchover_prefix,
                                                 self._switchover_requested,
                                                 lambda _e: self._switchover_requested()),
                                name="watch-switchover"),
            asyncio.create_task(self._resync_loop(), name="resync"),
            asyncio.create_task(self._status_loop(), name="status"),
            asyncio.create_task(self._selfcheck_loop(), name="selfcheck"),
            asyncio.create_task(self._periodic_loop(), name="periodic"),
            asyncio.create_task(self._reload_loop(), name="reload"),
            asyncio.create_task(watch_loop_lag(self.node, self.metrics.loop_lag), name="loop-lag"),
        ]
        await self._holders_changed()
        # Start-up objects (modules, config, resources) never die: keep them out of the
        # collector's full passes, which otherwise pause the loop for tens of ms.
        gc.freeze()

    async def shutdown(self) -> None:
        """SIGTERM: every member releases (successors take over at once), then exit.

        The release is what matters and is bounded per member (RELEASE_LIMIT); the
        whole stop, cleanup included (watches, sockets, threads, the status lease), gets
        SHUTDOWN_LIMIT, then the process exits anyway: what it leaves in the kernel
        fails closed.
        """
        # Nothing may keep a stopping agent alive past SHUTDOWN_LIMIT: not a task that does
        # not end when cancelled, not a thread stuck in a kernel call, not the interpreter's
        # exit joining its threads. A timer thread cuts it short, whatever blocks.
        watchdog = threading.Timer(SHUTDOWN_LIMIT, self._shutdown_overrun,
                                   (asyncio.get_running_loop(),))
        watchdog.daemon = True
        watchdog.start()
        LOG.info("stopping: releasing gateways", extra={"node": self.node})
        await asyncio.gather(*(m.stop(timeout=RELEASE_LIMIT) for m in self.members.values()))
        self.members.clear()
        await self._cleanup()

    def _shutdown_overrun(self, loop: asyncio.AbstractEventLoop) -> None:
        """Runs on the watchdog thread: say what was stuck (threads and tasks), then exit."""
        LOG.warning(f"shutdown took longer than {SHUTDOWN_LIMIT:g}s; exiting anyway "
                    "(stacks follow)", extra={"node": self.node})
        self._dump_tasks(loop)
        os._exit(0)

    def _dump_tasks(self, loop: asyncio.AbstractEventLoop) -> None:
        """Every thread's stack and every task's await chain to stderr (also on SIGUSR1:
        where a stuck agent waits, without stopping it)."""
        faulthandler.dump_traceback(all_threads=True)
        try:
            tasks = list(asyncio.all_tasks(loop))
        except RuntimeError:  # the loop changed its task set while we copied it
            tasks = []
        for task in tasks:
            sys.stderr.write(f"{task.get_name()} awaits:\n" + "".join(await_chain(task)))
        sys.stderr.flush()

    async def _cleanup(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._health_task is not None:
            self._health_task.cancel()
        if self._draining is not None:
            self._draining.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for transport in self.transports.values():
            transport.close()
        if self.datapath is not None:
            await self.datapath.close()
            await asyncio.to_thread(self.datapath.dp.close)
        if self.ctsync is not None:
            await self.ctsync.close()
        self.inventory.close()
        if self.client is not None:
            await self._drop_status()
            await self.client.close()

    # --- etcd loops -------------------------------------------------------------------

    async def _register(self) -> None:
        """Register (or refresh) our Node from what the kernel shows; say once why it would
        lack an internal IP."""
        why = internal_interface_problem(self.config, self.interfaces)
        if why and why != self._registration_problem:
            LOG.error(why, extra={"node": self.node})
        self._registration_problem = why
        next_hops = await asyncio.to_thread(routers)
        await self._with_retry("register", lambda: register_node(
            self.store, self.config, self.interfaces, next_hops))

    async def _with_retry(self, what: str, fn: Callable[[], Awaitable]) -> object:
        backoff = Backoff()
        while True:
            try:
                return await fn()
            except ETCD_ERRORS as exc:
                self.metrics.etcd_connection(False)
                LOG.warning(f"{what}: etcd error {type(exc).__name__}; retrying",
                            extra={"node": self.node})
                await backoff.wait()

    async def _watch_loop(self, name: str, prefix: str, on_open: Callable[[], Awaitable[None]],
                          on_event: Callable[[object], Awaitable[None] | None]) -> None:
        """Watch ``prefix`` forever (agent/watch.py). ``on_open`` runs each time the watch is
        (re)established, after the watch starts, so a full re-read there misses nothing;
        ``on_event`` gets each event."""
        def broke(exc: BaseException) -> None:
            self.metrics.etcd_connection(False)
            LOG.debug(f"watch {name} broke: {type(exc).__name__}", extra={"node": self.node})

        key = prefix.encode()
        await watch_with_reconnect(self.client, key, range_end=prefix_end(key), on_open=on_open,
                                   on_event=on_event, errors=ETCD_ERRORS, on_error=broke)

    async def _resync_loop(self) -> None:
        backoff = Backoff()
        while True:
            await self._resync.wait()
            self._resync.clear()
            try:
                await self._resync_now()
                backoff.reset()
            except ETCD_ERRORS as exc:
                LOG.warning(f"resync failed: {type(exc).__name__}", extra={"node": self.node})
                await backoff.wait()
                self._resync.set()

    def _corrupt(self, exc: CorruptObjectError) -> None:
        """An unreadable value in the store: skipped, said once per value."""
        if str(exc) not in self._corrupt_logged:
            self._corrupt_logged.add(str(exc))
            LOG.error(f"ignored: {exc}", extra={"node": self.node})

    async def _resync_now(self) -> None:
        """A full read of the resources (start, watch re-established, slow backstop)."""
        kvs = await self.client.get_prefix(self.layout.resources_prefix.encode())
        await self._topology(await self.inventory.load(
            [Change(kv.key.decode(), kv.value, kv.mod_revision) for kv in kvs]))

    def _resource_changed(self, event) -> None:
        """A resource watch event, queued for the inventory (a burst goes as one batch)."""
        kv = event.kv
        self._changes.append(Change(kv.key.decode(), None if event.kind == "DELETE" else kv.value,
                                    kv.mod_revision))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain(), name="inventory")

    async def _drain(self) -> None:
        """Hand queued changes to the inventory (a burst goes as one batch)."""
        while self._changes:
            batch, self._changes = self._changes, []
            snapshot = await self.inventory.apply(batch)
            if snapshot is not None:
                await self._topology(snapshot)
            else:
                self.datapath.request()

    async def _topology(self, snapshot: Snapshot) -> None:
        """Gateways or nodes changed: memberships, eligibility, the plan."""
        for name in self.snapshot.gateways.keys() - snapshot.gateways.keys():
            self.metrics.gateway_deleted(name)
        for gw in snapshot.gateways.values():
            self.metrics.gateway_exists(gw.name, gw.source_ip.mode)
        self.snapshot = snapshot
        await self._reconcile_membership()
        self.datapath.request()
        self._status_dirty.set()

    async def _holders_changed(self) -> None:
        try:
            holders = await read_holders(self.client, self.layout.prefix, self._corrupt)
        except ETCD_ERRORS:
            return
        self.holders = {gateway: holder.node for gateway, holder in holders.items()}
        self.datapath.set_holders(self.holders)
        self._placement_apply()

    async def _switchover_requested(self) -> None:
        """Take the requests of the gateways this node serves (deleted, then handed over)."""
        for gateway, raw in (await read_requests(self.client, self.layout.prefix)).items():
            member = self.members.get(gateway)
            if member is None or not member.serving:
                continue
            key = switchover_key(self.layout.prefix, gateway)
            try:
                target = decode_switchover(raw, key).to
            except CorruptObjectError as exc:
                self._corrupt(exc)
                continue
            LOG.info(f"{gateway}: switchover requested" + (f" to {target}" if target else ""),
                     extra={"gateway": gateway, "node": self.node})
            await self.client.delete(key.encode())
            member.switchover(target)

    # --- membership -------------------------------------------------------------------

    async def _reconcile_membership(self) -> None:
        async with self._membership_lock:
            self._placement_update()
            wanted = {g.name: g for g in self.snapshot.gateways_of(self.node)}
            for name in [n for n in self.members if n not in wanted]:
                await self._leave(name, "no longer selected")
            for name, gw in wanted.items():
                member = self.members.get(name)
                if member is not None and self._member_key(member.gateway) != self._member_key(gw):
                    await self._leave(name, "gateway settings changed")
                    member = None
                if member is None:
                    self._join(gw)
                else:
                    member.gateway = gw
                    placed = self.placement.member(gw.name, gw.failover.priorities, self.holders)
                    member.set_members(self.snapshot.members_of(gw), placed.priority,
                                       placed.move_delay, placed.first_choice)
            self.receiver.set_gateways({name: m.vrid for name, m in self.members.items()})
            self._update_eligibility()

    @staticmethod
    def _member_key(gw: EgressGateway) -> tuple:
        """What, when it changes, needs a new election instance (a graceful handover);
        members and priorities change live (MembersChanged)."""
        return (gw.source_ip, replace(gw.failover, priorities={}), gw.vrid)

    # --- placement (agent/placement.py) ------------------------------------------------

    async def _placement_read(self) -> None:
        """Every node's eligibility record (start, and each change of one)."""
        try:
            records = await read_records(self.client, self.layout.placement_prefix)
        except ETCD_ERRORS:
            return
        self.placement.records(records, time.time())
        self._placement_apply()

    def _placement_update(self) -> bool:
        """Recompute the choices from the store and the records; True if they changed."""
        if self._placement_timer is not None:
            self._placement_timer.cancel()
        at = self.placement.next_change()
        if at is not None:  # a gone node stops counting: recompute then
            loop = asyncio.get_running_loop()
            self._placement_timer = loop.call_at(loop.time() + max(0.0, at - time.time()),
                                                 self._placement_apply)
        gws = self.snapshot.gateways
        changed = self.placement.update({g: self.snapshot.members_of(gw) for g, gw in gws.items()},
                                        {g: gw.failover.priorities for g, gw in gws.items()},
                                        time.time())
        if changed:
            LOG.info("placement: " + ", ".join(
                f"{g} {'/'.join(c) or '-'}" for g, c in sorted(self.placement.choices.items())),
                extra={"node": self.node})
        return changed

    def _placement_apply(self) -> None:
        """Hand every member its priority and place in the queue of moves."""
        self._placement_update()
        for member in self.members.values():
            placed = self.placement.member(member.name, member.gateway.failover.priorities,
                                           self.holders)
            member.set_members(member.election.cfg.members, placed.priority, placed.move_delay,
                               placed.first_choice)
        self.metrics.placement(self.placement.share())

    async def _placement_publish(self, lease, eligible: bool) -> None:
        """This node's record: there while it is eligible, bound to the status lease."""
        self.placement.set_eligible(eligible, time.time())
        value = self.placement.record()
        if self._placement_published is not None and self._placement_published[0] == lease.id \
                and (self._placement_published[1] is None) == (value is None):
            return
        key = self.layout.placement_key(self.node).encode()
        if value is None:
            await self.client.delete(key)
        else:
            await self.client.put(key, value, lease=lease)
        self._placement_published = (lease.id, value)

    def _join(self, gw: EgressGateway) -> None:
        me = self.snapshot.nodes[self.node]
        interface, ip, _why = egress_ip(gw, me, self.interfaces)
        members = self.snapshot.members_of(gw)
        placed = self.placement.member(gw.name, gw.failover.priorities, self.holders)
        priority = placed.priority
        if interface is not None:
            self._ensure_transport(interface)
        ctx = MemberContext(self.node, self.datapath, self.metrics, self.heartbeat,
                            asyncio.get_running_loop().time, self.layout.prefix,
                            self._status_dirty.set, self.config.placement_hold_down)
        member = GatewayMember(ctx, gw, members, priority, interface, ip, self.client,
                               placed.move_delay, placed.first_choice)
        self.members[gw.name] = member
        self.heard.setdefault(gw.name, {})
        self.metrics.gateway_joined(gw.name)
        LOG.info(f"{gw.name}: joined (members {', '.join(members)}, priority {priority}, "
                 f"interface {interface or '-'})", extra={"gateway": gw.name, "node": self.node})
        told = self._eligibility(gw)
        member.start(told.healthy, told.cordoned)
        self._last_eligibility[gw.name] = told
        self.metrics.gateway_eligibility(gw.name, told.eligible)

    async def _leave(self, name: str, why: str) -> None:
        member = self.members.pop(name)
        LOG.info(f"{name}: leaving ({why})", extra={"gateway": name, "node": self.node})
        await member.stop(timeout=0.8)
        self.heard.pop(name, None)
        self._last_eligibility.pop(name, None)
        self.metrics.gateway_left(name)
        await self._drop_member_status(name)

    def _ensure_transport(self, interface: str) -> None:
        if interface in self.transports:
            return
        try:
            sock = open_vrrp_socket(interface, multicast=not self.config.unicast_peers)
        except OSError as exc:
            LOG.error(f"cannot open heartbeat socket on {interface}: {exc}",
                      extra={"node": self.node})
            return
        transport = HeartbeatTransport(
            sock, interface, self.encoder, self.receiver, self._on_advert,
            peers=self.config.unicast_peers or None,
            on_reject=lambda reason, _if: self.metrics.heartbeat_rejected(str(reason)))
        transport.start(asyncio.get_running_loop())
        self.transports[interface] = transport

    def _send(self, interface: str, adverts: list[WireAdvert]) -> None:
        transport = self.transports.get(interface)
        if transport is not None:
            transport.send(adverts)

    def _on_advert(self, advert: WireAdvert, _src: str, _ifname: str) -> None:
        member = self.members.get(advert.gateway)
        if member is None:
            return
        self.heard.setdefault(advert.gateway, {})[advert.node] = time.time()
        member.on_advert(advert)

    # --- eligibility ------------------------------------------------------------------

    def _eligibility(self, gw: EgressGateway) -> Eligibility:
        """``gw``'s eligibility here from this moment's inputs (health/eligibility.py)."""
        return evaluate(health_ready=self.monitor.ready,
                        health_reasons=self.monitor.failing_reasons(),
                        cordoned=self._last_cordoned(),
                        datapath_problems=self._datapath_problems(gw))

    def _datapath_problems(self, gw: EgressGateway | None = None) -> list[str]:
        """The node's own problems, and with ``gw`` also those of that gateway alone."""
        problems = node_problems(self.kernel, self.config.internal_interface)
        if self.datapath is not None and self.datapath.error:
            problems.append(self.datapath.error)
        me = self.snapshot.nodes.get(self.node)
        if gw is not None and me is not None:
            problems += gateway_problems(gw, me, self.interfaces, self.kernel)
        return problems

    def _update_eligibility(self) -> None:
        """Tell each election what changed in its eligibility (health/eligibility.py)."""
        changed = False
        for name, member in self.members.items():
            new = self._eligibility(member.gateway)
            old = self._last_eligibility.get(name)
            if old is None or old.healthy != new.healthy:
                member.set_eligible(new.healthy, new.release_reason)
            if old is None or old.cordoned != new.cordoned:
                member.set_cordoned(new.cordoned)
            if old is None or old.inputs != new.inputs:
                changed = True
                self._last_eligibility[name] = new
                self.metrics.gateway_eligibility(name, new.eligible)
        if changed:
            self._status_dirty.set()

    def _start_health(self) -> None:
        def on_transition(t: Transition) -> None:
            LOG.info(f"probe {t.probe}: {t.old} -> {t.new} ({t.reason})",
                     extra={"node": self.node, "probe": t.probe})
            self.metrics.probes_updated(self.monitor.statuses())
            self._update_eligibility()

        self._health_task = asyncio.create_task(run_monitor(self.monitor, on_transition),
                                                name="health")

    async def _check_kernel(self) -> None:
        self.interfaces = await asyncio.to_thread(primary_interfaces)
        self.datapath.set_interfaces(self.interfaces)
        wanted = {self.config.internal_interface}
        wanted |= {m.info.interface for m in self.members.values() if m.info.interface}
        self.kernel = await asyncio.to_thread(check_kernel, wanted)

    async def _selfcheck_loop(self) -> None:
        """The self-check, whenever the kernel says a link, address or route changed (a lost
        carrier takes a two-node group's holder out at once), else every few seconds."""
        changed = asyncio.Event()
        watcher = KernelChanges(changed.set)
        watcher.start(asyncio.get_running_loop())
        try:
            while True:
                try:
                    await asyncio.wait_for(changed.wait(), SELF_CHECK_BACKSTOP)
                    await asyncio.sleep(SELF_CHECK_SETTLE)
                except asyncio.TimeoutError:
                    pass
                changed.clear()
                await self._check_kernel()
                self._update_eligibility()
        finally:
            watcher.close()

    async def _periodic_loop(self) -> None:
        """Drop counters every second; drift repair, resync and GARP refresh on slower clocks."""
        last_verify = last_garp = last_store = time.monotonic()
        while True:
            await asyncio.sleep(DROPS_INTERVAL)
            self.datapath.read_drops()
            now = time.monotonic()
            if now - last_verify >= self.config.reconcile_interval:
                last_verify = now
                await self.datapath.verify()
            if now - last_store >= STORE_RESYNC_INTERVAL:
                last_store = now
                self._resync.set()
            refresh = self.config.garp.refresh
            if refresh and now - last_garp >= refresh:
                last_garp = now
                for name, member in self.members.items():
                    if member.serving:
                        self.datapath.announce(name)

    async def _reload_loop(self) -> None:
        """SIGHUP: re-read the config file; probes keep the state of unchanged ones."""
        while True:
            await self.reload_requested.wait()
            self.reload_requested.clear()
            try:
                new = load_config(self.config_path, node=self.node)
            except ConfigError as exc:
                LOG.error(f"reload rejected, keeping the old config: {exc}",
                          extra={"node": self.node})
                continue
            self.config = replace(new, etcd=self.config.etcd)
            self.heartbeat_keys.apply_config(self.config)
            self.monitor.reconfigure(new.probes)
            if self._health_task is not None:
                self._health_task.cancel()
            self._start_health()
            await self._register()
            LOG.info("config reloaded", extra={"node": self.node})

    # --- status -----------------------------------------------------------------------

    async def _status_loop(self) -> None:
        lease = None
        while True:
            try:
                if lease is None:
                    lease = await self.client.lease(STATUS_LEASE_TTL)
                    self._status_lease = lease
                await self._publish(lease)
                await lease.refresh()
            except ETCD_ERRORS as exc:
                LOG.debug(f"status publish failed: {type(exc).__name__}",
                          extra={"node": self.node})
                lease = None
            try:
                await asyncio.wait_for(self._status_dirty.wait(), self.config.status_interval)
            except asyncio.TimeoutError:
                pass
            self._status_dirty.clear()

    async def _publish(self, lease) -> None:
        dp_problems = self._datapath_problems()
        status = NodeStatus(
            node=self.node, ready=self.monitor.ready,
            ready_reason="; ".join(self.monitor.failing_reasons()),
            datapath_ready=not dp_problems, datapath_reason="; ".join(dp_problems),
            updated=time.time(), agent_version=_version())
        self.metrics.probes_updated(self.monitor.statuses())
        eligibility = evaluate(  # the node-wide part: its own problems, no gateway's
            health_ready=self.monitor.ready, health_reasons=self.monitor.failing_reasons(),
            cordoned=self._last_cordoned(), datapath_problems=dp_problems)
        self.metrics.node_eligibility(eligibility)
        await self._placement_publish(lease, eligibility.node_eligible)
        await self.client.put(self.layout.node_status_key(self.node).encode(),
                              json.dumps(status.to_dict()).encode(), lease=lease)
        horizon = time.time() - 3 * max(0.05, max(
            (m.timers.standby_advert_interval for m in self.members.values()), default=0.05))
        for name, member in list(self.members.items()):
            # the flags as the election was last told; the reasons as of now
            told = self._last_eligibility.get(name)
            healthy, cordoned = told.inputs if told is not None else (False, False)
            reasons = member_reasons(healthy, cordoned,
                                     () if healthy else self._eligibility(member.gateway).problems)
            heard = {peer: t for peer, t in self.heard.get(name, {}).items() if t >= horizon}
            doc = member.status(healthy and not cordoned, reasons, heard)
            await self.client.put(self.layout.gateway_status_key(name, self.node).encode(),
                                  json.dumps(doc.to_dict()).encode(), lease=lease)

    def _last_cordoned(self) -> bool:
        me = self.snapshot.nodes.get(self.node)
        return bool(me and me.unschedulable)

    async def _drop_member_status(self, gateway: str) -> None:
        try:
            await self.client.delete(self.layout.gateway_status_key(gateway, self.node).encode())
        except ETCD_ERRORS:
            pass

    async def _drop_status(self) -> None:
        if self._status_lease is None:
            return
        try:
            await asyncio.wait_for(self._status_lease.revoke(), 1.0)
        except ETCD_ERRORS:
            pass


def _version() -> str:
    from importlib.metadata import version
    return version("vipmgr")


FAILOVER_REASONS = tuple(c.value for c in Cause)
