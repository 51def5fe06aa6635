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
from typing import Any, Callable, Iterable

from vipmgr.resources.errors import Problems, ValidationError
from vipmgr.resources.models import (
    KIND_BY_KIND,
    EgressGateway,
    KindInfo,
    Resource,
    cross_object_problems,
    parse_manifest,
)
from vipmgr.store.client import EtcdClient

MAX_ATTEMPTS = 5


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

    def gateway_status_prefix(self, gateway: str | None = None) -> str:
        base = f"{self.prefix}/status/gateways/"
        return f"{base}{gateway}/" if gateway else base

    def gateway_status_key(self, gateway: str, node: str) -> str:
        return f"{self.gateway_status_prefix(gateway)}{node}"


@dataclass(frozen=True)
class Outcome:
    kind: str
    key_name: str
    result: str  # created | configured | unchanged | deleted | labeled | cordoned | …

    def __str__(self) -> str:
        return f"{self.kind.lower()}/{self.key_name} {self.result}"


def encode(obj: Resource) -> bytes:
    return json.dumps(obj.to_manifest(with_version=False), sort_keys=True).encode()


def decode(value: bytes, mod_revision: int, where: str) -> Resource:
    """A stored manifest → resource; a corrupt value names its key."""
    problems = Problems()
    obj = parse_manifest(json.loads(value), problems, resource_version=mod_revision)
    if obj is None or problems:
        raise ValueError(f"stored object at {where} is invalid: {problems.items[0]}")
    return obj


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
        """Agent-written status documents under ``prefix``, by the key's last segments."""
        result = await self.client.get_prefix(prefix.encode())
        return {kv.key.decode()[len(prefix):]: json.loads(kv.value) for kv in result}

    # --- apply --------------------------------------------------------------------

    async def apply(self, objects: list[Resource], dry_run: bool = False) -> list[Outcome]:
        """Store every object or none; returns created/configured/unchanged per object."""
        for _attempt in range(MAX_ATTEMPTS):
            current = await self._read_keys(objects)
            await self._check_against_store(objects)
            compares, puts, outcomes = [], [], []
            for obj in objects:
                info = KIND_BY_KIND[obj.KIND]
                key = self.layout.resource_key(info, obj.key_name)
                value, mod = current[key]
                pinned = obj.meta.resource_version
                if pinned is not None and pinned != mod:
                    raise ConflictError(
                        f"{info.singular} {obj.key_name!r} was changed (resourceVersion {mod}, "
                        f"yours {pinned}); get it again and reapply, or drop metadata.resourceVersion")
                compares.append(self.tx.mod(key.encode()) == mod)
                new_value = encode(obj)
                if value is not None and json.loads(value) == json.loads(new_value):
                    outcomes.append(Outcome(obj.KIND, obj.key_name, "unchanged"))
                    continue
                puts.append(self.tx.put(key.encode(), new_value))
                outcomes.append(Outcome(obj.KIND, obj.key_name,
                                        "created" if value is None else "configured"))
            if dry_run or not puts:
                return outcomes
            ok, _ = await self.client.transaction(compare=compares, success=puts, failure=[])
            if ok:
                return outcomes
        raise ConflictError("the objects kept changing while applying; try again")

    async def _read_keys(self, objects: Iterable[Resource]) -> dict[str, tuple[bytes | None, int]]:
        keys = [self.layout.resource_key(KIND_BY_KIND[o.KIND], o.key_name) for o in objects]
        _, responses = await self.client.transaction(
            compare=[], success=[self.tx.get(k.encode()) for k in keys], failure=[])
        out: dict[str, tuple[bytes | None, int]] = {}
        for key, rng in zip(keys, responses):
            out[key] = (rng[0][0], rng[0][1].mod_revision) if rng else (None, 0)
        return out

    async def _check_against_store(self, objects: list[Resource]) -> None:
        """Cross-object rules (VIP, VRID) over the store as it will be after the apply."""
        new_gws = {o.name: o for o in objects if isinstance(o, EgressGateway)}
        if not new_gws:
            return
        stored = [g for g in await self.list(KIND_BY_KIND["EgressGateway"])
                  if g.name not in new_gws]
        # Stored gateways go first, so a conflict is reported on the incoming object.
        problems = cross_object_problems(stored + list(new_gws.values()),
                                         lambda o: f"EgressGateway {o.name}"
                                         if o.name in new_gws else "(stored)")
        mine = [p for p in problems.items if p.source != "(stored)"]
        if mine:
            raise ValidationError(mine)

    # --- delete and read-modify-write ---------------------------------------------

    async def delete(self, targets: list[tuple[KindInfo, str]]) -> list[Outcome]:
        """Delete all named objects in one transaction; names that do not exist are reported."""
        ops, outcomes = [], []
        for info, key_name in targets:
            key = self.layout.resource_key(info, key_name)
            ops.append(self.tx.delete(key.encode()))
        if not ops:
            return []
        _, responses = await self.client.transaction(compare=[], success=ops, failure=[])
        for (info, key_name), resp in zip(targets, responses):
            gone = resp.response_delete_range.deleted > 0
            outcomes.append(Outcome(info.kind, key_name, "deleted" if gone else "not found"))
        return outcomes

    async def update(self, info: KindInfo, key_name: str,
                     mutate: Callable[[dict[str, Any]], str]) -> Outcome:
        """Read, ``mutate`` the manifest (returns the verb), validate, write if changed."""
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
                return Outcome(info.kind, key_name, f"not {verb} (no change)")
            ok, _ = await self.client.transaction(
                compare=[self.tx.mod(key.encode()) == kv.mod_revision],
                success=[self.tx.put(key.encode(), encode(obj))], failure=[])
            if ok:
                return Outcome(info.kind, key_name, verb)
        raise ConflictError(f"{info.singular} {key_name!r} kept changing; try again")
