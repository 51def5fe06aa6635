"""An in-memory etcd with the semantics the election relies on.

Revisions (one per writing transaction), create/mod revisions per key, leases
that delete their keys when they expire or are revoked, and the two etcd
behaviours that matter for fencing: a lease's TTL restarts on a leader change,
and nothing expires while the cluster has no leader (outage). It executes the
same ``Txn`` plans as the real executor (``vipmgr.store.authority.plan``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vipmgr.core.messages import EtcdView
from vipmgr.store.authority import KV, Cmp, Del, GatewayKeys, Put, Txn, decode_view


@dataclass(slots=True)
class _Lease:
    ttl: int
    expires: float
    keys: set[str] = field(default_factory=set)


class EtcdModel:
    def __init__(self) -> None:
        self.revision = 1
        self.kv: dict[str, KV] = {}
        self.leases: dict[int, _Lease] = {}
        self._next_lease = 0x1000
        self._views: dict[str, EtcdView] = {}

    # --- leases ---------------------------------------------------------------------

    def grant(self, ttl: int, now: float) -> int:
        self._next_lease += 1
        self.leases[self._next_lease] = _Lease(ttl, now + ttl)
        return self._next_lease

    def keepalive(self, lease: int, now: float) -> bool:
        rec = self.leases.get(lease)
        if rec is None:
            return False
        rec.expires = now + rec.ttl
        return True

    def revoke(self, lease: int) -> bool:
        rec = self.leases.pop(lease, None)
        if rec is None:
            return False
        if rec.keys:
            self.revision += 1
            for key in sorted(rec.keys):
                self.kv.pop(key, None)
        return True

    def expire(self, now: float) -> bool:
        """Expire due leases; True when keys were deleted."""
        due = [lid for lid, rec in self.leases.items() if rec.expires <= now]
        changed = False
        for lid in due:
            changed |= bool(self.leases[lid].keys)
            self.revoke(lid)
        return changed

    def next_expiry(self) -> float | None:
        return min((rec.expires for rec in self.leases.values()), default=None)

    def leader_change(self, now: float) -> None:
        """A new leader restarts every lease's TTL (etcd's documented behaviour)."""
        for rec in self.leases.values():
            rec.expires = now + rec.ttl

    # --- transactions ----------------------------------------------------------------

    def _holds(self, c: Cmp) -> bool:
        kv = self.kv.get(c.key)
        actual = 0 if kv is None else (kv.create if c.target == "create" else kv.mod)
        return actual == c.value

    def txn(self, txn: Txn, keys: GatewayKeys) -> tuple[bool, int, EtcdView]:
        ok = all(self._holds(c) for c in txn.compare)
        if ok:
            for w in txn.success:
                if isinstance(w, Put) and w.lease and w.lease not in self.leases:
                    # etcd fails the whole request: "requested lease not found"
                    return False, self.revision, self.view(keys)
            writes = [w for w in txn.success if isinstance(w, Put) or w.key in self.kv]
            if writes:
                self.revision += 1
                for w in writes:
                    self._write(w)
        return ok, self.revision, self.view(keys)

    def _write(self, w: Put | Del) -> None:
        old = self.kv.pop(w.key, None)
        if old is not None and old.lease in self.leases:
            self.leases[old.lease].keys.discard(w.key)
        if isinstance(w, Del):
            return
        self.kv[w.key] = KV(w.key, w.value, old.create if old else self.revision,
                            self.revision, w.lease)
        if w.lease:
            self.leases[w.lease].keys.add(w.key)

    def view(self, keys: GatewayKeys) -> EtcdView:
        cached = self._views.get(keys.gateway)
        if cached is not None and cached.revision == self.revision:
            return cached
        kv = self.kv
        found = [kv[k] for k in (keys.authority, keys.term) if k in kv]
        prefix = keys.challenges
        found += [v for k, v in kv.items() if k.startswith(prefix)]
        view = decode_view(self.revision, found, keys)
        self._views[keys.gateway] = view
        return view
