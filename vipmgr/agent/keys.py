"""The agent's heartbeat keys: from etcd by default, followed live, rotated on schedule.

:class:`HeartbeatKeys` owns what the encoder signs with and what the receiver
accepts. Three modes, from the agent config:

- ``etcd`` (default, nothing to configure): the key document of
  :mod:`vipmgr.store.keys`, created on first start if absent, followed with a
  watch; activations and retirements happen at the times the document says;
  the scheduled rotation is done by whichever agent gets there first.
- ``file``: ``authKeyFile`` (and ``requireAuth``) as before (docs/wire.md).
- ``insecure``: ``heartbeat.insecure: true`` — unsigned heartbeats, every
  heartbeat believed. Only when asked for, and said loudly (log, metric).

The runtime needs three lines (``apply_config`` again on SIGHUP)::

    self.heartbeat_keys = HeartbeatKeys(self.node, self.layout.prefix, self.encoder, self.receiver)
    self.heartbeat_keys.apply_config(self.config)          # in _load_keys
    await self.heartbeat_keys.start(self.client)           # after connect, before transports
    self._tasks.append(asyncio.create_task(self.heartbeat_keys.follow(), name="heartbeat-keys"))
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Callable

import aetcd.exceptions
import grpc

from vipmgr.agent.backoff import Backoff
from vipmgr.agent.config import AgentConfig
from vipmgr.agent.watch import watch_with_reconnect
from vipmgr.store.client import EtcdClient, EtcdUnavailable
from vipmgr.store.keys import (KeyDoc, KeyDocError, RotationRefused, ensure_keys, keys_key,
                               permission_denied, read_keys, rotate_keys, utc)
from vipmgr.wire.codec import Encoder
from vipmgr.wire.keys import KeyRing, load_keyring
from vipmgr.wire.receiver import Receiver

LOG = logging.getLogger("vipmgr.agent.keys")

MODE_ETCD, MODE_FILE, MODE_INSECURE = "etcd", "file", "insecure"
ETCD_ERRORS = (aetcd.exceptions.ClientError, grpc.RpcError, EtcdUnavailable, ConnectionError,
               asyncio.TimeoutError)
ROTATION_JITTER = 30.0   # agents spread their scheduled-rotation attempts over this (s)
RETRY = 60.0             # a failed scheduled rotation is tried again after this (s)
WAIT_MAX = 60.0          # re-evaluate at least this often (the wall clock may be stepped)

OnState = Callable[[str, "str | None"], None]   # (mode, signing key id)


def auth_mode(config: AgentConfig) -> str:
    if config.auth_key_file:
        return MODE_FILE
    if config.heartbeat_insecure:
        return MODE_INSECURE
    return MODE_ETCD


class HeartbeatKeys:
    """Keeps ``encoder.signing_key`` and ``receiver.keyring`` what the mode says."""

    def __init__(self, node: str, prefix: str, encoder: Encoder, receiver: Receiver, *,
                 on_state: OnState | None = None, clock: Callable[[], float] = time.time,
                 rotation_jitter: float = ROTATION_JITTER):
        self.node = node
        self.prefix = prefix
        self.encoder = encoder
        self.receiver = receiver
        self.on_state = on_state
        self.clock = clock
        self.rotation_jitter = rotation_jitter
        self.mode = MODE_ETCD
        self.client: EtcdClient | None = None
        self.doc: KeyDoc | None = None
        self.mod = 0
        self._changed = asyncio.Event()
        self._signing_id: str | None = None
        self._rotate_at: float | None = None
        self._refused_for = -1   # mod_revision whose rotation etcd refused us (logged once)

    # --- configuration ----------------------------------------------------------------

    def apply_config(self, config: AgentConfig) -> None:
        """Pick the mode; file and insecure keys are installed at once, etcd ones by start()."""
        self.mode = auth_mode(config)
        if self.mode == MODE_FILE:
            if not config.require_auth:
                LOG.warning("heartbeats are signed but unsigned ones are believed (authKeyFile "
                            "without requireAuth: true): anyone on the segment can speak for "
                            "any node, e.g. forge echoes for an active cut from etcd; set "
                            "requireAuth: true once every node has the key",
                            extra={"node": self.node})
            self._install_ring(load_keyring(config.auth_key_file,
                                            require_auth=config.require_auth), "file")
        elif self.mode == MODE_INSECURE:
            LOG.warning("heartbeats are NOT authenticated (heartbeat.insecure: true): anyone on "
                        "the heartbeat segment can speak for any node; remove the setting to "
                        "use keys from etcd", extra={"node": self.node})
            self._install_ring(KeyRing(), None)
        elif self.doc is not None:
            self._install_doc(self.clock())

    # --- etcd mode ----------------------------------------------------------------------

    async def start(self, client: EtcdClient) -> None:
        """etcd mode: returns once keys are installed (creating the first one if none
        exists); retries while etcd fails, the document is unusable or the credential
        may not create it. Other modes: returns at once."""
        self.client = client
        if self.mode != MODE_ETCD:
            return
        backoff, last_problem = Backoff(), None
        while True:
            problem = None
            try:
                doc, mod, created = await ensure_keys(client, self.prefix, self.clock())
                if created:
                    LOG.info(f"created the first heartbeat key {doc.current.id} in etcd",
                             extra={"node": self.node})
                self._take(doc, mod)
                return
            except KeyDocError as exc:
                problem = str(exc)
            except ETCD_ERRORS as exc:
                problem = (f"no heartbeat key at {keys_key(self.prefix)} and this agent's etcd "
                           "user may not create one: run `vipmgr keys rotate` as the admin"
                           if permission_denied(exc) else f"etcd failed ({type(exc).__name__})")
            if problem != last_problem:
                LOG.error(f"waiting for heartbeat keys: {problem}", extra={"node": self.node})
                last_problem = problem
            await backoff.wait()

    async def follow(self) -> None:
        """etcd mode, forever: apply document changes (watch), activations and
        retirements (their times), and the scheduled rotation. Other modes: returns."""
        if self.mode != MODE_ETCD or self.client is None:
            return
        watch = asyncio.create_task(self._watch(), name="heartbeat-keys-watch")
        try:
            while True:
                now = self.clock()
                self._install_doc(now)
                if self._rotate_at is not None and now >= self._rotate_at:
                    await self._scheduled_rotation(now)
                    continue
                wake = [t for t in (self.doc.next_change(now) if self.doc else None,
                                    self._rotate_at) if t is not None]
                timeout = min([WAIT_MAX] + [max(0.0, t - now) for t in wake])
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout)
                except asyncio.TimeoutError:
                    pass
                self._changed.clear()
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)

    async def _watch(self) -> None:
        key = keys_key(self.prefix)

        async def reread() -> None:   # what a break missed
            self._offer(*await read_keys(self.client, self.prefix))

        def on_event(event) -> None:
            self._offer(KeyDoc.from_json(event.kv.value, key) if event.kv.value else None,
                        event.kv.mod_revision)

        def on_error(exc: BaseException) -> None:
            if isinstance(exc, KeyDocError):
                LOG.error(f"heartbeat keys unchanged: {exc}", extra={"node": self.node})
            else:
                LOG.debug(f"heartbeat key watch broke: {type(exc).__name__}",
                          extra={"node": self.node})

        await watch_with_reconnect(self.client, key.encode(), on_open=reread, on_event=on_event,
                                   errors=(KeyDocError, *ETCD_ERRORS), on_error=on_error)

    def _offer(self, doc: KeyDoc | None, mod: int) -> None:
        if doc is None:
            LOG.warning(f"{keys_key(self.prefix)} was deleted; keeping the keys in use until "
                        "`vipmgr keys rotate` writes new ones", extra={"node": self.node})
            return
        if mod != self.mod:
            self._take(doc, mod)
            self._changed.set()

    def _take(self, doc: KeyDoc, mod: int) -> None:
        self.doc, self.mod = doc, mod
        self._rotate_at = doc.rotation_due() + random.uniform(0, self.rotation_jitter)
        self._install_doc(self.clock())

    async def _scheduled_rotation(self, now: float) -> None:
        self._rotate_at = now + RETRY   # until the new document arrives (or the next try)
        try:
            new = await rotate_keys(self.client, self.prefix, now, expect_mod=self.mod)
            LOG.info(f"scheduled heartbeat key rotation: {new.current.id} signs from "
                     f"{utc(new.current.activates)}", extra={"node": self.node})
        except RotationRefused as exc:
            LOG.debug(f"scheduled rotation not done here: {exc}", extra={"node": self.node})
        except KeyDocError as exc:
            LOG.error(f"scheduled rotation: {exc}", extra={"node": self.node})
        except ETCD_ERRORS as exc:
            if not permission_denied(exc):
                LOG.debug(f"scheduled rotation failed: {type(exc).__name__}",
                          extra={"node": self.node})
            elif self._refused_for != self.mod:
                self._refused_for = self.mod
                LOG.warning("heartbeat key rotation is due but this agent's etcd user may not "
                            "write keys (least-privilege roles): run `vipmgr keys rotate` "
                            "with the admin credential on a schedule", extra={"node": self.node})

    # --- installing -----------------------------------------------------------------------

    def _install_doc(self, now: float) -> None:
        if self.mode != MODE_ETCD or self.doc is None:
            return
        self._install_ring(self.doc.ring(now), self.doc.signing(now).id)

    def _install_ring(self, ring: KeyRing, signing_id: str | None) -> None:
        if ring == self.receiver.keyring and signing_id == self._signing_id:
            return
        self.receiver.keyring = ring
        self.encoder.signing_key = ring.signing_key
        if signing_id != self._signing_id:
            accepted = len(ring.keys) - 1
            LOG.info(f"heartbeat key {signing_id or 'none'} signs ({self.mode}"
                     f"{f', {accepted} more accepted' if accepted else ''})",
                     extra={"node": self.node})
        self._signing_id = signing_id
        if self.on_state is not None:
            # what the metrics call the mode is what the receiver believes: accepting
            # unsigned heartbeats is insecure, whatever else is configured
            self.on_state(self.mode if ring.require_auth else MODE_INSECURE, signing_id)

    @property
    def signing_id(self) -> str | None:
        return self._signing_id

