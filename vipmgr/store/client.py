"""Connecting to etcd: endpoints, TLS and user/password, with errors a user can act on.

aetcd only opens insecure channels; :class:`EtcdClient` adds TLS by building
the gRPC channel itself, and :func:`connect` picks the first endpoint that
answers, so ``--etcd a,b,c`` survives one member being down.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aetcd
import aetcd.exceptions
import grpc

DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
DEFAULT_PREFIX = "/vipmgr"
ENV_ENDPOINTS = "VIPMGR_ETCD"
ENV_PREFIX = "VIPMGR_ETCD_PREFIX"


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


class EtcdClient(aetcd.Client):
    """aetcd's client with an optional TLS channel (client certificates too)."""

    def __init__(self, host: str, port: int, settings: EtcdSettings):
        super().__init__(host=host, port=port, username=settings.user,
                         password=settings.password, timeout=settings.timeout)
        self.settings = settings
        self.endpoint = f"{host}:{port}"

    async def connect(self) -> None:
        if not self.settings.tls:
            return await super().connect()
        if self._connected.is_set():
            return None
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(self.settings.cacert),
            private_key=_read(self.settings.key),
            certificate_chain=_read(self.settings.cert))
        # aetcd builds its stubs on self.channel; give it a secure one, then let it finish.
        secure = aetcd.rpc.secure_channel(self.endpoint, creds, options=self._options.items())
        original = aetcd.rpc.insecure_channel
        aetcd.rpc.insecure_channel = lambda *_a, **_kw: secure
        try:
            return await super().connect()
        finally:
            aetcd.rpc.insecure_channel = original


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


async def connect(settings: EtcdSettings) -> EtcdClient:
    """The first endpoint that answers a status call within the timeout."""
    errors = []
    for endpoint in settings.endpoints:
        host, port = parse_endpoint(endpoint)
        client = EtcdClient(host, port, settings)
        try:
            await asyncio.wait_for(_probe(client), settings.timeout)
            return client
        except (aetcd.exceptions.InvalidArgumentError,
                aetcd.exceptions.UnauthenticatedError) as exc:
            await client.close()
            if "auth" in str(exc).lower() or "user" in str(exc).lower():
                raise EtcdAuthError(
                    f"etcd at {endpoint} refused the credentials ({_detail(exc)}); "
                    "check --user/--password") from None
            errors.append(f"{endpoint} ({type(exc).__name__})")
        except (asyncio.TimeoutError, aetcd.exceptions.ClientError, grpc.RpcError, OSError) as exc:
            errors.append(f"{endpoint} ({type(exc).__name__})")
            await client.close()
    raise EtcdUnavailable(f"cannot reach etcd at {', '.join(errors)}; check --etcd / "
                          f"{ENV_ENDPOINTS} and that etcd is running")


def _detail(exc: BaseException) -> str:
    """etcd's own reason, without gRPC's wrapping."""
    text = str(exc).strip()
    return text.rsplit("desc = ", 1)[-1].strip('"\' ') or type(exc).__name__


async def _probe(client: EtcdClient) -> None:
    await client.connect()
    await client.get(b"\0vipmgr-probe")
