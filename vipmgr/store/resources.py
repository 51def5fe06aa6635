"""Resources in etcd: all-or-nothing apply, optimistic concurrency, label and cordon.

Key layout (``prefix`` defaults to ``/vipmgr``; docs/store.md has the full map):

    {prefix}/resources/{plural}/{name}               cluster-scoped kinds
    {prefix}/resources/{plural}/{namespace}/{name}   VirtualMachine
    {prefix}/status/nodes/{node}                     written by the node's agent
    {prefix}/status/gateways/{gateway}/{node}        written by each member's agent

Values are the JSON manifests; an object's resourceVersion is its key's
mod_revision. Every write compares the mod_revision it read, so two writers
never silently overwrite each other: ``apply`` re-reads and re-validates on
a conflict, and fails when the user pinned a resourceVersion that moved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from aetcd import rpc

from vipmgr.resources.crosscheck import check_objects
from vipmgr.resources.errors import Problem, Problems, ValidationError
from vipmgr.resources.models import KIND_BY_KIND, KindInfo, Resource, parse_manifest
from vipmgr.resources.selectors import LabelSelector
from vipmgr.store.authority import authority_prefix
from vipmgr.store.client import EtcdClient
from vipmgr.store.codec import CorruptObjectError, key_suffix, load_json, prefix_end
from vipmgr.store.switchover import switchover_prefix

MAX_ATTEMPTS = 5
DEFAULT_MAX_TXN_OPS = 128  # etcd's --max-txn-ops default
MAX_OBJECT_BYTES = 1024 * 1024  # etcd's --max-request-bytes is 1.5 MiB by default
MAX_TXN_BYTES = 1024 * 1024
READ_PAGE = 2000
# Apply writes dependencies first; delete goes the other way round.
WRITE_ORDER = {"Node": 0, "EgressGateway": 1, "VirtualMachine": 2, "EgressGatewayPolicy": 3}

Where = Callable[[Resource, str], str]
Progress = Callable[[int, int], None]


class ConflictError(RuntimeError):
    """Another writer changed the object; the message says which and what to do."""


class NotFoundError(LookupError):
    pass


@dataclass(frozen=True)
class KeyLayout:
    prefix: str = "/vipmgr"

    def kind_prefix(self, info: KindInfo) -> str:
        return f"{self.prefix}/resources/{info.plural}/"

    def resource_key(self, info: KindInfo, key_name: str) -> str:
        return f"{self.kind_prefix(info)}{key_name}"

    @property
    def resources_prefix(self) -> str:
        return f"{self.prefix}/resources/"

    def node_status_key(self, node: str) -> str:
        return f"{self.prefix}/status/nodes/{node}"

    @property
    def node_status_prefix(self) -> str:
        return f"{self.prefix}/status/nodes/"

    @property
    def placement_prefix(self) -> str:
        """One key per eligible node: since when (placement's hold-down, docs/placement.md)."""
        return f"{self.prefix}/status/placement/"

    def placement_key(self, node: str) -> str:
        return f"{self.placement_prefix}{node}"

    def gateway_status_prefix(self, gateway: str | None = None) -> str:
        base = f"{self.prefix}/status/gateways/"
        return f"{base}{gateway}/" if gateway else base

    def gateway_status_key(self, gateway: str, node: str) -> str:
        return f"{self.gateway_status_prefix(gateway)}{node}"

    def gateway_status_names(self, key: bytes | str) -> tuple[str, str]:
        """(gateway, node) of a key under :meth:`gateway_status_prefix`."""
        gateway, _, node = key_suffix(key, self.gateway_status_prefix()).partition("/")
        return gateway, node

    @property
    def authority_prefix(self) -> str:
        """Every gateway's authority key (store/authority.py): its holder and epoch."""
        return authority_prefix(self.prefix)

    @property
    def switchover_prefix(self) -> str:
        """Switchover requests, one per gateway (store/switchover.py)."""
        return switchover_prefix(self.prefix)


@dataclass
class ApplyPlan:
    outcomes: list[Outcome]
    writes: list["Write"]
    warnings: list[Problem]


@dataclass(frozen=True)
class Snapshot:
    revision: int
    values: dict[str, tuple[bytes, int]]  # key -> (value, mod_revision)


@dataclass(frozen=True)
class Write:
    """One key to put (``value``) or delete (None), guarded by the revision phase one read."""

    key: str
    value: bytes | None
    expect_mod: int  # 0: the key must not exist
    old: bytes | None  # what to restore on a roll-back (None: delete)
    order: int


def _batches(writes: list[Write], per_txn: int, max_bytes: int) -> Iterator[list[Write]]:
    batch: list[Write] = []
    size = 0
    for w in writes:
        grow = len(w.key) + len(w.value or b"") + len(w.old or b"")
        if batch and (len(batch) >= per_txn or size + grow > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(w)
        size += grow
    if batch:
        yield batch


@dataclass(frozen=True)
class Outcome:
    kind: str
    key_name: str
    result: str  # created | configured | unchanged | deleted | labeled | cordoned | …

    def __str__(self) -> str:
        return f"{self.kind.lower()}/{self.key_name} {self.result}"


def encode(obj: Resource) -> bytes:
    """The stored form: the manifest without resourceVersion (never copied: it is only read)."""
    return json.dumps(obj.manifest, sort_keys=True).encode()


def _same_manifest(stored: bytes, new: bytes) -> bool:
    if stored == new:
        return True
    try:
        return json.loads(stored) == json.loads(new)
    except ValueError:  # a corrupt stored value is never the same
        return False


def decode(value: bytes, mod_revision: int, where: str) -> Resource:
    """A stored manifest → resource; a corrupt value names its key and the fix."""
    problems = Problems()
    data = load_json(value, where, "object", "delete the key with etcdctl and apply the object "
                     "again")
    obj = parse_manifest(data, problems, resource_version=mod_revision)
    if obj is None or problems:
        raise CorruptObjectError(f"stored object at {where} is invalid: {problems.items[0]}; "
                                 "delete the key with etcdctl and apply the object again")
    return obj


def _status_doc(kv) -> Any:
    return load_json(kv.value, kv.key.decode(), "status",
                     "delete the key with etcdctl (its agent writes it again)")


class ResourceStore:
    def __init__(self, client: EtcdClient, layout: KeyLayout):
        self.client = client
        self.layout = layout
        self.tx = client.transactions

    # --- reading ------------------------------------------------------------------

    async def list(self, info: KindInfo) -> list[Resource]:
        result = await self.client.get_prefix(self.layout.kind_prefix(info).encode())
        return [decode(kv.value, kv.mod_revision, kv.key.decode()) for kv in result]

    async def list_all(self) -> list[Resource]:
        result = await self.client.get_prefix(self.layout.resources_prefix.encode())
        return [decode(kv.value, kv.mod_revision, kv.key.decode()) for kv in result]

    async def get(self, info: KindInfo, key_name: str) -> Resource:
        key = self.layout.resource_key(info, key_name)
        kv = await self.client.get(key.encode())
        if kv is None:
            raise NotFoundError(f"{info.singular} {key_name!r} not found")
        return decode(kv.value, kv.mod_revision, key)

    async def list_json(self, prefix: str) -> dict[str, Any]:
        """Agent-written status documents under ``prefix``, by the key's last segments (an
        unreadable one raises CorruptObjectError naming its key)."""
        result = await self.client.get_prefix(prefix.encode())
        return {key_suffix(kv.key, prefix): _status_doc(kv) for kv in result}

    async def gateway_statuses(self) -> dict[str, dict[str, Any]]:
        """Every member status document: gateway -> node -> document."""
        found: dict[str, dict[str, Any]] = {}
        result = await self.client.get_prefix(self.layout.gateway_status_prefix().encode())
        for kv in result:
            gateway, node = self.layout.gateway_status_names(kv.key)
            found.setdefault(gateway, {})[node] = _status_doc(kv)
        return found

    # --- apply and delete: validate everything, then write in batches ----------------

    async def snapshot(self) -> Snapshot:
        """Every stored resource at one revision, read in pages (no response-size limit)."""
        prefix = self.layout.resources_prefix.encode()
        end = prefix_end(prefix)
        start, revision = prefix, 0
        values: dict[str, tuple[bytes, int]] = {}
        while True:
            reply = await self.client.kvstub.Range(
                rpc.RangeRequest(key=start, range_end=end, limit=READ_PAGE, revision=revision),
                timeout=self.client.settings.timeout, metadata=self.client.metadata)
            revision = revision or reply.header.revision
            for kv in reply.kvs:
                values[kv.key.decode()] = (kv.value, kv.mod_revision)
            if not reply.more or not reply.kvs:
                return Snapshot(revision, values)
            start = reply.kvs[-1].key + b"\0"

    async def plan_apply(self, objects: list[Resource], where: Where | None = None,
                         reserved: Mapping[str, str] | None = None) -> ApplyPlan:
        """Phase one: read the store once, check every object (schema already done, pinned
        resourceVersions, size, the cross-object rules), and list the writes. No writes."""
        snap = await self.snapshot()
        incoming = {self.layout.resource_key(KIND_BY_KIND[o.KIND], o.key_name) for o in objects}
        # Objects this apply replaces are not decoded: the checks see the incoming version,
        # and a corrupt stored value there is no obstacle.
        stored = [decode(value, mod, key) for key, (value, mod) in snap.values.items()
                  if key not in incoming]
        where = where or (lambda obj, path: f"{obj.KIND} {obj.key_name}")
        findings = check_objects(objects, stored, where, reserved)
        problems = Problems(list(findings.errors))
        outcomes, writes = [], []
        for obj in objects:
            info = KIND_BY_KIND[obj.KIND]
            key = self.layout.resource_key(info, obj.key_name)
            value, mod = snap.values.get(key, (None, 0))
            pinned = obj.meta.resource_version
            if pinned is not None and pinned != mod:
                raise ConflictError(
                    f"{info.singular} {obj.key_name!r} was changed (resourceVersion {mod}, "
                    f"yours {pinned}); get it again and reapply, or drop metadata.resourceVersion")
            new_value = encode(obj)
            if len(new_value) > MAX_OBJECT_BYTES:
                problems.add("metadata", f"the object is {len(new_value):,} bytes as JSON; etcd "
                             f"takes at most {MAX_OBJECT_BYTES:,} per object here: shorten "
                             "its annotations", where(obj, "metadata"))
                continue
            if value is not None and _same_manifest(value, new_value):
                outcomes.append(Outcome(obj.KIND, obj.key_name, "unchanged"))
                continue
            writes.append(Write(key, new_value, mod, value, WRITE_ORDER[obj.KIND]))
            outcomes.append(Outcome(obj.KIND, obj.key_name,
                                    "created" if value is None else "configured"))
        problems.raise_if_any()
        return ApplyPlan(outcomes, writes, findings.warnings)

    async def apply(self, objects: list[Resource], dry_run: bool = False, *,
                    strict: bool = False, where: Where | None = None,
                    reserved: Mapping[str, str] | None = None,
                    max_txn_ops: int = DEFAULT_MAX_TXN_OPS, progress: Progress | None = None,
                    warn: Callable[[list[Problem]], None] | None = None) -> list[Outcome]:
        """Store every object or none (see :meth:`commit` for what "none" means under a
        crash); returns created/configured/unchanged per object. Warnings go to ``warn``
        once each; with ``strict`` they refuse the apply like errors."""
        shown: set[str] = set()
        for _attempt in range(MAX_ATTEMPTS):
            plan = await self.plan_apply(objects, where, reserved)
            if strict and plan.warnings:
                raise ValidationError([Problem(w.path, f"{w.message} (an error with --strict)",
                                               w.source) for w in plan.warnings])
            new = [w for w in plan.warnings if str(w) not in shown]
            shown.update(str(w) for w in new)
            if warn is not None and new:
                warn(new)
            if dry_run or not plan.writes:
                return plan.outcomes
            if await self.commit(plan.writes, max_txn_ops, progress):
                return plan.outcomes
        raise ConflictError("the objects kept changing while applying; try again")

    async def delete(self, targets: list[tuple[KindInfo, str]], *,
                     max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
                     progress: Progress | None = None) -> list[Outcome]:
        """Delete every named object that exists, or none; names that do not exist are
        reported as "not found"."""
        for _attempt in range(MAX_ATTEMPTS):
            snap = await self.snapshot()
            outcomes, writes = [], []
            for info, key_name in targets:
                key = self.layout.resource_key(info, key_name)
                value, mod = snap.values.get(key, (None, 0))
                outcomes.append(Outcome(info.kind, key_name,
                                        "deleted" if value is not None else "not found"))
                if value is not None:
                    writes.append(Write(key, None, mod, value, -WRITE_ORDER[info.kind]))
            if not writes or await self.commit(writes, max_txn_ops, progress):
                return outcomes
        raise ConflictError("the objects kept changing while deleting; try again")

    async def select(self, info: KindInfo, selector: LabelSelector | None = None,
                     namespace: str | None = None) -> list[tuple[KindInfo, str]]:
        """The (kind, name) of every stored object of ``info`` matching ``selector`` (all
        when None), in ``namespace`` when given (VirtualMachines)."""
        objs = await self.list(info)
        return [(info, o.key_name) for o in objs
                if (selector is None or selector.matches(o.labels))
                and (namespace is None or o.namespace == namespace)]

    async def commit(self, writes: list[Write], max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
                     progress: Progress | None = None) -> bool:
        """Phase two: the writes in transactions of at most ``max_txn_ops`` operations
        (etcd's --max-txn-ops), each guarded by the mod_revision phase one read.

        Batches go in dependency order (nodes, gateways, VMs, policies; deletes the other
        way round), so agents watching never see a policy before its gateway. A guard
        that fails (another writer changed one of the objects) rolls back the batches
        already written, key by key, where nobody has written since, and returns False:
        the caller re-reads and re-validates. A crash between batches leaves the batches
        written so far; applying the same files again converges (written objects are
        then "unchanged").
        """
        per_txn = max(1, max_txn_ops // 2)  # one compare plus one put or delete per object
        ordered = sorted(writes, key=lambda w: w.order)
        done: list[list[Write]] = []
        written = 0
        for batch in _batches(ordered, per_txn, MAX_TXN_BYTES):
            ok, _ = await self.client.transaction(
                compare=[self.tx.mod(w.key.encode()) == w.expect_mod for w in batch],
                success=[self._op(w.key, w.value) for w in batch], failure=[])
            if not ok:
                await self._roll_back([w for b in done for w in b], per_txn)
                return False
            done.append(batch)
            written += len(batch)
            if progress is not None:
                progress(written, len(ordered))
        return True

    def _op(self, key: str, value: bytes | None):
        return self.tx.put(key.encode(), value) if value is not None else \
            self.tx.delete(key.encode())

    def _still_ours(self, w: Write):
        """The guard of an undo: the key still holds what this commit wrote."""
        if w.value is None:
            return self.tx.version(w.key.encode()) == 0
        return self.tx.value(w.key.encode()) == w.value

    async def _roll_back(self, writes: list[Write], per_txn: int) -> None:
        """Undo ``writes`` where the key still holds what we wrote; a key another writer
        changed since keeps their value."""
        for batch in _batches(list(reversed(writes)), per_txn, MAX_TXN_BYTES):
            ok, _ = await self.client.transaction(
                compare=[self._still_ours(w) for w in batch],
                success=[self._op(w.key, w.old) for w in batch], failure=[])
            if ok:
                continue
            for w in batch:
                await self.client.transaction(compare=[self._still_ours(w)],
                                              success=[self._op(w.key, w.old)], failure=[])

    async def update(self, info: KindInfo, key_name: str,
                     mutate: Callable[[dict[str, Any]], str], *,
                     warn: Callable[[list[Problem]], None] | None = None,
                     unchanged: str | None = None) -> Outcome:
        """Read, ``mutate`` the manifest (returns the verb), validate, write if changed;
        ``unchanged``: what to say when it was so already (default "not <verb> (no change)").

        With ``warn`` (the CLI's label command) the changed object is also checked across
        objects, like apply: errors refuse it, warnings go to ``warn``. The agent's own
        address refresh passes none: a node is never kept from registering its addresses.
        """
        key = self.layout.resource_key(info, key_name)
        for _attempt in range(MAX_ATTEMPTS):
            kv = await self.client.get(key.encode())
            if kv is None:
                raise NotFoundError(f"{info.singular} {key_name!r} not found")
            manifest = json.loads(kv.value)
            verb = mutate(manifest)
            problems = Problems()
            obj = parse_manifest(manifest, problems)
            problems.raise_if_any()
            assert obj is not None
            if json.loads(encode(obj)) == json.loads(kv.value):
                return Outcome(info.kind, key_name, unchanged or f"not {verb} (no change)")
            if warn is not None:
                stored = await self.list_all()
                findings = check_objects([obj], stored, lambda o, path: f"{info.singular} "
                                         f"{key_name}")
                Problems(list(findings.errors)).raise_if_any()
                if findings.warnings:
                    warn(findings.warnings)
            ok, _ = await self.client.transaction(
                compare=[self.tx.mod(key.encode()) == kv.mod_revision],
                success=[self.tx.put(key.encode(), encode(obj))], failure=[])
            if ok:
                return Outcome(info.kind, key_name, verb)
        raise ConflictError(f"{info.singular} {key_name!r} kept changing; try again")
