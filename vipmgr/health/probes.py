"""Health-probe definitions, parsed from the agent config's ``probes:`` list.

A probe is pure data: what to check and how often. Running it lives in
:mod:`vipmgr.health.checks`; turning results into up/down lives in
:mod:`vipmgr.health.state`. Parsing collects every problem with its field path
(``probes[2].timeout``) and a fix, so one round of edits is enough.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping
from urllib.parse import urlsplit

from vipmgr.config.durations import parse_duration
from vipmgr.config.errors import ConfigError
from vipmgr.resources.net import ifname_problem

DEFAULT_INTERVAL = 2.0
DEFAULT_TIMEOUT = 1.0  # capped at half the interval when the interval is shorter than 2 s
DEFAULT_RISE = 2
DEFAULT_FALL = 3

COMMON_FIELDS = ("name", "kind", "interval", "timeout", "rise", "fall")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True, kw_only=True)
class Probe:
    """Fields every probe has; ``rise``/``fall`` follow keepalived/HAProxy."""

    name: str
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    rise: int = DEFAULT_RISE
    fall: int = DEFAULT_FALL

    kind: ClassVar[str]
    fields: ClassVar[tuple[str, ...]]

    @property
    def target(self) -> str:
        """What is checked, for humans: ``eth1``, ``http://127.0.0.1:8080/healthz``."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"probe '{self.name}' ({self.kind} {self.target})"


@dataclass(frozen=True, kw_only=True)
class HttpProbe(Probe):
    """GET ``url`` (plain HTTP/1.0); passes when the status is one of ``expect_status``."""

    url: str
    expect_status: tuple[int, ...] = (200,)

    kind: ClassVar[str] = "http"
    fields: ClassVar[tuple[str, ...]] = ("url", "expectStatus")

    @property
    def target(self) -> str:
        return self.url


@dataclass(frozen=True, kw_only=True)
class TcpProbe(Probe):
    """Passes when a TCP connection to ``host:port`` is accepted."""

    host: str
    port: int

    kind: ClassVar[str] = "tcp"
    fields: ClassVar[tuple[str, ...]] = ("address",)

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, kw_only=True)
class ExecProbe(Probe):
    """Runs ``command`` (an argv, no shell); passes on exit status 0."""

    command: tuple[str, ...]

    kind: ClassVar[str] = "exec"
    fields: ClassVar[tuple[str, ...]] = ("command",)

    @property
    def target(self) -> str:
        return " ".join(self.command)


@dataclass(frozen=True, kw_only=True)
class FileProbe(Probe):
    """``path`` exists (or, with ``exists: false``, does not); optionally holds ``content``.

    ``content`` is compared with the file's text after stripping surrounding
    whitespace, so ``content: "1"`` matches ``/proc/sys/net/ipv4/ip_forward``.
    """

    path: str
    exists: bool = True
    content: str | None = None

    kind: ClassVar[str] = "file"
    fields: ClassVar[tuple[str, ...]] = ("path", "exists", "content")

    @property
    def target(self) -> str:
        return self.path if self.exists else f"{self.path} absent"


@dataclass(frozen=True, kw_only=True)
class CarrierProbe(Probe):
    """``interface`` is administratively up, has carrier and is operationally up."""

    interface: str

    kind: ClassVar[str] = "carrier"
    fields: ClassVar[tuple[str, ...]] = ("interface",)

    @property
    def target(self) -> str:
        return self.interface


@dataclass(frozen=True, kw_only=True)
class RouteProbe(Probe):
    """The kernel has a route to ``destination`` (leaving via ``interface`` when given)."""

    destination: str
    interface: str | None = None

    kind: ClassVar[str] = "route"
    fields: ClassVar[tuple[str, ...]] = ("destination", "interface")

    @property
    def target(self) -> str:
        return f"{self.destination} dev {self.interface}" if self.interface else self.destination


PROBE_KINDS: dict[str, type[Probe]] = {
    cls.kind: cls for cls in (HttpProbe, TcpProbe, ExecProbe, FileProbe, CarrierProbe, RouteProbe)
}


class _Problems(list):
    """(path, message) pairs, the shape :class:`ConfigError` carries."""

    def add(self, path: str, message: str) -> None:
        self.append((path, message))


def parse_probes(data: Any, path: str = "probes") -> tuple[Probe, ...]:
    """Parse the ``probes:`` list; raise :class:`ConfigError` naming every bad field."""
    problems = _Problems()
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ConfigError([(path, "must be a list of probes, e.g. [{name: uplink, kind: carrier, "
                                  "interface: eth1}]")])
    probes: list[Probe] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(data):
        item_path = f"{path}[{i}]"
        probe = _parse_probe(item, item_path, problems)
        if probe is None:
            continue
        if probe.name in seen:
            problems.add(f"{item_path}.name", f"duplicate name {probe.name!r} (also {path}[{seen[probe.name]}]); "
                                              "give every probe its own name")
            continue
        seen[probe.name] = i
        probes.append(probe)
    if problems:
        raise ConfigError(list(problems))
    return tuple(probes)


def _parse_probe(item: Any, path: str, problems: _Problems) -> Probe | None:
    if not isinstance(item, Mapping):
        problems.add(path, "must be a mapping with at least name and kind")
        return None
    kind = item.get("kind")
    cls = PROBE_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        problems.add(f"{path}.kind", f"must be one of {', '.join(PROBE_KINDS)}, not {kind!r}")
        return None
    before = len(problems)
    for key in item:
        if key not in COMMON_FIELDS and key not in cls.fields:
            problems.add(f"{path}.{key}", f"unknown field for kind {kind}; allowed: "
                                          f"{', '.join(COMMON_FIELDS + cls.fields)}")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        problems.add(f"{path}.name", "is required: 1-63 letters, digits, '_', '.', '-' "
                                     "starting with a letter or digit, e.g. uplink")
    common = _parse_timing(item, path, problems)
    specific = _SPECIFIC[cls](item, path, problems)
    if len(problems) > before:
        return None
    return cls(name=name, **common, **specific)


def _parse_timing(item: Mapping[str, Any], path: str, problems: _Problems) -> dict[str, Any]:
    timing: dict[str, Any] = {}
    interval = _duration(item, "interval", path, problems, DEFAULT_INTERVAL)
    timeout = _duration(item, "timeout", path, problems, min(DEFAULT_TIMEOUT, interval / 2))
    if interval <= 0:
        problems.add(f"{path}.interval", "must be positive, e.g. 2s")
    if timeout <= 0:
        problems.add(f"{path}.timeout", "must be positive, e.g. 1s")
    elif timeout >= interval:
        problems.add(f"{path}.timeout", f"must be shorter than interval ({interval:g}s), "
                                        "so a slow check never overlaps the next one")
    timing.update(interval=interval, timeout=timeout)
    for key, default in (("rise", DEFAULT_RISE), ("fall", DEFAULT_FALL)):
        value = item.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.add(f"{path}.{key}", f"must be a whole number of checks >= 1 (default {default})")
            value = default
        timing[key] = value
    return timing


def _duration(item: Mapping[str, Any], key: str, path: str, problems: _Problems,
              default: float) -> float:
    if key not in item:
        return default
    try:
        return parse_duration(item[key], f"{path}.{key}")
    except ConfigError as exc:
        problems.extend(exc.problems)
        return default


def _required_str(item: Mapping[str, Any], key: str, path: str, problems: _Problems,
                  example: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        problems.add(f"{path}.{key}", f"is required: a string, e.g. {example}")
        return ""
    return value


def _http_fields(item: Mapping[str, Any], path: str, problems: _Problems) -> dict[str, Any]:
    url = _required_str(item, "url", path, problems, "http://127.0.0.1:8080/healthz")
    if url:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            problems.add(f"{path}.url", f"{url!r}: only http://HOST[:PORT]/PATH is supported "
                                        "(no TLS); use an exec probe running curl for https")
        else:
            try:
                parts.port
            except ValueError:
                problems.add(f"{path}.url", f"{url!r} has an invalid port")
    raw = item.get("expectStatus", 200)
    codes = raw if isinstance(raw, list) else [raw]
    if not codes or any(isinstance(c, bool) or not isinstance(c, int) or not 100 <= c <= 599
                        for c in codes):
        problems.add(f"{path}.expectStatus", "must be an HTTP status (100-599) or a list of them "
                                             "(default 200)")
        codes = [200]
    return {"url": url, "expect_status": tuple(codes)}


def _tcp_fields(item: Mapping[str, Any], path: str, problems: _Problems) -> dict[str, Any]:
    address = _required_str(item, "address", path, problems, "192.0.2.10:80")
    if not address:
        return {"host": "", "port": 0}
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        problems.add(f"{path}.address", f"{address!r} must be HOST:PORT with a port 1-65535, "
                                        "e.g. 192.0.2.10:80 or [2001:db8::1]:80")
        return {"host": "", "port": 0}
    return {"host": host, "port": int(port_text)}


def _exec_fields(item: Mapping[str, Any], path: str, problems: _Problems) -> dict[str, Any]:
    command = item.get("command")
    if (not isinstance(command, list) or not command
            or not all(isinstance(arg, str) and arg for arg in command)):
        problems.add(f"{path}.command", "is required: a list of non-empty strings run without a "
                                        "shell, e.g. ['/usr/local/bin/check-uplink', '--quick']")
        command = []
    return {"command": tuple(command)}


def _file_fields(item: Mapping[str, Any], path: str, problems: _Problems) -> dict[str, Any]:
    file_path = _required_str(item, "path", path, problems, "/run/vipmgr/ready")
    if file_path and not os.path.isabs(file_path):
        problems.add(f"{path}.path", f"{file_path!r} must be absolute, e.g. /{file_path.lstrip('./')}")
    exists = item.get("exists", True)
    if not isinstance(exists, bool):
        problems.add(f"{path}.exists", "must be true (default: the file must exist) or false "
                                       "(the file must not exist, e.g. a maintenance flag)")
        exists = True
    content = item.get("content")
    if content is not None and not isinstance(content, str):
        problems.add(f"{path}.content", "must be a string, e.g. \"1\" (quote numbers in YAML)")
    elif content is not None and not exists:
        problems.add(f"{path}.content", "cannot be combined with exists: false")
    return {"path": file_path, "exists": exists, "content": content}


def _carrier_fields(item: Mapping[str, Any], path: str, problems: _Problems) -> dict[str, Any]:
    interface = item.get("interface")
    why = ifname_problem(interface)
    if why:
        problems.add(f"{path}.interface", why)
    return {"interface": interface}


def _route_fields(item: Mapping[str, Any], path: str, problems: _Problems) -> dict[str, Any]:
    destination = _required_str(item, "destination", path, problems, "198.51.100.1")
    if destination:
        try:
            ipaddress.ip_address(destination)
        except ValueError:
            problems.add(f"{path}.destination", f"{destination!r} must be a single IP address "
                                                "(the kernel is asked how it would reach it), "
                                                "e.g. 198.51.100.1")
    interface = item.get("interface")
    if interface is not None:
        why = ifname_problem(interface)
        if why:
            problems.add(f"{path}.interface", why)
    return {"destination": destination, "interface": interface}


_SPECIFIC = {
    HttpProbe: _http_fields,
    TcpProbe: _tcp_fields,
    ExecProbe: _exec_fields,
    FileProbe: _file_fields,
    CarrierProbe: _carrier_fields,
    RouteProbe: _route_fields,
}
