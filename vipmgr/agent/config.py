"""The agent's configuration file (YAML), with environment overrides and every default.

Everything a node needs to know about itself lives here; everything the
nodes must agree on (gateways, timers, policies) lives in etcd resources.
Unknown keys and bad values are rejected with the field path and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from vipmgr.config.durations import parse_duration
from vipmgr.config.errors import ConfigError
from vipmgr.health.probes import Probe, parse_probes
from vipmgr.resources.net import ifname_problem, unicast_ipv4_problem
from vipmgr.resources.selectors import check_labels
from vipmgr.resources.errors import Problems
from vipmgr.store.client import EtcdSettings

ENV_OVERRIDES = {
    "VIPMGR_NODE": "node",
    "VIPMGR_INTERNAL_INTERFACE": "internalInterface",
    "VIPMGR_METRICS_ADDR": "metricsAddress",
    "VIPMGR_LOG_FORMAT": "logFormat",
    "VIPMGR_AUTH_KEY_FILE": "authKeyFile",
}

TOP_FIELDS = ("node", "etcd", "labels", "internalInterface", "heartbeat", "authKeyFile",
              "requireAuth", "probes", "garp", "metricsAddress", "logFormat", "logLevel",
              "reconcileInterval", "statusInterval")


@dataclass(frozen=True)
class GarpSettings:
    count: int = 3
    interval: float = 0.02
    refresh: float = 10.0  # 0 turns periodic refresh off


@dataclass(frozen=True)
class AgentConfig:
    """Defaults are what an agent without a config file runs with."""

    node: str = ""
    etcd: EtcdSettings = field(default_factory=EtcdSettings)
    labels: Mapping[str, str] = field(default_factory=dict)
    internal_interface: str = "eth0"  # its IPv4 is the Node's internalIP (steering next hop)
    unicast_peers: tuple[str, ...] = ()  # heartbeat to these instead of 224.0.0.18
    auth_key_file: str | None = None
    require_auth: bool = False
    probes: tuple[Probe, ...] = ()
    garp: GarpSettings = field(default_factory=GarpSettings)
    metrics_address: str = "127.0.0.1:9750"  # "" turns the endpoint off
    log_format: str = "text"
    log_level: str = "info"
    reconcile_interval: float = 5.0
    status_interval: float = 1.0


def load_config(path: str | None, *, node: str | None = None,
                etcd: str | None = None, environ: Mapping[str, str] = os.environ) -> AgentConfig:
    """File (optional) < environment < command-line flags. Raises ConfigError."""
    data: dict[str, Any] = {}
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                loaded = yaml.safe_load(fh) or {}
        except OSError as exc:
            raise ConfigError([(path, f"cannot read: {exc.strerror}")]) from None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
            raise ConfigError([(where, str(exc.problem))]) from None
        if not isinstance(loaded, dict):
            raise ConfigError([(path, "must be a YAML mapping of settings")])
        data = loaded
    for env, key in ENV_OVERRIDES.items():
        if environ.get(env):
            data[key] = environ[env]
    if node:
        data["node"] = node
    return parse_config(data, etcd_override=etcd, environ=environ)


def parse_config(data: Mapping[str, Any], *, etcd_override: str | None = None,
                 environ: Mapping[str, str] = os.environ) -> AgentConfig:
    problems: list[tuple[str, str]] = []
    for key in data:
        if key not in TOP_FIELDS:
            problems.append((key, f"unknown setting; known: {', '.join(TOP_FIELDS)}"))
    node = data.get("node")
    if not isinstance(node, str) or not node:
        problems.append(("node", "is required: this node's name (--node, VIPMGR_NODE or node:)"))
    etcd = _etcd(data.get("etcd") or {}, etcd_override, environ, problems)
    lp = Problems()
    labels = check_labels(data.get("labels"), "labels", lp)
    problems += [(p.path, p.message) for p in lp.items]
    internal = data.get("internalInterface", "eth0")
    if why := ifname_problem(internal):
        problems.append(("internalInterface", why))
    hb = data.get("heartbeat") or {}
    peers: tuple[str, ...] = ()
    if not isinstance(hb, Mapping):
        problems.append(("heartbeat", "must be a mapping with peers: [IPv4, …]"))
    else:
        for key in hb:
            if key != "peers":
                problems.append((f"heartbeat.{key}", "unknown setting; known: peers"))
        raw_peers = hb.get("peers") or []
        for i, peer in enumerate(raw_peers):
            if why := unicast_ipv4_problem(peer):
                problems.append((f"heartbeat.peers[{i}]", why))
        peers = tuple(raw_peers)
    probes: tuple[Probe, ...] = ()
    try:
        probes = parse_probes(data.get("probes") or [], "probes")
    except ConfigError as exc:
        problems += exc.problems
    garp = _garp(data.get("garp") or {}, problems)
    durations = {}
    for key, default in (("reconcileInterval", 5.0), ("statusInterval", 1.0)):
        try:
            durations[key] = parse_duration(data.get(key, default), key)
        except ConfigError as exc:
            problems += exc.problems
    log_format = data.get("logFormat", "text")
    if log_format not in ("text", "json"):
        problems.append(("logFormat", "must be text or json"))
    log_level = data.get("logLevel", "info")
    if log_level not in ("debug", "info", "warning", "error"):
        problems.append(("logLevel", "must be debug, info, warning or error"))
    require_auth = data.get("requireAuth", False)
    if not isinstance(require_auth, bool):
        problems.append(("requireAuth", "must be true or false"))
    if require_auth and not data.get("authKeyFile"):
        problems.append(("requireAuth", "needs authKeyFile: the file with the heartbeat key(s)"))
    if problems:
        raise ConfigError(problems)
    return AgentConfig(
        node=node, etcd=etcd, labels=labels, internal_interface=internal, unicast_peers=peers,
        auth_key_file=data.get("authKeyFile"), require_auth=require_auth, probes=probes,
        garp=garp, metrics_address=str(data.get("metricsAddress", "127.0.0.1:9750")),
        log_format=log_format, log_level=log_level,
        reconcile_interval=durations.get("reconcileInterval", 5.0),
        status_interval=durations.get("statusInterval", 1.0))


def _etcd(raw: Any, override: str | None, environ: Mapping[str, str],
          problems: list[tuple[str, str]]) -> EtcdSettings:
    if not isinstance(raw, Mapping):
        problems.append(("etcd", "must be a mapping: endpoints, prefix, cacert, cert, key, "
                                 "user, password"))
        return EtcdSettings()
    allowed = ("endpoints", "prefix", "cacert", "cert", "key", "user", "password")
    for key in raw:
        if key not in allowed:
            problems.append((f"etcd.{key}", f"unknown setting; known: {', '.join(allowed)}"))
    endpoints = raw.get("endpoints")
    if isinstance(endpoints, list):
        endpoints = ",".join(str(e) for e in endpoints)
    try:
        return EtcdSettings.from_options(
            override or environ.get("VIPMGR_ETCD") or endpoints,
            environ.get("VIPMGR_ETCD_PREFIX") or raw.get("prefix"),
            cacert=raw.get("cacert"), cert=raw.get("cert"), key=raw.get("key"),
            user=raw.get("user"), password=raw.get("password"))
    except ValueError as exc:
        problems.append(("etcd.endpoints", str(exc)))
        return EtcdSettings()


def _garp(raw: Any, problems: list[tuple[str, str]]) -> GarpSettings:
    if not isinstance(raw, Mapping):
        problems.append(("garp", "must be a mapping: count, interval, refresh"))
        return GarpSettings()
    for key in raw:
        if key not in ("count", "interval", "refresh"):
            problems.append((f"garp.{key}", "unknown setting; known: count, interval, refresh"))
    count = raw.get("count", 3)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100:
        problems.append(("garp.count", "must be a whole number from 1 to 100"))
        count = 3
    out = {}
    for key, default in (("interval", 0.02), ("refresh", 10.0)):
        try:
            out[key] = parse_duration(raw.get(key, default), f"garp.{key}")
        except ConfigError as exc:
            problems += exc.problems
            out[key] = default
    if out["interval"] <= 0:
        problems.append(("garp.interval", "must be greater than zero, e.g. 20ms"))
    return GarpSettings(count, out["interval"], out["refresh"])
