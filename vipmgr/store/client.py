"""Connecting to etcd: every endpoint, TLS and user/password, with errors a user can act on.

aetcd talks to one member over one gRPC channel and does nothing when that
member dies. :class:`EtcdClient` keeps aetcd's API but owns the channel: it
sits on one member at a time, checks it every ``health_interval`` with a
linearizable read bounded by ``health_timeout`` (sent with etcd's
``hasleader`` metadata, so a member cut from its quorum says "no leader"
instead of hanging), and when the check fails it probes every other member
at once and moves to the first that answers. It moves only to a member proven
to answer: while none does (an election, an outage) it stays where it is and
callers see their own errors, as with a single member. Watches made through
:meth:`EtcdClient.watch` survive a move: they are re-created on the new member
from the revision after the last event they delivered, so nothing is missed
and nothing is delivered twice.

Why a move must be quick and quiet: the agent's etcd requests time out after
``etcdTimeout`` (50 ms by default) and the election core counts a timeout as
"cut from etcd", and an active cut for leaseTTL/3 (0.67 s by default) while a
peer reaches etcd hands over. A move takes at most ``health_interval + 2 x
health_timeout`` (0.5 s by default): one check interval, the failed check and
the parallel probe of the others; a member that refuses (killed) fails its
check at once, so that case takes about one interval.
Requests in flight on the old member are left to finish or time out; its
channel is closed a request timeout later.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import aetcd
import aetcd.exceptions
import aetcd.rpc as rpc
import aetcd.rtypes
import aetcd.watcher
import grpc

DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
DEFAULT_PREFIX = "/vipmgr"
ENV_ENDPOINTS = "VIPMGR_ETCD"
ENV_PREFIX = "VIPMGR_ETCD_PREFIX"
LEADER_REQUIRED = ("hasleader", "true")  # etcd: refuse at once when this member has no leader
HEALTH_KEY = b"\0vipmgr-probe"
WATCH_RESUME_WAIT = 2.0  # a broken watch waits this long for a move before it gives up

LOG = logging.getLogger("vipmgr.store")


class EtcdUnavailable(ConnectionError):
    """No endpoint answered; the message lists them."""


class EtcdAuthError(EtcdUnavailable):
    """etcd answered but refused the credentials (or asked for some)."""


@dataclass(frozen=True)
class EtcdSettings:
    endpoints: tuple[str, ...] = (DEFAULT_ENDPOINT,)
    prefix: str = DEFAULT_PREFIX
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = None
    timeout: float = 5.0
    health_interval: float = 0.1   # how often the current member is checked
    health_timeout: float = 0.2    # one member's check (and each candidate's, in parallel)

    @classmethod
    def from_options(cls, etcd: str | None = None, prefix: str | None = None,
                     **kw) -> "EtcdSettings":
        """From CLI options, falling back to VIPMGR_ETCD / VIPMGR_ETCD_PREFIX."""
        raw = etcd or os.environ.get(ENV_ENDPOINTS) or DEFAULT_ENDPOINT
        endpoints = tuple(e.strip() for e in raw.split(",") if e.strip())
        for ep in endpoints:
            parse_endpoint(ep)
        pfx = (prefix or os.environ.get(ENV_PREFIX) or DEFAULT_PREFIX).rstrip("/")
        return cls(endpoints=endpoints, prefix=pfx or DEFAULT_PREFIX,
                   **{k: v for k, v in kw.items() if v is not None})

    @property
    def tls(self) -> bool:
        return bool(self.cacert or self.cert) or any(e.startswith("https://") for e in self.endpoints)

    def describe(self) -> str:
        return ",".join(self.endpoints)


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``http://host:port`` or ``host:port`` → (host, port); ValueError names the fix."""
    url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"etcd endpoint {endpoint!r} is not http(s)://HOST:PORT")
    try:
        port = url.port or 2379
    except ValueError:
        raise ValueError(f"etcd endpoint {endpoint!r} has an invalid port") from None
    return url.hostname, port


@dataclass(eq=False)
class _Link:
    """One gRPC channel to one member, with the call metadata (auth token) it needs."""

    index: int
    endpoint: str
    channel: grpc.aio.Channel
    metadata: tuple[tuple[str, str], ...]


class EtcdClient(aetcd.Client):
    """aetcd's client over all of ``settings.endpoints``, moving to another member when
    the current one stops answering (see the module docstring)."""

    def __init__(self, settings: EtcdSettings):
        self.addresses = [parse_endpoint(e) for e in settings.endpoints]
        host, port = self.addresses[0]
        super().__init__(host=host, port=port, username=settings.user,
                         password=settings.password, timeout=settings.timeout)
        self.settings = settings
        self.moves = 0                 # how often it moved to another member
        self._link: _Link | None = None
        self._guard: asyncio.Task | None = None
        self._moved = asyncio.Event()  # set (and replaced) at every move
        self._retiring: set[asyncio.Task] = set()
        self._unanswered = False       # the last check found no member answering
        self.log_extra: dict[str, str] = {}  # e.g. {"node": …}: added to every log line
        self.on_move: Callable[[str, str], None] | None = None  # (from, to), e.g. a metric

    @property
    def endpoint(self) -> str:
        """``host:port`` of the member in use."""
        return self._link.endpoint if self._link else "%s:%d" % self.addresses[0]

    # --- channels -----------------------------------------------------------------

    async def _open(self, index: int) -> _Link:
        """A channel to member ``index``, authenticated when a user is set."""
        host, port = self.addresses[index]
        target = f"{host}:{port}"
        options = list(self._options.items())
        if self.settings.tls:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(self.settings.cacert),
                private_key=_read(self.settings.key),
                certificate_chain=_read(self.settings.cert))
            channel = grpc.aio.secure_channel(target, creds, options=options)
        else:
            channel = grpc.aio.insecure_channel(target, options=options)
        metadata: tuple[tuple[str, str], ...] = (LEADER_REQUIRED,)
        if self.settings.user is not None and self.settings.password is not None:
            authenticated = False
            try:
                reply = await rpc.AuthStub(channel).Authenticate(
                    rpc.AuthenticateRequest(name=self.settings.user,
                                            password=self.settings.password),
                    timeout=self.settings.timeout)
                authenticated = True
            finally:
                if not authenticated:
                    await channel.close()
            metadata += (("token", reply.token),)
        return _Link(index, target, channel, metadata)

    def _use(self, link: _Link) -> None:
        """Point every aetcd stub at ``link`` (no await: callers never see a half switch)."""
        self._link = link
        self._host, self._port = self.addresses[link.index]
        self.channel = link.channel
        self.metadata = link.metadata
        self.auth_stub = rpc.AuthStub(link.channel)
        self.kvstub = rpc.KVStub(link.channel)
        self.clusterstub = rpc.ClusterStub(link.channel)
        self.leasestub = rpc.LeaseStub(link.channel)
        self.maintenancestub = rpc.MaintenanceStub(link.channel)
        self._watcher = aetcd.watcher.Watcher(rpc.WatchStub(link.channel),
                                              timeout=self._timeout, metadata=link.metadata)
        self._connected.set()

    async def _check(self, link: _Link, timeout: float) -> None:
        """A linearizable read on ``link``; raises when the member cannot serve one."""
        await rpc.KVStub(link.channel).Range(
            rpc.RangeRequest(key=HEALTH_KEY, count_only=True),
            timeout=timeout, metadata=link.metadata)

    async def _candidate(self, index: int, timeout: float) -> _Link:
        link = await self._open(index)
        answered = False
        try:
            await self._check(link, timeout)
            answered = True
        finally:
            if not answered:
                await link.channel.close()
        return link

    async def _first_answering(self, indexes: list[int], timeout: float
                               ) -> tuple[_Link | None, dict[int, BaseException]]:
        """Probe ``indexes`` in parallel; the link of the first of them, in that order of
        preference, that answers (decided as soon as every one before it failed)."""
        tasks = {i: asyncio.create_task(asyncio.wait_for(self._candidate(i, timeout), timeout))
                 for i in indexes}
        errors: dict[int, BaseException] = {}
        winner = None
        try:
            for i in indexes:  # each wait is bounded by the same timeout, all run at once
                await asyncio.wait([tasks[i]])
                if tasks[i].exception() is None:
                    winner = tasks[i].result()
                    break
                errors[i] = tasks[i].exception()
        finally:
            rest = [t for t in tasks.values() if not t.done()]
            for task in rest:
                task.cancel()
            # a candidate that failed or was cancelled closed its own channel
            for task in tasks.values():
                link = (await asyncio.gather(task, return_exceptions=True))[0]
                if isinstance(link, _Link) and link is not winner:
                    await link.channel.close()
        return winner, errors

    # --- life cycle ---------------------------------------------------------------

    async def open(self) -> None:
        """Connect to the first member, in endpoint order, that serves a linearizable read
        within ``settings.timeout`` (all are asked at once); EtcdUnavailable / EtcdAuthError."""
        link, errors = await self._first_answering(list(range(len(self.addresses))),
                                                   self.settings.timeout)
        if link is None:
            for index, exc in errors.items():
                if _is_auth_refusal(exc):
                    raise EtcdAuthError(
                        f"etcd at {self.settings.endpoints[index]} refused the credentials "
                        f"({_detail(exc)}); check --user/--password") from None
            failed = ", ".join(f"{self.settings.endpoints[i]} ({_reason(errors.get(i))})"
                               for i in range(len(self.addresses)))
            raise EtcdUnavailable(f"cannot reach etcd at {failed}; check --etcd / "
                                  f"{ENV_ENDPOINTS} and that etcd is running")
        self._use(link)
        self._start_guard()

    async def connect(self) -> None:
        """aetcd calls this before every request: a no-op once open."""
        if self._connected.is_set():
            return
        await self.open()

    def _start_guard(self) -> None:
        if len(self.addresses) > 1 and (self._guard is None or self._guard.done()):
            self._guard = asyncio.create_task(self._guard_loop(), name="etcd-failover")

    async def _guard_loop(self) -> None:
        interval, timeout = self.settings.health_interval, self.settings.health_timeout
        while True:
            await asyncio.sleep(interval)
            link = self._link
            if link is None:
                return
            try:
                await self._check(link, timeout)
            except (grpc.aio.AioRpcError, asyncio.TimeoutError) as exc:
                await self._move_from(link, _reason(exc))
            else:
                if self._unanswered:
                    self._unanswered = False
                    LOG.info(f"etcd member {link.endpoint} answers again", extra=self.log_extra)

    async def _move_from(self, bad: _Link, reason: str) -> None:
        n = len(self.addresses)
        others = [(bad.index + k) % n for k in range(1, n)]
        link, errors = await self._first_answering(others, self.settings.health_timeout)
        if link is None:
            if not self._unanswered:
                self._unanswered = True
                LOG.warning(f"etcd member {bad.endpoint} does not answer ({reason}) and no "
                            f"other member does: staying on it "
                            f"({', '.join(self.settings.endpoints[i] + ' ' + _reason(e) for i, e in errors.items())})",
                            extra=self.log_extra)
            return
        if self._link is not bad:  # closed or moved meanwhile
            await link.channel.close()
            return
        old_watcher = self._watcher
        self._use(link)
        self.moves += 1
        self._unanswered = False
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()
        LOG.warning(f"etcd member {bad.endpoint} does not answer ({reason}): "
                    f"moved to {link.endpoint}", extra=self.log_extra)
        if self.on_move is not None:
            self.on_move(bad.endpoint, link.endpoint)
        if old_watcher is not None:
            await old_watcher.shutdown()  # FailoverWatch re-creates its watches on the new one
        task = asyncio.create_task(self._retire(bad))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, link: _Link) -> None:
        """Close a left channel once every request still on it has finished or timed out
        (closing it earlier would cancel them, and the callers would see CancelledError)."""
        try:
            await asyncio.sleep(self.settings.timeout)
        finally:
            await link.channel.close()

    async def close(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
            await asyncio.gather(self._guard, return_exceptions=True)
            self._guard = None
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        link, self._link = self._link, None
        if self._watcher is not None:
            await self._watcher.shutdown()
        if link is not None:
            await link.channel.close()
        self._init_channel_attrs()
        self._connected.clear()
        self._moved.set()  # wakes watches waiting for a move: there will be none

    # --- watches ------------------------------------------------------------------

    async def watch(self, key: bytes, range_end: bytes | None = None,
                    start_revision: int | None = None, **kw: Any) -> "FailoverWatch":
        """Like aetcd's ``watch``, but the stream survives a move to another member."""
        await self.connect()
        watch = FailoverWatch(self, key, range_end, start_revision, kw)
        await watch.open()
        return watch


class FailoverWatch:
    """An aetcd watch that, when its stream breaks because the client moved (or is about
    to), is re-created on the new member from the revision after the last event it
    delivered. A break with no move within WATCH_RESUME_WAIT is the caller's to handle."""

    def __init__(self, client: EtcdClient, key: bytes, range_end: bytes | None,
                 start_revision: int | None, options: dict[str, Any]):
        self.client, self.key, self.range_end, self.options = client, key, range_end, options
        self.next_revision = start_revision
        self.resumes = 0
        self._inner: aetcd.rtypes.Watch | None = None
        self._cancelled = False

    async def open(self) -> None:
        client = self.client
        self._moved = client._moved
        if self.next_revision is None:
            # The revision this watch starts at, so that a re-created one misses nothing.
            reply = await client.kvstub.Range(
                rpc.RangeRequest(key=self.key, range_end=self.range_end or b"", count_only=True),
                timeout=client.settings.timeout, metadata=client.metadata)
            self.next_revision = reply.header.revision + 1
        self._inner = await aetcd.Client.watch(client, self.key, range_end=self.range_end,
                                               start_revision=self.next_revision,
                                               **self.options)

    @property
    def watch_id(self) -> int | None:
        return self._inner.watch_id if self._inner else None

    def __aiter__(self):
        return self._events()

    async def _events(self):
        while not self._cancelled:
            inner = self._inner
            error: BaseException | None = None
            try:
                async for event in inner:
                    self.next_revision = event.kv.mod_revision + 1
                    yield event
            except aetcd.exceptions.RevisionCompactedError:
                raise
            except (aetcd.exceptions.ClientError, grpc.RpcError) as exc:
                error = exc
            if self._cancelled:
                return
            if not await self._wait_move():
                if error is not None:
                    raise error
                return
            await self._reopen(error)

    async def _wait_move(self) -> bool:
        """True when the client moved since this stream was opened (waits a bit for it)."""
        moved = self._moved
        if not moved.is_set():
            try:
                await asyncio.wait_for(moved.wait(), WATCH_RESUME_WAIT)
            except asyncio.TimeoutError:
                return False
        return self.client._link is not None

    async def _reopen(self, error: BaseException | None) -> None:
        try:
            await self.open()
        except (aetcd.exceptions.ClientError, grpc.RpcError, asyncio.TimeoutError):
            if error is not None:
                raise error from None
            raise
        self.resumes += 1
        LOG.info(f"watch {self.key!r} re-created on {self.client.endpoint} "
                 f"from revision {self.next_revision}", extra=self.client.log_extra)

    async def cancel(self) -> None:
        self._cancelled = True
        if self._inner is not None:
            await self._inner.cancel()


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def _is_auth_refusal(exc: BaseException) -> bool:
    if not isinstance(exc, grpc.aio.AioRpcError):
        return False
    if exc.code() not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED,
                          grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION):
        return False
    text = (exc.details() or "").lower()
    return "auth" in text or "user" in text or "password" in text or "token" in text


def _reason(exc: BaseException | None) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {_detail_text(exc.details() or '')}"
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return type(exc).__name__ if exc is not None else "no answer"


def _detail(exc: BaseException) -> str:
    """etcd's own reason, without gRPC's wrapping."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return _detail_text(exc.details() or "") or exc.code().name
    return _detail_text(str(exc)) or type(exc).__name__


def _detail_text(text: str) -> str:
    return text.strip().rsplit("desc = ", 1)[-1].strip('"\' ')


async def connect(settings: EtcdSettings) -> EtcdClient:
    """A client on the first endpoint, in order, that answers within the timeout (all are
    asked at once); it moves to another endpoint later if that one stops answering."""
    client = EtcdClient(settings)
    await client.open()
    return client
