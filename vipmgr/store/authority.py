"""The election core's etcd actions as etcd v3 transactions, and their asyncio executor.

Key layout (``prefix`` defaults to ``/vipmgr``), per gateway ``<gw>``:

``<prefix>/authority/<gw>``
    ``{"node", "lease"}`` bound to the holder's per-gateway lease. Its
    ``create_revision`` is the fencing epoch: every acquisition creates it anew.
``<prefix>/term/<gw>``
    No lease. ``{"node", "state": "held"}`` written with the authority key (so
    its ``mod_revision`` equals the epoch), or ``{"state": "vacated",
    "successor", "by"}`` written when the holder released, was deposed, or
    withdrew after losing its lease. "Authority absent + term held" means the
    holder's lease expired under it: it may still be serving, so taking over
    needs the challenge path. "Authority absent + term vacated" is free.
``<prefix>/challenge/<gw>/<node>``
    A standby's challenge, bound to *its* lease: ``{"node", "epoch", "hears",
    "priority", "preempt", "round", "lease", "answered"}``.

``plan(op, node, keys)`` is pure: it returns the transaction (compares and the
writes of the success branch) for one core action. Both branches then read the
gateway's three key ranges, so every result carries a consistent snapshot. The
simulator executes the same plans on its in-memory etcd model; this module's
``AuthorityExecutor`` executes them on a real etcd with aetcd's gRPC stubs.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, NamedTuple

import aetcd
import aetcd.exceptions
import aetcd.rpc as rpc
import grpc

from vipmgr.core.messages import (
    OK, REFUSED, UNREACHABLE, Acquire, Answer, ChallengeInfo, Confirm, Depose, DropChallenge,
    EtcdOp, EtcdResult, EtcdView, GrantLease, KeepAlive, PostChallenge, Release, RevokeLease,
    Vacate, Watch, WatchUpdate,
)
from vipmgr.store.codec import CorruptObjectError, key_suffix, load_object, prefix_end

DEFAULT_PREFIX = "/vipmgr"
WATCH_CANCEL_LIMIT = 1.0  # s: one watch stream's cancel, at most


def authority_prefix(prefix: str) -> str:
    """Every gateway's authority key starts with this (``KeyLayout.authority_prefix``)."""
    return f"{prefix}/authority/"


@dataclass(frozen=True, slots=True)
class GatewayKeys:
    prefix: str
    gateway: str

    @property
    def authority(self) -> str:
        return f"{authority_prefix(self.prefix)}{self.gateway}"

    @property
    def term(self) -> str:
        return f"{self.prefix}/term/{self.gateway}"

    @property
    def challenges(self) -> str:
        """Prefix of the challenge keys (trailing slash: gateway "a" never matches "ab")."""
        return f"{self.prefix}/challenge/{self.gateway}/"

    def challenge(self, node: str) -> str:
        return self.challenges + node


# --- transactions as data -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cmp:
    """``key``'s create_revision (target "create") or mod_revision ("mod") equals
    ``value``; 0 means the key is absent."""

    key: str
    target: str
    value: int


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: str
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Del:
    key: str


@dataclass(frozen=True, slots=True)
class Txn:
    compare: tuple[Cmp, ...]
    success: tuple[Put | Del, ...]


@dataclass(frozen=True, slots=True)
class KV:
    key: str
    value: str
    create: int
    mod: int
    lease: int


def _json(**fields) -> str:
    return json.dumps(fields, separators=(",", ":"), sort_keys=True)


def _challenge_value(ch: ChallengeInfo, answered: bool) -> str:
    return _json(node=ch.challenger, epoch=ch.epoch, hears=ch.hears, priority=ch.priority,
                 preempt=ch.preempt, round=ch.round, lease=ch.lease, answered=answered)


def plan(op: EtcdOp, node: str, keys: GatewayKeys) -> Txn:
    """The transaction for one core action (lease ops and Watch are not transactions)."""
    auth, term = keys.authority, keys.term
    match op:
        case Acquire(lease=lease, term_rev=term_rev):
            return Txn((Cmp(auth, "create", 0), Cmp(term, "mod", term_rev)),
                       (Put(auth, _json(node=node, lease=lease), lease),
                        Put(term, _json(node=node, state="held"))))
        case PostChallenge():
            guard = (Cmp(auth, "create", op.epoch),)
            if op.epoch == 0:
                guard += (Cmp(term, "mod", op.term_rev),)
            ch = ChallengeInfo(node, 0, op.lease, op.epoch, op.hears, op.priority, op.preempt,
                               False, op.op_id)
            return Txn(guard, (Put(keys.challenge(node), _challenge_value(ch, False),
                                   op.lease),))
        case DropChallenge():
            return Txn((), (Del(keys.challenge(node)),))
        case Answer(epoch=epoch, challenge=ch):
            key = keys.challenge(ch.challenger)
            return Txn((Cmp(auth, "create", epoch), Cmp(key, "mod", ch.rev)),
                       (Put(key, _challenge_value(ch, True), ch.lease),))
        case Confirm(epoch=epoch):
            return Txn((Cmp(auth, "create", epoch),), ())
        case Depose(epoch=epoch, term_rev=term_rev, challenge_rev=rev):
            mine = keys.challenge(node)
            vacated = Put(term, _json(state="vacated", successor=node, by=node))
            if epoch:
                return Txn((Cmp(auth, "create", epoch), Cmp(mine, "mod", rev)),
                           (Del(auth), vacated, Del(mine)))
            return Txn((Cmp(auth, "create", 0), Cmp(term, "mod", term_rev), Cmp(mine, "mod", rev)),
                       (vacated, Del(mine)))
        case Release(epoch=epoch, successor=successor):
            return Txn((Cmp(auth, "create", epoch),),
                       (Del(auth), Put(term, _json(state="vacated", successor=successor,
                                                   by=node))))
        case Vacate(term_rev=term_rev):
            return Txn((Cmp(auth, "create", 0), Cmp(term, "mod", term_rev)),
                       (Put(term, _json(state="vacated", successor=None, by=node)),))
    raise TypeError(f"{type(op).__name__} is not a transaction")


def decode_view(revision: int, kvs: Iterable[KV], keys: GatewayKeys) -> EtcdView:
    """The core's snapshot from the gateway's keys as read at ``revision``."""
    holder, epoch, holder_lease = None, 0, 0
    term_rev, term_node, vacated, successor, vacated_by = 0, None, False, None, None
    challenges = []
    for kv in kvs:
        data = json.loads(kv.value)
        if kv.key == keys.authority:
            holder, epoch, holder_lease = data.get("node"), kv.create, kv.lease
        elif kv.key == keys.term:
            term_rev, term_node = kv.mod, data.get("node")
            vacated, successor = data.get("state") == "vacated", data.get("successor")
            vacated_by = data.get("by")
        elif kv.key.startswith(keys.challenges):
            challenges.append(ChallengeInfo(
                challenger=data["node"], rev=kv.mod, lease=kv.lease, epoch=data["epoch"],
                hears=data["hears"], priority=data["priority"], preempt=data["preempt"],
                answered=data["answered"], round=data["round"]))
    return EtcdView(revision, holder, epoch, holder_lease, term_rev, term_node, vacated,
                    successor, vacated_by,
                    tuple(sorted(challenges, key=lambda c: c.challenger)))


# --- who holds what, for everyone but the election (agent datapath, CLI) ---------------


class Holder(NamedTuple):
    """An authority key read back: the node holding the gateway and the fencing epoch."""

    node: str
    epoch: int  # the key's create_revision


def decode_holder(kv: Any) -> Holder:
    """One authority key-value as etcd returns it (``key``, ``value``, ``create_revision``);
    a value that is not ``{"node": NAME, …}`` raises CorruptObjectError naming the key."""
    where = kv.key.decode() if isinstance(kv.key, bytes) else kv.key
    data = load_object(kv.value, where, "authority value",
                       "delete the key with etcdctl (the holder's agent re-acquires it)")
    node = data.get("node")
    if not isinstance(node, str) or not node:
        raise CorruptObjectError(f"stored authority value at {where} names no node "
                                 "(\"node\" must be a node name); delete the key with etcdctl")
    return Holder(node, kv.create_revision)


async def read_holders(client: Any, prefix: str,
                       on_corrupt: Callable[[CorruptObjectError], None] | None = None
                       ) -> dict[str, Holder]:
    """Every gateway's holder (gateway -> Holder). An unreadable authority value raises
    CorruptObjectError, or with ``on_corrupt`` is handed to it and left out."""
    base = authority_prefix(prefix)
    holders = {}
    for kv in await client.get_prefix(base.encode()):
        try:
            holders[key_suffix(kv.key, base)] = decode_holder(kv)
        except CorruptObjectError as exc:
            if on_corrupt is None:
                raise
            on_corrupt(exc)
    return holders


# --- executing on a real etcd ---------------------------------------------------------


def _is_lease_gone(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.NOT_FOUND \
        or "lease not found" in str(exc)


class AuthorityExecutor:
    """Runs one node's election actions for one gateway against etcd.

    ``await run(op)`` returns the ``EtcdResult`` the core expects. ``Watch`` runs
    until the watch breaks, calling ``on_update`` with a fresh snapshot after every
    change (and once at start), then returns UNREACHABLE; cancel its task to stop it.
    Every request is bounded by ``timeout`` (the core's etcdTimeout): past it the
    result is UNREACHABLE, and the op may or may not have applied, which the core
    is written to tolerate.
    """

    def __init__(self, client: aetcd.Client, gateway: str, node: str, *,
                 prefix: str = DEFAULT_PREFIX, timeout: float = 0.05,
                 on_update: Callable[[WatchUpdate], Awaitable[None] | None] | None = None):
        self.client = client
        self.node = node
        self.keys = GatewayKeys(prefix.rstrip("/"), gateway)
        self.timeout = timeout
        self.on_update = on_update

    async def run(self, op: EtcdOp) -> EtcdResult:
        try:
            if isinstance(op, Watch):
                await self._watch()
                return EtcdResult(op.op_id, UNREACHABLE)
            return await asyncio.wait_for(self._one(op), self.timeout)
        except (asyncio.TimeoutError, grpc.aio.AioRpcError, aetcd.exceptions.ClientError,
                ConnectionError) as exc:
            if _is_lease_gone(exc):
                return EtcdResult(op.op_id, REFUSED)
            return EtcdResult(op.op_id, UNREACHABLE)

    async def _one(self, op: EtcdOp) -> EtcdResult:
        await self.client.connect()
        match op:
            case GrantLease(ttl=ttl):
                reply = await self.client.leasestub.LeaseGrant(rpc.LeaseGrantRequest(TTL=ttl),
                                                               metadata=self._metadata())
                return EtcdResult(op.op_id, OK, reply.header.revision, lease=reply.ID)
            case KeepAlive(lease=lease):
                async for reply in self.client.leasestub.LeaseKeepAlive(
                        iter([rpc.LeaseKeepAliveRequest(ID=lease)]), metadata=self._metadata()):
                    return EtcdResult(op.op_id, OK if reply.TTL > 0 else REFUSED,
                                      reply.header.revision)
                return EtcdResult(op.op_id, UNREACHABLE)
            case RevokeLease(lease=lease):
                reply = await self.client.leasestub.LeaseRevoke(rpc.LeaseRevokeRequest(ID=lease),
                                                                metadata=self._metadata())
                return EtcdResult(op.op_id, OK, reply.header.revision)
        txn = plan(op, self.node, self.keys)
        succeeded, revision, view = await self._txn(txn)
        return EtcdResult(op.op_id, OK if succeeded else REFUSED, revision, view)

    def _metadata(self):
        """The call metadata the client authenticated with (etcd auth token; the raw
        stubs do not add it by themselves, unlike aetcd's own methods)."""
        return getattr(self.client, "metadata", None)

    def _reads(self) -> list:
        k = self.keys
        challenges = k.challenges.encode()
        return [rpc.RequestOp(request_range=rpc.RangeRequest(key=k.authority.encode())),
                rpc.RequestOp(request_range=rpc.RangeRequest(key=k.term.encode())),
                rpc.RequestOp(request_range=rpc.RangeRequest(
                    key=challenges, range_end=prefix_end(challenges)))]

    async def _txn(self, txn: Txn) -> tuple[bool, int, EtcdView]:
        compare = []
        for c in txn.compare:
            if c.target == "create":
                compare.append(rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.CREATE,
                                           key=c.key.encode(), create_revision=c.value))
            else:
                compare.append(rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.MOD,
                                           key=c.key.encode(), mod_revision=c.value))
        writes = []
        for w in txn.success:
            if isinstance(w, Put):
                writes.append(rpc.RequestOp(request_put=rpc.PutRequest(
                    key=w.key.encode(), value=w.value.encode(), lease=w.lease)))
            else:
                writes.append(rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(
                    key=w.key.encode())))
        reply = await self.client.kvstub.Txn(rpc.TxnRequest(
            compare=compare, success=writes + self._reads(), failure=self._reads()),
            metadata=self._metadata())
        kvs = [KV(kv.key.decode(), kv.value.decode(), kv.create_revision, kv.mod_revision,
                  kv.lease)
               for r in reply.responses if r.WhichOneof("response") == "response_range"
               for kv in r.response_range.kvs]
        revision = reply.header.revision
        return reply.succeeded, revision, decode_view(revision, kvs, self.keys)

    async def snapshot(self) -> EtcdView:
        return (await asyncio.wait_for(self._txn(Txn((), ())), self.timeout))[2]

    async def _watch(self) -> None:
        """Three watches (authority, term, challenges) feeding one snapshot reader."""
        k = self.keys
        changed = asyncio.Event()
        streams: list = []
        pumps: list[asyncio.Task] = []
        waiter = None

        async def pump(stream) -> None:
            async for _ in stream:
                changed.set()

        try:
            for key, range_end in ((k.authority, None), (k.term, None),
                                   (k.challenges, prefix_end(k.challenges.encode()))):
                streams.append(await self.client.watch(key.encode(), range_end=range_end))
            pumps = [asyncio.create_task(pump(s)) for s in streams]
            changed.set()  # the initial snapshot
            while True:
                waiter = asyncio.create_task(changed.wait())
                done, _ = await asyncio.wait([waiter, *pumps], return_when=asyncio.FIRST_COMPLETED)
                if waiter not in done:
                    waiter.cancel()
                    for task in done:
                        task.result()  # a broken stream raises here
                    return
                changed.clear()
                view = await self.snapshot()
                if self.on_update is not None:
                    result = self.on_update(WatchUpdate(view))
                    if asyncio.iscoroutine(result):
                        await result
        finally:
            for task in [*pumps, waiter]:
                if task is not None:
                    task.cancel()
            for stream in streams:
                # aetcd queues the cancel behind the client's one watch stream: bounded, so
                # a stalled stream never keeps the member (and its leave) from finishing
                try:
                    await asyncio.wait_for(stream.cancel(), WATCH_CANCEL_LIMIT)
                except asyncio.TimeoutError:
                    pass
