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
from vipmgr.resources.loader import yaml_problem
from vipmgr.resources.textinput import BoundedLoader, InputError, read_text_file
from vipmgr.store.client import EtcdSettings
from vipmgr.wire.keys import KeyFileError, KeyRing, parse_keys

ENV_OVERRIDES = {
    "VIPMGR_NODE": "node",
    "VIPMGR_INTERNAL_INTERFACE": "internalInterface",
    "VIPMGR_METRICS_ADDR": "metricsAddress",
    "VIPMGR_LOG_FORMAT": "logFormat",
    "VIPMGR_AUTH_KEY_FILE": "authKeyFile",
}

MAX_CONFIG_BYTES = 1024 * 1024
MAX_KEY_FILE_BYTES = 64 * 1024

TOP_FIELDS = ("node", "etcd", "labels", "internalInterface", "heartbeat", "authKeyFile",
              "requireAuth", "probes", "garp", "metricsAddress", "logFormat", "logLevel",
              "reconcileInterval", "statusInterval", "placementHoldDown")


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
    # true: unsigned heartbeats, every heartbeat believed (docs/security.md); default: keys from etcd
    heartbeat_insecure: bool = False
    auth_key_file: str | None = None
    require_auth: bool = False
    probes: tuple[Probe, ...] = ()
    garp: GarpSettings = field(default_factory=GarpSettings)
    metrics_address: str = "127.0.0.1:9750"  # "" turns the endpoint off
    log_format: str = "text"
    log_level: str = "info"
    reconcile_interval: float = 5.0
    status_interval: float = 1.0
    # a node counts for placement once eligible this long, and stops once gone this long
    # (docs/placement.md); the same on every agent
    placement_hold_down: float = 10.0


def load_config(path: str | None, *, node: str | None = None,
                etcd: str | None = None, environ: Mapping[str, str] = os.environ) -> AgentConfig:
    """File (optional) < environment < command-line flags. Raises ConfigError, also when
    the key file named by authKeyFile cannot be used."""
    data: dict[str, Any] = {}
    if path:
        data = read_config_file(path)
    for env, key in ENV_OVERRIDES.items():
        if environ.get(env):
            data[key] = environ[env]
    if node:
        data["node"] = node
    config = parse_config(data, etcd_override=etcd, environ=environ)
    if config.auth_key_file and (why := key_file_problem(config.auth_key_file,
                                                         config.require_auth)):
        raise ConfigError([("authKeyFile", why)])
    return config


def read_config_file(path: str) -> dict[str, Any]:
    """The file's one YAML mapping, read with the manifest reader's bounds. Raises ConfigError."""
    try:
        text, _ = read_text_file(path, MAX_CONFIG_BYTES)
    except InputError as exc:
        raise ConfigError([("<file>", str(exc).removeprefix(f"{path}: "))]) from None
    loader = None
    try:
        loader = BoundedLoader(text)
        loaded = loader.get_single_data()
    except yaml.YAMLError as exc:
        problem = yaml_problem(exc, path)
        line, _, column = problem.source.removeprefix(path).lstrip(":").partition(":")
        where = f"line {line}, column {column}" if column else "<yaml>"
        raise ConfigError([(where, problem.message)]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError([("<file>", "must be a YAML mapping of settings, e.g. node: gw-a")])
    return loaded


def parse_config(data: Mapping[str, Any], *, etcd_override: str | None = None,
                 environ: Mapping[str, str] = os.environ) -> AgentConfig:
    problems: list[tuple[str, str]] = []
    for key in data:
        if key not in TOP_FIELDS:
            problems.append((str(key), f"unknown setting; known: {', '.join(TOP_FIELDS)}"))
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
    peers, insecure = _heartbeat(data.get("heartbeat") or {}, problems)
    probes: tuple[Probe, ...] = ()
    try:
        probes = parse_probes(data.get("probes") or [], "probes")
    except ConfigError as exc:
        problems += exc.problems
    garp = _garp(data.get("garp") or {}, problems)
    durations = {}
    for key, default in (("reconcileInterval", 5.0), ("statusInterval", 1.0),
                         ("placementHoldDown", 10.0)):
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
    metrics = data.get("metricsAddress", "127.0.0.1:9750")
    if not isinstance(metrics, str):
        problems.append(("metricsAddress", "must be HOST:PORT as a string, or '' to turn it off"))
    require_auth = data.get("requireAuth", False)
    if not isinstance(require_auth, bool):
        problems.append(("requireAuth", "must be true or false"))
        require_auth = False
    key_file = data.get("authKeyFile")
    if key_file is not None and (not isinstance(key_file, str) or not key_file):
        problems.append(("authKeyFile", "must be the path of the heartbeat key file"))
        key_file = None
    if require_auth and not key_file:
        problems.append(("requireAuth", "needs authKeyFile: the file with the heartbeat key(s)"))
    if insecure and key_file:
        problems.append(("heartbeat.insecure", "heartbeat.insecure: true contradicts authKeyFile; "
                                               "drop one"))
    if problems:
        raise ConfigError(problems)
    return AgentConfig(
        node=node, etcd=etcd, labels=labels, internal_interface=internal, unicast_peers=peers,
        heartbeat_insecure=insecure,
        auth_key_file=key_file, require_auth=require_auth, probes=probes,
        garp=garp, metrics_address=metrics, log_format=log_format, log_level=log_level,
        reconcile_interval=durations.get("reconcileInterval", 5.0),
        status_interval=durations.get("statusInterval", 1.0),
        placement_hold_down=durations.get("placementHoldDown", 10.0))


def internal_interface_problem(config: AgentConfig, interfaces: Mapping[str, Any]) -> str | None:
    """Why this node would register without an internalIP, or None.

    ``interfaces`` are the node's interfaces that have an IPv4 address (what registration
    reads from the kernel). The config cannot know them when it is parsed, so the agent
    asks this once it has looked, and logs the answer before it registers.
    """
    name = config.internal_interface
    if name in interfaces:
        return None
    have = ", ".join(sorted(interfaces)) or "none"
    return (f"internalInterface {name} has no IPv4 address on node {config.node} (interfaces "
            f"with one: {have}): the Node registers without internalIP, so no VM traffic can be "
            "steered to it or routed back through it; set internalInterface (agent config, "
            "or VIPMGR_INTERNAL_INTERFACE) to one of them")


def key_file_problem(path: str, require_auth: bool) -> str | None:
    """Why the heartbeat key file cannot be used (missing, unreadable, not keys), or None.

    Checked when the config is loaded, so a bad file is one line at start-up or reload,
    not a traceback once the agent is running. The format is the wire's (parse_keys).
    """
    try:
        text, _ = read_text_file(path, MAX_KEY_FILE_BYTES)
    except InputError as exc:
        return (f"{exc}; create it with one 'hex:…' or 'base64:…' key per line "
                "(docs/wire.md), or remove authKeyFile")
    try:
        KeyRing(parse_keys(text, source=path), require_auth)
    except KeyFileError as exc:
        return f"{path}: {exc}" if not str(exc).startswith(path) else str(exc)
    return None


def _heartbeat(hb: Any, problems: list[tuple[str, str]]) -> tuple[tuple[str, ...], bool]:
    """(unicast peers, insecure) from the heartbeat block."""
    if not isinstance(hb, Mapping):
        problems.append(("heartbeat", "must be a mapping with peers: [IPv4, …] and insecure"))
        return (), False
    for key in hb:
        if key not in ("peers", "insecure"):
            problems.append((f"heartbeat.{key}", "unknown setting; known: peers, insecure"))
    insecure = hb.get("insecure", False)
    if not isinstance(insecure, bool):
        problems.append(("heartbeat.insecure", "must be true or false"))
        insecure = False
    raw_peers = hb.get("peers") or []
    if not isinstance(raw_peers, list):
        problems.append(("heartbeat.peers", "must be a list of IPv4 addresses, e.g. [192.0.2.12]"))
        return (), insecure
    for i, peer in enumerate(raw_peers):
        if why := unicast_ipv4_problem(peer):
            problems.append((f"heartbeat.peers[{i}]", why))
    return tuple(raw_peers), insecure


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
    if isinstance(endpoints, list) and all(isinstance(e, str) for e in endpoints):
        endpoints = ",".join(endpoints)
    strings = {"endpoints": endpoints, **{k: raw.get(k) for k in allowed[1:]}}
    bad = [k for k, v in strings.items() if v is not None and not isinstance(v, str)]
    for key in bad:
        problems.append((f"etcd.{key}", "must be a string" + (
            " or a list of URLs, e.g. [http://198.51.100.2:2379]" if key == "endpoints" else "")))
    if bad:
        return EtcdSettings()
    try:
        return EtcdSettings.from_options(
            override or environ.get("VIPMGR_ETCD") or endpoints,
            environ.get("VIPMGR_ETCD_PREFIX") or strings["prefix"],
            cacert=strings["cacert"], cert=strings["cert"], key=strings["key"],
            user=strings["user"], password=strings["password"])
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
