"""Conntrack replication of VirtualIPAddress gateways: the active streams its flows' SNAT
entries to the standbys, a standby injects them into its kernel before it takes the VIP.

Why: a failover that moves the VIP but not the state kills every connection
whose next packet is the server's (the new active has no entry, the segment is
addressed to a local address, the stack answers with a RST), and a client
packet picked up mid-stream may be SNATed to another port than before (two VMs
with the same source port to the same server). With the entries in place
before the VIP is announced, a failover costs each connection one
retransmission (docs/conntrack.md).

The wire (UDP, port ``PORT`` on the nodes' internal addresses), one frame per
datagram, HMAC-SHA256 with the heartbeat keys (``KeyRing``: the first key
signs, any key verifies; unsigned frames only when the ring holds no key):

    header  !4sBBHQQd  magic "VCT1", kind, flags, record count, session, seq, sent (wall s)
    names   u8 len + gateway, u8 len + sender node
    records !BB4s4sHHH proto (| 0x80: ended), TCP state, src, dst, sport, dport, VIP port
    tag     32 bytes HMAC of everything before it (flag SIGNED)

Kinds: DELTA (NEW/DESTROY events as they happen), SNAPSHOT/SNAPSHOT_END (a full
dump, on a new session, on a standby's request, after an event overrun),
KEEPALIVE (every second: carries the seq, so a lost last delta is noticed) and
RESYNC (standby -> active: "send me a snapshot"). ``seq`` counts per receiver;
a gap or a new session makes the standby ask for a snapshot (rate-limited).
Frames older than ``MAX_AGE`` by the receiver's clock are refused (replays;
the nodes' clocks must agree within that, which they do with NTP).

The standby holds at most ``max_entries`` flows per gateway (new ones beyond
are refused and counted); nothing reaches its kernel before the take. The
active reads NEW and DESTROY events (vipmgr.dataplane.ctsync.CtEvents) and sends
what it read at once: no timer, a burst is batched by the read itself.

Integration (the agent): ``ConntrackSync`` is one object per node::

    sync = ConntrackSync(node, keyring=lambda: receiver.keyring,
                         topology=lambda: agent.snapshot, metrics=metrics)
    await sync.start()
    sync.stop_serving(gw)            # NodeDatapath.withdraw: before the leave flush
    await sync.before_take(gws)      # NodeDatapath._apply: before the take is armed
    sync.applied(plan)               # NodeDatapath._apply: after each reconcile
    await sync.close()
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable

from vipmgr.dataplane.ctsync import (ENDED, RECORD, CtEvents, CtSocket, Flow, InjectResult,
                                     record, vip_keys)
from vipmgr.dataplane.kernel import KernelError, NetnsThread
from vipmgr.resources.models import MODE_VIP
from vipmgr.wire.keys import KeyRing

if TYPE_CHECKING:
    from vipmgr.agent.snapshot import Snapshot
    from vipmgr.dataplane.plan import NodePlan

LOG = logging.getLogger("vipmgr.ctsync")

PORT = 7612
MAGIC = b"VCT1"
DELTA, SNAPSHOT, SNAPSHOT_END, KEEPALIVE, RESYNC = 1, 2, 3, 4, 5
KINDS = {DELTA, SNAPSHOT, SNAPSHOT_END, KEEPALIVE, RESYNC}
SIGNED, BEGIN = 0x1, 0x2
TAG = 32
RECORDS_PER_FRAME = 80  # 80 x 16 bytes + header + tag < 1400: one unfragmented datagram
MAX_DATAGRAM = 2048
MAX_AGE = 10.0          # s: a frame stamped longer ago (or ahead) is refused
KEEPALIVE_EVERY = 1.0   # s
RESYNC_EVERY = 1.0      # s: a standby asks at most this often
MAX_ENTRIES = 65536     # flows cached per gateway on a standby
INJECT_BUDGET = 0.5     # s: a take waits at most this long for the injection
RCVBUF = 4 << 20        # the standby's receive buffer: a snapshot burst of 10k flows fits

_HEADER = struct.Struct("!4sBBHQQd")


class FrameError(ValueError):
    """A datagram that is not a valid frame; ``reason`` labels the reject metric."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Frame:
    kind: int
    gateway: str
    node: str
    session: int
    seq: int
    sent: float
    flows: tuple[tuple[Flow, bool], ...] = ()  # (flow, ended)
    begin: bool = False  # SNAPSHOT: the first frame of a snapshot


def encode(frame: Frame, keyring: KeyRing) -> bytes:
    return encode_records(frame.kind, frame.gateway, frame.node, frame.session, frame.seq,
                          frame.sent, [record(f, ended) for f, ended in frame.flows],
                          keyring, frame.begin)


def encode_records(kind: int, gateway: str, node: str, session: int, seq: int, sent: float,
                   records: list[bytes], keyring: KeyRing, begin: bool = False) -> bytes:
    """A frame from records already packed (``vipmgr.dataplane.ctsync.RECORD``)."""
    signed = bool(keyring.keys)
    flags = (SIGNED if signed else 0) | (BEGIN if begin else 0)
    gw, who = gateway.encode(), node.encode()
    body = b"".join([_HEADER.pack(MAGIC, kind, flags, len(records), session, seq, sent),
                     bytes([len(gw)]), gw, bytes([len(who)]), who, *records])
    return body + keyring.sign(body) if signed else body


def decode(data: bytes, keyring: KeyRing, now: float) -> Frame:
    """Verify, then parse: the HMAC is checked before any other claim is believed."""
    if len(data) < _HEADER.size + 2 or data[:4] != MAGIC:
        raise FrameError("malformed", "not a replication frame")
    flags = data[5]
    if flags & SIGNED:
        if len(data) < _HEADER.size + 2 + TAG:
            raise FrameError("malformed", "truncated tag")
        body, tag = data[:-TAG], data[-TAG:]
        if keyring.verify(body, tag) is None:
            raise FrameError("auth", "HMAC does not verify with any key")
    elif keyring.keys or keyring.require_auth:
        raise FrameError("auth", "unsigned frame, keys are configured")
    else:
        body = data
    _magic, kind, _flags, count, session, seq, sent = _HEADER.unpack_from(body)
    if kind not in KINDS:
        raise FrameError("malformed", f"unknown kind {kind}")
    off = _HEADER.size
    names = []
    for _ in range(2):
        if off >= len(body) or off + 1 + body[off] > len(body):
            raise FrameError("malformed", "truncated name")
        names.append(body[off + 1:off + 1 + body[off]].decode("utf-8", "replace"))
        off += 1 + body[off]
    if len(body) - off != count * RECORD.size:
        raise FrameError("malformed", f"{count} records do not fill {len(body) - off} bytes")
    if abs(now - sent) > MAX_AGE:
        raise FrameError("stale", f"stamped {now - sent:.1f} s ago")
    flows = []
    for proto, state, src, dst, sport, dport, nat in RECORD.iter_unpack(body[off:]):
        flows.append((Flow(proto & 0x7F, socket.inet_ntoa(src), sport, socket.inet_ntoa(dst),
                           dport, nat, state), bool(proto & ENDED)))
    return Frame(kind, names[0], names[1], session, seq, sent, tuple(flows),
                 bool(flags & BEGIN))


# --- the standby's state (sans-I/O) ---------------------------------------------------


@dataclass
class FollowState:
    """One gateway's replicated flows on a standby, and whether they are complete.

    ``synced`` is True once a whole snapshot of the current session arrived and no
    frame has been missed since; what is cached is committed at a take either way
    (a partial state still saves the flows it has)."""

    gateway: str
    max_entries: int = MAX_ENTRIES
    flows: dict[tuple, Flow] = field(default_factory=dict)
    source: str | None = None  # the sender node
    session: int = 0
    seq: int = 0
    synced: bool = False
    overflow: int = 0          # flows refused because the cache was full (since start)
    lag: float = 0.0           # s, last delta: receive time - send stamp
    _gen: dict[tuple, int] = field(default_factory=dict)
    _snapshot: int = 0         # generation of the snapshot being received, 0: none

    def on_frame(self, frame: Frame, now: float) -> tuple[int, bool]:
        """Apply one verified frame; (flows applied, snapshot wanted?)."""
        wanted = False
        if (frame.node, frame.session) != (self.source, self.session):
            # a new sender (another active) or a restarted one: follow it, ask for all
            self.source, self.session, self.seq = frame.node, frame.session, frame.seq - 1
            self.synced, self._snapshot = False, 0
            wanted = not (frame.kind == SNAPSHOT and frame.begin)
        elif frame.seq <= self.seq:
            return 0, False  # duplicate or replayed within the session
        elif frame.seq != self.seq + 1:
            self.synced, self._snapshot = False, 0
            wanted = not (frame.kind == SNAPSHOT and frame.begin)
        self.seq = frame.seq
        applied = 0
        if frame.kind == SNAPSHOT:
            if frame.begin:
                self._snapshot = frame.seq
            applied = self._apply(frame.flows, self._snapshot)
        elif frame.kind == SNAPSHOT_END:
            if self._snapshot:
                for key in [k for k, g in self._gen.items() if g < self._snapshot]:
                    del self.flows[key], self._gen[key]
                self.synced = True
                self._snapshot = 0
        elif frame.kind == DELTA:
            applied = self._apply(frame.flows, self._snapshot or self.seq)
            if frame.flows:
                self.lag = max(0.0, now - frame.sent)
        return applied, wanted

    def _apply(self, flows: Iterable[tuple[Flow, bool]], gen: int) -> int:
        n = 0
        for flow, ended in flows:
            key = flow.key
            if ended:
                if self.flows.pop(key, None) is not None:
                    del self._gen[key]
            elif key in self.flows or len(self.flows) < self.max_entries:
                self.flows[key] = flow
                self._gen[key] = gen
            else:
                self.overflow += 1
                continue
            n += 1
        return n


class NullSyncMetrics:
    """What ``ConntrackSync`` reports, as no-ops (the agent's metrics implement these)."""

    def ctsync_replicated(self, gateway: str, direction: str, count: int) -> None: ...
    def ctsync_entries(self, gateway: str, count: int) -> None: ...
    def ctsync_lag(self, gateway: str, seconds: float) -> None: ...
    def ctsync_resync(self, gateway: str, reason: str) -> None: ...
    def ctsync_committed(self, gateway: str, created: int, existed: int, failed: int,
                         seconds: float) -> None: ...
    def ctsync_rejected(self, reason: str) -> None: ...
    def ctsync_overflow(self, gateway: str, count: int) -> None: ...


_METRIC_METHODS = [m for m in vars(NullSyncMetrics) if m.startswith("ctsync_")]


def _sync_metrics(metrics) -> NullSyncMetrics:
    """The agent's metrics if they carry the ctsync families, else no-ops."""
    if metrics is not None and all(hasattr(metrics, m) for m in _METRIC_METHODS):
        return metrics
    return NullSyncMetrics()


@dataclass(frozen=True)
class SyncGateway:
    """A VIP gateway this node is a member of: its VIP and the other members' addresses."""

    name: str
    vip: str
    peers: tuple[str, ...]


def sync_gateways(node: str, plan: "NodePlan", snapshot: "Snapshot") -> dict[str, SyncGateway]:
    """The VIP gateways of ``plan`` (this node's memberships) with their peers' internal
    addresses, from the agent's snapshot of gateways and nodes."""
    out = {}
    for gp in plan.gateways:
        gw = snapshot.gateways.get(gp.name)
        if gw is None or gw.source_ip.mode != MODE_VIP or not gw.source_ip.virtual_ip:
            continue
        peers = tuple(sorted(
            snapshot.nodes[n].internal_ip for n in snapshot.members_of(gw)
            if n != node and n in snapshot.nodes and snapshot.nodes[n].internal_ip))
        out[gp.name] = SyncGateway(gp.name, str(gw.source_ip.virtual_ip), peers)
    return out


@dataclass
class _Peer:
    seq: int = 0
    last_sent: float = 0.0


class ConntrackSync:
    """This node's replication: sender for the VIP gateways it serves, follower for the
    others. Runs on the agent's event loop; kernel calls on its own namespace thread."""

    def __init__(self, node: str, keyring: Callable[[], KeyRing],
                 topology: Callable[[], "Snapshot"], metrics=None, *,
                 port: int = PORT, netns: str | None = None, bind: str = "0.0.0.0",
                 max_entries: int = MAX_ENTRIES, inject_budget: float = INJECT_BUDGET) -> None:
        self.node = node
        self.keyring = keyring
        self.topology = topology
        self.metrics = _sync_metrics(metrics)
        self.port = port
        self.bind = bind
        self.max_entries = max_entries
        self.inject_budget = inject_budget
        self.gateways: dict[str, SyncGateway] = {}
        self.serving: dict[str, SyncGateway] = {}   # gateway -> config, while we send
        self.following: dict[str, FollowState] = {}
        self.rejected: dict[str, int] = {}
        self._thread = NetnsThread(netns, "vipmgr-ctsync")
        self._ct: CtSocket | None = None
        self._events: CtEvents | None = None
        self._sock: socket.socket | None = None
        self._session = int.from_bytes(os.urandom(8), "big")
        self._peers: dict[tuple[str, str], _Peer] = {}   # (gateway, address)
        self._resync_asked: dict[str, float] = {}
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Open the sockets. A port that cannot be bound disables replication on this
        node (said once, loudly): failovers then work as without it."""
        self._loop = asyncio.get_running_loop()

        def open_sockets() -> tuple[CtSocket, socket.socket]:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
                sock.bind((self.bind, self.port))
                sock.setblocking(False)
                return CtSocket(), sock
            except OSError:
                sock.close()
                raise

        try:
            self._ct, self._sock = self._thread.call(open_sockets)
        except OSError as exc:
            LOG.error(f"conntrack replication disabled: cannot bind UDP {self.bind}:{self.port} "
                      f"({exc.strerror}); established flows of VIP gateways will break on "
                      f"failover until the port is free (docs/conntrack.md)",
                      extra={"node": self.node})
            return
        self._loop.add_reader(self._sock.fileno(), self._on_datagrams)
        self._spawn(self._keepalive())

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._loop is not None and self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
        self._close_events()
        if self._ct is not None:
            self._thread.call(self._ct.close)
        self._thread.close()

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro, name="ctsync")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            LOG.error(f"conntrack sync: {task.exception()!r}", exc_info=task.exception(),
                      extra={"node": self.node})

    # --- what the datapath tells us ------------------------------------------------------

    def applied(self, plan: "NodePlan") -> None:
        """After a reconcile: follow the VIP gateways this node is a member of, send for
        those it now serves (a new one starts with a snapshot to every peer)."""
        if self.enabled:
            self.configure(sync_gateways(self.node, plan, self.topology()),
                           {g.name for g in plan.active})

    def configure(self, gateways: dict[str, SyncGateway], active: set[str]) -> None:
        """Follow ``gateways``, send for those in ``active`` (what ``applied`` derives)."""
        self.gateways = dict(gateways)
        for name in list(self.following):
            if name not in self.gateways:
                del self.following[name]
        for name, gw in self.gateways.items():
            if name in active:
                self.following.pop(name, None)
                old = self.serving.get(name)
                if old is None:
                    self._serve(gw)
                elif old != gw:
                    self.serving[name] = gw
                    for addr in sorted(set(gw.peers) - set(old.peers)):
                        self._spawn(self._snapshot(name, addr, "new member"))
            else:
                self.stop_serving(name)
                self.following.setdefault(name, FollowState(name, self.max_entries))
        for name in [n for n in self.serving if n not in self.gateways or n not in active]:
            self.stop_serving(name)

    def stop_serving(self, gateway: str) -> None:
        """Stop sending for ``gateway`` (synchronously, before the withdraw's reconcile):
        what the kernel reported so far is sent; the leave flush that follows deletes the
        entries here, and its DESTROY events must not reach the successor."""
        if gateway not in self.serving:
            return
        self._on_events()
        gw = self.serving.pop(gateway)
        LOG.info(f"{gateway}: conntrack sync stops sending", extra={
            "gateway": gateway, "node": self.node})
        for key in [k for k in self._peers if k[0] == gw.name]:
            del self._peers[key]
        if not self.serving:
            self._close_events()

    async def before_take(self, gateways: Iterable[str]) -> dict[str, InjectResult]:
        """Inject the replicated flows of ``gateways`` into the kernel; call it before the
        take's reconcile (the VIP is added and announced by that reconcile). Waits at most
        ``inject_budget`` seconds; a slower injection goes on in the background and the
        flows it has not reached yet are picked up or lost like without replication."""
        out: dict[str, InjectResult] = {}
        for name in gateways:
            state = self.following.get(name)
            gw = self.gateways.get(name)
            if state is None or gw is None or not state.flows:
                continue
            flows = list(state.flows.values())
            started = time.monotonic()
            future = asyncio.wrap_future(self._thread.submit(self._ct.inject, gw.vip, flows))
            try:
                result = await asyncio.wait_for(asyncio.shield(future), self.inject_budget)
            except asyncio.TimeoutError:
                future.add_done_callback(self._late_injection(name))
                LOG.warning(f"{name}: injecting {len(flows)} flows takes longer than "
                            f"{self.inject_budget:g} s; taking over meanwhile",
                            extra={"gateway": name, "node": self.node})
                continue
            except (KernelError, OSError) as exc:
                LOG.error(f"{name}: injecting replicated flows failed: {exc}",
                          extra={"gateway": name, "node": self.node})
                continue
            took = time.monotonic() - started
            failed = sum((result.failed or {}).values())
            self.metrics.ctsync_committed(name, result.created, result.existed, failed, took)
            LOG.info(f"{name}: injected {result.created} replicated flows "
                     f"({result.existed} known, {failed} failed, {result.skipped} ended) "
                     f"in {took * 1e3:.1f} ms; state {'complete' if state.synced else 'partial'}",
                     extra={"gateway": name, "node": self.node})
            out[name] = result
        return out

    def _late_injection(self, gateway: str) -> Callable[[asyncio.Future], None]:
        """The outcome of an injection the take stopped waiting for: logged, counted."""
        def done(future: asyncio.Future) -> None:
            if future.cancelled():
                return
            exc = future.exception()
            if exc is not None:
                LOG.error(f"{gateway}: injecting replicated flows failed: {exc}",
                          extra={"gateway": gateway, "node": self.node})
                return
            r = future.result()
            self.metrics.ctsync_committed(gateway, r.created, r.existed,
                                          sum((r.failed or {}).values()), 0.0)
            LOG.info(f"{gateway}: late injection done: {r.created} created, {r.existed} known",
                     extra={"gateway": gateway, "node": self.node})
        return done

    # --- sender -------------------------------------------------------------------------

    def _serve(self, gw: SyncGateway) -> None:
        self.serving[gw.name] = gw
        LOG.info(f"{gw.name}: conntrack sync sends to {', '.join(gw.peers) or 'no peer'}",
                 extra={"gateway": gw.name, "node": self.node})
        if self._events is None:
            self._events = self._thread.call(CtEvents)
            self._loop.add_reader(self._events.fileno(), self._on_events)
        # subscribed first, dumped second: nothing falls between the two
        self._spawn(self._snapshot(gw.name, None, "start"))

    def _close_events(self) -> None:
        if self._events is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._events.fileno())
            self._events.close()
            self._events = None

    def _on_events(self) -> None:
        if self._events is None:
            return
        by_vip = {gw.vip: gw for gw in self.serving.values()}
        records, overrun = self._events.read(vip_keys(by_vip))
        for vip, recs in records.items():
            name = by_vip[vip].name
            self._send_all(name, DELTA, recs)
            self.metrics.ctsync_replicated(name, "sent", len(recs))
        if overrun:
            for name in self.serving:
                self.metrics.ctsync_resync(name, "overrun")
                self._spawn(self._snapshot(name, None, "overrun"))

    async def _snapshot(self, gateway: str, peer: str | None, why: str) -> None:
        """BEGIN, then the dump, then the entries and END: a delta sent while the dump runs
        lands inside the snapshot on the standby, so the END does not prune it."""
        gw = self.serving.get(gateway)
        if gw is None:
            return
        peers = [peer] if peer else list(gw.peers)
        for addr in peers:
            self._send(gateway, addr, SNAPSHOT, [], begin=True)
        flows = (await asyncio.wrap_future(self._thread.submit(self._ct.dump, [gw.vip])))[gw.vip]
        if gateway not in self.serving:
            return  # stopped meanwhile
        records = [record(f) for f in flows]
        for addr in peers:
            for i in range(0, len(records), RECORDS_PER_FRAME):
                self._send(gateway, addr, SNAPSHOT, records[i:i + RECORDS_PER_FRAME])
            self._send(gateway, addr, SNAPSHOT_END, [])
        LOG.info(f"{gateway}: conntrack snapshot of {len(flows)} flows to "
                 f"{', '.join(peers) or 'no peer'} ({why})",
                 extra={"gateway": gateway, "node": self.node})

    def _send_all(self, gateway: str, kind: int, records: list[bytes]) -> None:
        gw = self.serving[gateway]
        for i in range(0, max(len(records), 1), RECORDS_PER_FRAME):
            for addr in gw.peers:
                self._send(gateway, addr, kind, records[i:i + RECORDS_PER_FRAME])

    def _send(self, gateway: str, addr: str, kind: int, records: list[bytes],
              begin: bool = False) -> None:
        peer = self._peers.setdefault((gateway, addr), _Peer())
        peer.seq += 1
        data = encode_records(kind, gateway, self.node, self._session, peer.seq, time.time(),
                              records, self.keyring(), begin)
        try:
            self._sock.sendto(data, (addr, self.port))
            peer.last_sent = time.monotonic()
        except OSError as exc:
            # the receiver sees the gap in seq and asks for a snapshot
            LOG.debug(f"{gateway}: replication to {addr}: {exc}", extra={"gateway": gateway})

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_EVERY / 2)
            now = time.monotonic()
            for (gateway, addr), peer in list(self._peers.items()):
                if gateway in self.serving and now - peer.last_sent >= KEEPALIVE_EVERY:
                    self._send(gateway, addr, KEEPALIVE, [])
            for name, state in self.following.items():
                self.metrics.ctsync_entries(name, len(state.flows))

    # --- receiver -------------------------------------------------------------------------

    def _on_datagrams(self) -> None:
        for _ in range(256):
            try:
                data, (addr, _port) = self._sock.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    continue  # ICMP from an earlier send: the keepalive tries again
                raise
            try:
                frame = decode(data, self.keyring(), time.time())
            except FrameError as exc:
                self._reject(exc.reason, addr, str(exc))
                continue
            if frame.node == self.node:
                continue
            if frame.kind == RESYNC:
                if frame.gateway in self.serving and addr in self.serving[frame.gateway].peers:
                    self.metrics.ctsync_resync(frame.gateway, "requested")
                    self._spawn(self._snapshot(frame.gateway, addr, f"asked by {frame.node}"))
                continue
            state = self.following.get(frame.gateway)
            if state is None:
                self._reject("unknown-gateway", addr, frame.gateway)
                continue
            before = len(state.flows), state.overflow
            applied, wanted = state.on_frame(frame, time.time())
            if applied:
                self.metrics.ctsync_replicated(frame.gateway, "received", applied)
                self.metrics.ctsync_lag(frame.gateway, state.lag)
            if state.overflow != before[1]:
                self.metrics.ctsync_overflow(frame.gateway, state.overflow - before[1])
            if len(state.flows) != before[0]:
                self.metrics.ctsync_entries(frame.gateway, len(state.flows))
            if wanted:
                self._ask_resync(frame.gateway, addr)

    def _ask_resync(self, gateway: str, addr: str) -> None:
        now = time.monotonic()
        if now - self._resync_asked.get(gateway, -RESYNC_EVERY) < RESYNC_EVERY:
            return
        self._resync_asked[gateway] = now
        frame = Frame(RESYNC, gateway, self.node, self._session, 0, time.time())
        try:
            self._sock.sendto(encode(frame, self.keyring()), (addr, self.port))
        except OSError as exc:
            LOG.debug(f"{gateway}: resync request to {addr}: {exc}", extra={"gateway": gateway})

    def _reject(self, reason: str, addr: str, detail: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        self.metrics.ctsync_rejected(reason)
        if self.rejected[reason] in (1, 10, 100, 1000) or self.rejected[reason] % 10000 == 0:
            LOG.warning(f"conntrack sync: rejected a frame from {addr}: {detail} "
                        f"({self.rejected[reason]} so far)", extra={"node": self.node})

