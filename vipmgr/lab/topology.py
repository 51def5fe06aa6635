"""containerlab topology files (``*.clab.yml``) as the namespace runtime reads them.

The same file deploys with ``containerlab deploy -t`` where Docker exists and
with ``vipmgr lab up -t`` on bare network namespaces where it does not. This
module reads the part of containerlab's format the namespace runtime honours:
kinds ``linux`` and ``bridge``; per node ``cmd``, ``exec``, ``env``,
``labels``, ``sysctls``, ``healthcheck.test``, ``stages.*.wait-for`` and
``stages.healthy.exec`` (containerlab 0.59's per-stage exec hooks; the namespace
runtime runs ``target: container``, ``phase: on-enter`` hooks in the node's
namespace, with the topology file's directory as working directory, once the
node's healthcheck first passes);
``topology.defaults``, ``kinds`` and ``groups`` merged in containerlab's order
(defaults < kinds < groups < node; ``env``, ``labels`` and ``sysctls`` merge
key by key); links in the brief ``endpoints: ["node:if", "node:if"]`` form.
``image``, ``mgmt``, ``network-mode``, ``binds`` and the other container
settings have no meaning without containers and are ignored.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from vipmgr.lab.netns import IFNAME_MAX

KINDS = ("linux", "bridge")
MERGED_MAPS = ("env", "labels", "sysctls")
# containerlab stages a wait-for may name; all but "healthy" are reached once the
# namespace runtime has started the node's main process.
STAGES = ("create", "create-links", "configure", "healthy")


class TopologyError(ValueError):
    """The file is not a topology the namespace runtime can deploy; says where and why."""


@dataclass(frozen=True)
class WaitFor:
    node: str
    stage: str = "create"


@dataclass(frozen=True)
class StageExec:
    """A command run in the node when it enters ``stage`` (``healthy`` here)."""

    stage: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class Node:
    """One node after defaults/kinds/groups are merged in."""

    name: str
    kind: str
    cmd: tuple[str, ...] = ()
    exec: tuple[tuple[str, ...], ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    sysctls: Mapping[str, str] = field(default_factory=dict)
    healthcheck: tuple[str, ...] = ()
    wait_for: tuple[WaitFor, ...] = ()
    stage_exec: tuple[StageExec, ...] = ()

    @property
    def is_bridge(self) -> bool:
        return self.kind == "bridge"


@dataclass(frozen=True)
class Endpoint:
    node: str
    iface: str

    def __str__(self) -> str:
        return f"{self.node}:{self.iface}"


@dataclass(frozen=True)
class Link:
    a: Endpoint
    b: Endpoint


@dataclass(frozen=True)
class Topology:
    name: str
    nodes: Mapping[str, Node]
    links: tuple[Link, ...]
    path: str = ""

    def with_cmds(self, cmds: Mapping[str, str | None]) -> "Topology":
        """A copy whose nodes run other main processes (``None``: none), e.g. agents or keepalived."""
        nodes = dict(self.nodes)
        for name, cmd in cmds.items():
            if name not in nodes:
                raise TopologyError(f"no node {name!r} in topology {self.name!r}")
            nodes[name] = replace(nodes[name], cmd=tuple(shlex.split(cmd)) if cmd else ())
        return replace(self, nodes=nodes)

    def without_stage_exec(self) -> "Topology":
        """A copy with no stage exec hooks: the network and its processes, no seed manifests."""
        return replace(self, nodes={n: replace(node, stage_exec=()) for n, node in self.nodes.items()})

    def renamed(self, name: str) -> "Topology":
        """The same topology deployed under another lab name (containerlab's ``--name``)."""
        _check_name(name, "lab name")
        return replace(self, name=name)

    def start_order(self) -> list[str]:
        """Nodes in the order their main processes start: every wait-for target first."""
        order: list[str] = []
        state: dict[str, str] = {}

        def visit(name: str, chain: tuple[str, ...]) -> None:
            if state.get(name) == "done":
                return
            if state.get(name) == "visiting":
                raise TopologyError(f"wait-for cycle: {' -> '.join((*chain, name))}")
            state[name] = "visiting"
            for dep in self.nodes[name].wait_for:
                visit(dep.node, (*chain, name))
            state[name] = "done"
            order.append(name)

        for name in self.nodes:
            visit(name, ())
        return order


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-._" for c in name):
        raise TopologyError(f"{what} {name!r}: letters, digits, '-', '.', '_' only")
    return name


def _str_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TopologyError(f"{where}: must be a mapping")
    out = {}
    for key, val in value.items():
        if isinstance(val, bool):
            val = "true" if val else "false"
        out[str(key)] = "" if val is None else str(val)
    return out


def _merge(layers: list[Mapping[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key in MERGED_MAPS and isinstance(value, Mapping):
                merged[key] = {**merged.get(key, {}), **value}
            else:
                merged[key] = value
    return merged


def _words(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, str):
        raise TopologyError(f"{where}: must be a string")
    try:
        return tuple(shlex.split(value))
    except ValueError as exc:
        raise TopologyError(f"{where}: {exc}") from None


def _healthcheck(value: Any, where: str) -> tuple[str, ...]:
    """Docker's test forms: ["CMD", argv…] or ["CMD-SHELL", "script"]; the runtime runs argv."""
    if value is None:
        return ()
    test = value.get("test") if isinstance(value, Mapping) else None
    if not isinstance(test, list) or not test or not all(isinstance(t, str) for t in test):
        raise TopologyError(f"{where}.test: must be a list of strings like [CMD, prog, arg…]")
    if test[0] == "CMD" and len(test) > 1:
        return tuple(test[1:])
    if test[0] == "CMD-SHELL" and len(test) == 2:
        return ("sh", "-c", test[1])
    if test == ["NONE"]:
        return ()
    raise TopologyError(f"{where}.test: must start with CMD or CMD-SHELL")


def _wait_for(stages: Any, where: str) -> tuple[WaitFor, ...]:
    if stages is None:
        return ()
    if not isinstance(stages, Mapping):
        raise TopologyError(f"{where}: must be a mapping")
    out = []
    for stage_name, stage in stages.items():
        for dep in (stage or {}).get("wait-for") or ():
            target = dep.get("stage", "create")
            if target not in STAGES:
                raise TopologyError(f"{where}.{stage_name}.wait-for: stage {target!r} is not "
                                    f"supported by the namespace runtime ({', '.join(STAGES)})")
            out.append(WaitFor(str(dep.get("node")), target))
    return tuple(out)


HOOK_STAGES = ("healthy",)


def _stage_exec(stages: Any, where: str) -> tuple[StageExec, ...]:
    """``stages.<stage>.exec``: strings or {command, target, phase} (containerlab >= 0.59)."""
    if not isinstance(stages, Mapping):
        return ()
    out = []
    for stage_name, stage in stages.items():
        hooks = (stage or {}).get("exec") if isinstance(stage, Mapping) else None
        if isinstance(hooks, Mapping):  # the 0.51 form: {on-enter: [command, ...]}
            hooks = [{"command": c, "phase": phase} for phase, cmds in hooks.items()
                     for c in cmds or ()]
        for i, hook in enumerate(hooks or ()):
            at = f"{where}.{stage_name}.exec[{i}]"
            command = hook.get("command") if isinstance(hook, Mapping) else hook
            target = hook.get("target", "container") if isinstance(hook, Mapping) else "container"
            phase = hook.get("phase", "on-enter") if isinstance(hook, Mapping) else "on-enter"
            if stage_name not in HOOK_STAGES or target != "container" or phase != "on-enter":
                raise TopologyError(f"{at}: the namespace runtime runs only stage "
                                    f"{'/'.join(HOOK_STAGES)} hooks with target: container and "
                                    f"phase: on-enter (got stage {stage_name}, target {target}, "
                                    f"phase {phase})")
            out.append(StageExec(stage_name, _words(command, f"{at}.command")))
    return tuple(out)


def _node(name: str, raw: Mapping[str, Any], topo: Mapping[str, Any]) -> Node:
    where = f"topology.nodes.{name}"
    layers: list[Mapping[str, Any]] = [topo.get("defaults") or {}]
    kind = raw.get("kind") or layers[0].get("kind")
    kinds = topo.get("kinds") or {}
    layers.append(kinds.get(kind) or {})
    group = raw.get("group")
    if group is not None:
        layers.append((topo.get("groups") or {}).get(group) or {})
    layers.append(raw)
    merged = _merge(layers)
    kind = merged.get("kind")
    if kind not in KINDS:
        raise TopologyError(f"{where}: kind {kind!r} is not supported by the namespace runtime "
                            f"(supported: {', '.join(KINDS)})")
    exec_lines = merged.get("exec") or []
    if not isinstance(exec_lines, list):
        raise TopologyError(f"{where}.exec: must be a list of commands")
    node = Node(
        name=name,
        kind=kind,
        cmd=_words(merged["cmd"], f"{where}.cmd") if merged.get("cmd") else (),
        exec=tuple(_words(line, f"{where}.exec[{i}]") for i, line in enumerate(exec_lines)),
        env=_str_map(merged.get("env"), f"{where}.env"),
        labels=_str_map(merged.get("labels"), f"{where}.labels"),
        sysctls=_str_map(merged.get("sysctls"), f"{where}.sysctls"),
        healthcheck=_healthcheck(merged.get("healthcheck"), f"{where}.healthcheck"),
        wait_for=_wait_for(merged.get("stages"), f"{where}.stages"),
        stage_exec=_stage_exec(merged.get("stages"), f"{where}.stages"),
    )
    if node.is_bridge and (node.cmd or node.exec or node.healthcheck or node.stage_exec):
        raise TopologyError(f"{where}: a bridge has no cmd, exec, healthcheck or stage exec")
    if node.stage_exec and not node.healthcheck:
        raise TopologyError(f"{where}.stages.healthy.exec: the node has no healthcheck, so it "
                            "never becomes healthy; add healthcheck.test")
    return node


def _endpoint(text: Any, nodes: Mapping[str, Node], where: str) -> Endpoint:
    if not isinstance(text, str) or text.count(":") != 1:
        raise TopologyError(f"{where}: endpoint {text!r} must be 'node:interface'")
    node, iface = text.split(":")
    if node not in nodes:
        raise TopologyError(f"{where}: unknown node {node!r}")
    if not iface or len(iface) > IFNAME_MAX or "/" in iface or iface == "lo":
        raise TopologyError(f"{where}: interface {iface!r} must be 1-{IFNAME_MAX} characters, "
                            "no '/', not lo")
    return Endpoint(node, iface)


def parse(data: Any, path: str = "") -> Topology:
    """A topology from already-loaded YAML; TopologyError says what is wrong and where."""
    if not isinstance(data, Mapping) or "name" not in data or "topology" not in data:
        raise TopologyError("a topology needs 'name' and 'topology'")
    name = _check_name(data["name"], "lab name")
    topo = data["topology"] or {}
    raw_nodes = topo.get("nodes") or {}
    if not isinstance(raw_nodes, Mapping) or not raw_nodes:
        raise TopologyError("topology.nodes: at least one node")
    nodes = {str(n): _node(_check_name(str(n), "node name"), raw or {}, topo)
             for n, raw in raw_nodes.items()}
    for node in nodes.values():
        for dep in node.wait_for:
            if dep.node not in nodes:
                raise TopologyError(f"topology.nodes.{node.name}.stages: waits for unknown node "
                                    f"{dep.node!r}")
            if dep.stage == "healthy" and not nodes[dep.node].healthcheck:
                raise TopologyError(f"topology.nodes.{node.name}.stages: waits for {dep.node!r} "
                                    "to be healthy, but it has no healthcheck")
    links = []
    seen: set[Endpoint] = set()
    for i, raw in enumerate(topo.get("links") or []):
        where = f"topology.links[{i}]"
        eps = raw.get("endpoints") if isinstance(raw, Mapping) else None
        if raw.get("type") not in (None, "veth") or not isinstance(eps, list) or len(eps) != 2:
            raise TopologyError(f"{where}: only veth links with two endpoints are supported")
        a, b = (_endpoint(ep, nodes, where) for ep in eps)
        for ep in (a, b):
            if ep in seen:
                raise TopologyError(f"{where}: {ep} is used by two links")
            seen.add(ep)
        if nodes[a.node].is_bridge and nodes[b.node].is_bridge:
            raise TopologyError(f"{where}: a link between two bridges is not supported")
        links.append(Link(a, b))
    topology = Topology(name, nodes, tuple(links), path)
    topology.start_order()  # rejects wait-for cycles now, not halfway through a deploy
    return topology


def load(path: str | Path) -> Topology:
    """Read and parse a ``*.clab.yml`` file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path}: not YAML: {exc}") from None
    try:
        return parse(data, str(path.resolve()))
    except TopologyError as exc:
        raise TopologyError(f"{path}: {exc}") from None


def default_topology_path() -> Path:
    """``lab/egress.clab.yml`` of the source tree this package runs from."""
    return Path(__file__).resolve().parents[2] / "lab" / "egress.clab.yml"
