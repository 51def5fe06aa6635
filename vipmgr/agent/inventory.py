"""The store's resources as this agent knows them, kept off the event loop.

The loop that runs the elections must never wait for the inventory: with
10,000 VMs one full decode takes over a second of Python, and matching every
policy against every VM took a minute. So every resource lives on one thread
of its own: watch events are applied there one key at a time (a VM change
costs that VM), the selection index keeps what each policy selects, and the
node's plan is built there too. The loop gets back only the small part it
decides with — gateways and nodes — and only when one of those changed.

Events may repeat what the full read already holds (the watch starts before
the read so that nothing falls between): each key remembers the revision it
was last changed at, and anything not newer is ignored.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Mapping

from vipmgr.agent.snapshot import Snapshot
from vipmgr.dataplane.plan import GarpSettings, NodePlan, plan_node
from vipmgr.dataplane.selection import SelectionIndex
from vipmgr.resources.models import (
    EgressGateway,
    EgressGatewayPolicy,
    Node,
    Resource,
    VirtualMachine,
)
from vipmgr.store.resources import decode

LOG = logging.getLogger("vipmgr.inventory")


@dataclass(frozen=True)
class Change:
    """One key of the resources prefix as a watch reported it (``value`` None: deleted)."""

    key: str
    value: bytes | None
    revision: int


class Inventory:
    """Every resource, on its own thread; see the module docstring."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="vipmgr-inventory")
        self._index = SelectionIndex(node)
        self._gateways: dict[str, EgressGateway] = {}
        self._nodes: dict[str, Node] = {}
        self._objects: dict[str, Resource] = {}  # key -> what it holds now
        self._revisions: dict[str, int] = {}     # key -> revision of its last change (deletes too)

    # --- the loop's side ----------------------------------------------------------------

    async def load(self, changes: list[Change]) -> Snapshot:
        """Replace everything with a full read (keys it lacks are gone)."""
        return await self._run(self._load, changes)

    async def apply(self, changes: list[Change]) -> Snapshot | None:
        """Apply watch events; the new gateways and nodes when any of those changed."""
        return await self._run(self._apply, changes)

    async def plan(self, serving: Iterable[str], holders: Mapping[str, str],
                   interfaces: Mapping[str, ipaddress.IPv4Interface],
                   garp: GarpSettings) -> NodePlan:
        """This node's plan: it serves ``serving``; ``holders`` hold the others (etcd)."""
        return await self._run(self._plan, set(serving), dict(holders), dict(interfaces), garp)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # --- the inventory thread -----------------------------------------------------------

    def _load(self, changes: list[Change]) -> Snapshot:
        present = {c.key for c in changes}
        gone = [Change(key, None, self._revisions.get(key, 0) + 1)
                for key in self._objects if key not in present]
        self._apply(gone + changes)
        return self._snapshot()

    def _apply(self, changes: list[Change]) -> Snapshot | None:
        topology = False
        for change in changes:
            if change.revision <= self._revisions.get(change.key, 0):
                continue  # the full read (or an earlier event) already has it
            self._revisions[change.key] = change.revision
            old = self._objects.pop(change.key, None)
            new = self._decode(change) if change.value is not None else None
            if new is not None:
                self._objects[change.key] = new
            topology |= self._replace(old, new)
        return self._snapshot() if topology else None

    def _decode(self, change: Change) -> Resource | None:
        try:
            return decode(change.value, change.revision, change.key)
        except ValueError as exc:  # a corrupt value in the store: say so, keep the rest
            LOG.error(str(exc), extra={"node": self.node})
            return None

    def _replace(self, old: Resource | None, new: Resource | None) -> bool:
        """Swap ``old`` for ``new`` in the indexes; True when a gateway or node changed."""
        index = self._index
        if isinstance(old, VirtualMachine):
            index.remove_vm(old.key_name)
        elif isinstance(old, EgressGatewayPolicy):
            index.remove_policy(old.name)
        if isinstance(new, VirtualMachine):
            index.put_vm(new)
        elif isinstance(new, EgressGatewayPolicy):
            index.put_policy(new)
        topology = False
        for table, kind in ((self._gateways, EgressGateway), (self._nodes, Node)):
            if isinstance(old, kind):
                table.pop(old.name, None)
                topology = True
            if isinstance(new, kind):
                table[new.name] = new
                topology = True
        return topology

    def _snapshot(self) -> Snapshot:
        return Snapshot(dict(self._gateways), dict(self._nodes))

    def _plan(self, serving: set[str], holders: dict[str, str],
              interfaces: dict[str, ipaddress.IPv4Interface], garp: GarpSettings) -> NodePlan:
        active: dict[str, str | None] = {}
        for name in self._gateways:
            if name in serving:
                active[name] = self.node
            else:  # etcd may still name us for a gateway we no longer serve: nobody, here
                holder = holders.get(name)
                active[name] = holder if holder != self.node else None
        return plan_node(self.node, self._gateways.values(), self._nodes.values(), self._index,
                         active, interfaces=interfaces, garp=garp)
