"""Heartbeat key material in etcd: generated, rotated, and followed by every agent.

Nobody writes key files: one JSON document at ``{prefix}/keys/heartbeat``
holds the current key and, for an overlap after a rotation, the previous
one. Every agent reads it at start and follows it with a watch, so
authenticated heartbeats need nothing but the etcd access the agent already
has (TLS and etcd users protect it in transit and at rest; docs/security.md)::

    {"format": 1, "rotateEvery": 86400.0,
     "current":  {"id": "20261201T223000Z-3fa1c2", "secret": "<base64, 32 bytes>",
                  "created": 1764628200.0, "activates": 1764628230.0},
     "previous": {"id": …, "secret": …, "created": …, "activates": …,
                  "retires": 1764628290.0} | null}

Why two times per key: a rotation must not make one genuine heartbeat fail.
The new key is *accepted* by every agent as soon as its watch delivers it,
but *signs* only from ``activates`` (``ACTIVATION_DELAY`` after the rotation:
longer than any watch delay plus clock skew), and the previous key stays
accepted until ``retires`` (``OVERLAP`` after activation: many advert
intervals, and longer than any watch delay). Times are Unix wall-clock
seconds; the nodes' clocks must agree to well under ``ACTIVATION_DELAY``
(NTP). A second rotation is refused until the previous key has retired, so
a key an agent may still sign with is never dropped.

The first agent to start (or ``vipmgr keys rotate``) creates the document
with a compare-and-create transaction, so concurrent starters agree on one
key. Rotations compare the document's mod_revision, so of agents racing to
do a scheduled rotation exactly one wins.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any

import grpc

from vipmgr.store.client import EtcdClient
from vipmgr.wire.keys import KeyRing

FORMAT = 1
SECRET_BYTES = 32
ROTATE_EVERY = 24 * 3600.0   # scheduled rotation (agents do it; or cron `vipmgr keys rotate`)
ACTIVATION_DELAY = 30.0      # new key signs this long after the rotation (accepted at once)
OVERLAP = 60.0               # previous key accepted this long after the new one signs


class KeyDocError(ValueError):
    """The stored key document is unusable; the message names the key and the field."""


class RotationRefused(RuntimeError):
    """A rotation would drop a key still in use, or another writer rotated first."""


def keys_key(prefix: str) -> str:
    """Where the heartbeat key document lives (read-only for agent credentials)."""
    return f"{prefix}/keys/heartbeat"


@dataclass(frozen=True, slots=True)
class HeartbeatKey:
    id: str
    secret: bytes
    created: float
    activates: float
    retires: float | None = None   # set once it is the previous key

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "secret": base64.b64encode(self.secret).decode(),
                               "created": self.created, "activates": self.activates}
        if self.retires is not None:
            out["retires"] = self.retires
        return out

    def public(self) -> dict[str, Any]:
        """What status may show: everything but the secret."""
        out = self.to_dict()
        del out["secret"]
        return out


def new_key(now: float, activates: float) -> HeartbeatKey:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return HeartbeatKey(f"{stamp}-{secrets.token_hex(3)}", secrets.token_bytes(SECRET_BYTES),
                        now, activates)


@dataclass(frozen=True, slots=True)
class KeyDoc:
    current: HeartbeatKey
    previous: HeartbeatKey | None = None
    rotate_every: float = ROTATE_EVERY

    # --- what an agent does with it at ``now`` (pure) ---------------------------------

    def signing(self, now: float) -> HeartbeatKey:
        if self.previous is not None and now < self.current.activates:
            return self.previous
        return self.current

    def ring(self, now: float) -> KeyRing:
        """Sign with :meth:`signing`, accept every key not retired (require_auth)."""
        sign = self.signing(now)
        accepted = [k for k in (self.current, self.previous) if k is not None
                    and k is not sign and (k.retires is None or now < k.retires)]
        return KeyRing((sign.secret, *(k.secret for k in accepted)), require_auth=True)

    def next_change(self, now: float) -> float | None:
        """When :meth:`ring` next changes (an activation or a retirement), if ever."""
        times = [self.current.activates]
        if self.previous is not None and self.previous.retires is not None:
            times.append(self.previous.retires)
        future = [t for t in times if t > now]
        return min(future) if future else None

    def rotation_due(self) -> float:
        """When the scheduled rotation is due (wall clock)."""
        return self.current.activates + self.rotate_every

    def rotation_blocked(self, now: float) -> str | None:
        """Why rotating now would drop a key still in use, or None."""
        if self.previous is not None and self.previous.retires is not None \
                and now < self.previous.retires:
            return (f"the previous rotation is still in its overlap: key {self.previous.id} "
                    f"is accepted until {utc(self.previous.retires)}; rotate after that")
        return None

    def rotated(self, now: float, *, activation_delay: float = ACTIVATION_DELAY,
                overlap: float = OVERLAP, rotate_every: float | None = None) -> "KeyDoc":
        activates = now + activation_delay
        old = replace(self.current, retires=max(activates, self.current.activates) + overlap)
        return KeyDoc(new_key(now, activates), old,
                      self.rotate_every if rotate_every is None else rotate_every)

    # --- JSON ---------------------------------------------------------------------------

    def to_json(self) -> bytes:
        return json.dumps({"format": FORMAT, "rotateEvery": self.rotate_every,
                           "current": self.current.to_dict(),
                           "previous": self.previous.to_dict() if self.previous else None},
                          sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> "KeyDoc":
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise KeyDocError(f"{where}: not JSON ({exc}); run `vipmgr keys rotate --force` "
                              "to replace it") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise KeyDocError(f"{where}: format must be {FORMAT}; run `vipmgr keys rotate "
                              "--force` to replace it")
        every = data.get("rotateEvery", ROTATE_EVERY)
        if isinstance(every, bool) or not isinstance(every, (int, float)) or every <= 0:
            raise KeyDocError(f"{where}: rotateEvery must be a positive number of seconds")
        prev = data.get("previous")
        return cls(_key(data.get("current"), f"{where}: current"),
                   None if prev is None else _key(prev, f"{where}: previous"), float(every))


def _key(raw: Any, where: str) -> HeartbeatKey:
    if not isinstance(raw, dict):
        raise KeyDocError(f"{where} must be an object with id, secret, created, activates")
    kid = raw.get("id")
    if not isinstance(kid, str) or not kid:
        raise KeyDocError(f"{where}.id must be a non-empty string")
    try:
        secret = base64.b64decode(raw.get("secret", ""), validate=True)
    except (binascii.Error, TypeError, ValueError):
        secret = b""
    if len(secret) < SECRET_BYTES:
        raise KeyDocError(f"{where}.secret must be base64 of {SECRET_BYTES} random bytes")
    times = {}
    for name in ("created", "activates", "retires"):
        value = raw.get(name)
        if value is None and name == "retires":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise KeyDocError(f"{where}.{name} must be Unix seconds")
        times[name] = float(value)
    return HeartbeatKey(kid, secret, **times)


def utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def permission_denied(exc: BaseException) -> bool:
    """etcd refused the credential's role: gRPC's PERMISSION_DENIED, raw (stub calls) or
    wrapped by aetcd in a ClientError."""
    for err in (exc, exc.__cause__):
        if isinstance(err, grpc.RpcError) and err.code() == grpc.StatusCode.PERMISSION_DENIED:
            return True
    return False


# --- etcd ---------------------------------------------------------------------------------


async def read_keys(client: EtcdClient, prefix: str) -> tuple[KeyDoc | None, int]:
    """The stored document and its mod_revision (None, 0 when absent)."""
    key = keys_key(prefix)
    kv = await client.get(key.encode())
    if kv is None:
        return None, 0
    return KeyDoc.from_json(kv.value, key), kv.mod_revision


async def ensure_keys(client: EtcdClient, prefix: str, now: float) -> tuple[KeyDoc, int, bool]:
    """The stored document, created if absent (compare-and-create: of concurrent callers,
    one creates, the others read its key). Returns (doc, mod_revision, created)."""
    doc, mod = await read_keys(client, prefix)
    if doc is not None:
        return doc, mod, False
    fresh = KeyDoc(new_key(now, now))
    key = keys_key(prefix).encode()
    tx = client.transactions
    ok, responses = await client.transaction(compare=[tx.create(key) == 0],
                                             success=[tx.put(key, fresh.to_json()), tx.get(key)],
                                             failure=[tx.get(key)])
    value, meta = responses[-1][0]
    return KeyDoc.from_json(value, keys_key(prefix)), meta.mod_revision, ok


async def rotate_keys(client: EtcdClient, prefix: str, now: float, *,
                      expect_mod: int | None = None, force: bool = False,
                      activation_delay: float = ACTIVATION_DELAY, overlap: float = OVERLAP,
                      rotate_every: float | None = None) -> KeyDoc:
    """Generate a new current key; the old one becomes previous.

    ``expect_mod``: rotate only if the document is still that revision (scheduled
    rotations: of racing agents one wins, the others get RotationRefused). ``force``
    replaces an unreadable document or skips the overlap check — heartbeats signed
    with a dropped key are rejected until the senders see the new document.
    """
    key = keys_key(prefix)
    kv = await client.get(key.encode())
    mod = kv.mod_revision if kv is not None else 0
    if expect_mod is not None and mod != expect_mod:
        raise RotationRefused(f"{key} changed (revision {mod}, expected {expect_mod})")
    doc = None
    if kv is not None:
        try:
            doc = KeyDoc.from_json(kv.value, key)
        except KeyDocError:
            if not force:
                raise
    if doc is None:
        new = KeyDoc(new_key(now, now), rotate_every=rotate_every or ROTATE_EVERY)
    else:
        if not force and (why := doc.rotation_blocked(now)):
            raise RotationRefused(why)
        new = doc.rotated(now, activation_delay=activation_delay, overlap=overlap,
                          rotate_every=rotate_every)
    tx = client.transactions
    ok, _ = await client.transaction(compare=[tx.mod(key.encode()) == mod],
                                     success=[tx.put(key.encode(), new.to_json())], failure=[])
    if not ok:
        raise RotationRefused(f"{key} was rotated by someone else meanwhile; see `vipmgr keys "
                              "status`")
    return new
