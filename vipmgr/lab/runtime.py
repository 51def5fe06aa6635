"""Deploy a containerlab topology on bare network namespaces, and drive it afterwards.

A running lab is described by its state file, ``<root>/<name>/state.json``
(root: ``$VIPMGR_LAB_STATE`` or ``/run/vipmgr-lab``): the namespace prefix,
the temp dir holding each node's working dir and log, the etcd URL, and per
node the pid of its main process. Every command (``lab down`` from another
shell, a test's finalizer, the benchmark) finds the lab through that file,
so a lab outlives the ``vipmgr lab up`` process that made it.

Deploy order: namespaces (a ``bridge`` node is a namespace holding Linux
bridge ``br0``) → sysctls → links → ``exec`` lines → main processes (``cmd``)
in wait-for order → healthchecks, each node's ``stages.healthy.exec`` hooks
run once right after its healthcheck first passes (the seed topology applies
its manifests that way, before the agents, which wait for etcd healthy, start). Addresses appear before ``cmd`` starts here;
under containerlab they may appear after, so services should bind wildcards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from vipmgr.lab.etcd import endpoint_addresses
from vipmgr.lab.netns import Netns, NetnsLab, delete_namespace, list_namespaces
from vipmgr.lab.topology import Topology

DEFAULT_STATE_ROOT = "/run/vipmgr-lab"
UP_TIMEOUT = 15.0
STOP_TIMEOUT = 3.0
FAULT_TABLE = "vipmgr_lab_fault"
FAULTS = ("crash", "freeze", "linkdown", "heartbeat-partition", "etcd-partition", "heal")
VRRP_PROTO = 112


class LabError(RuntimeError):
    """A lab operation failed; the message says what to do about it."""


def state_root() -> Path:
    return Path(os.environ.get("VIPMGR_LAB_STATE") or DEFAULT_STATE_ROOT)


def lab_prefix(name: str) -> str:
    """Namespace name prefix of lab ``name``: ``vl-<name>-``, so nodes are ``vl-egress-gw-a``."""
    return f"vl-{name}-"


def node_env(extra: dict[str, str]) -> dict[str, str]:
    """Our environment, this interpreter's bin dir first on PATH (``vipmgr``, ``python3``
    resolve to this install), then the node's ``env``."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "/usr/bin:/bin")])
    env.update(extra)
    return env


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a live pid; None if gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()
    if fields[0] in "ZX":
        return None
    return fields[0], int(fields[19])


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child, so it leaves no zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


@dataclass
class NodeState:
    name: str
    kind: str
    netns: str
    cmd: list[str]
    env: dict[str, str]
    healthcheck: list[str]
    pid: int | None = None
    start_time: int | None = None  # tells our process apart from a later one reusing the pid
    faults: list[str] = field(default_factory=list)


@dataclass
class LabState:
    name: str
    prefix: str
    topology: str
    tmpdir: str
    etcd_url: str | None
    created: float
    nodes: dict[str, NodeState]
    links: list[list[str]] = field(default_factory=list)  # [node, iface, node, iface]
    up_seconds: float | None = None

    @classmethod
    def from_json(cls, data: dict) -> "LabState":
        nodes = {k: NodeState(**v) for k, v in data.pop("nodes").items()}
        return cls(nodes=nodes, **data)


class Lab:
    """A deployed lab: each node's namespace, its main process, faults."""

    def __init__(self, state: LabState, root: Path | None = None) -> None:
        self.state = state
        self.root = root or state_root()
        self._netns = NetnsLab(state.prefix)

    # --- state ------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def state_dir(self) -> Path:
        return self.root / self.state.name

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_dir / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(self.state), indent=2))
        tmp.replace(self.state_dir / "state.json")

    @classmethod
    def load(cls, name: str, root: Path | None = None) -> "Lab":
        root = root or state_root()
        path = root / name / "state.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise LabError(f"lab {name!r} is not up (no {path})") from None
        return cls(LabState.from_json(data), root)

    def node(self, name: str) -> NodeState:
        try:
            return self.state.nodes[name]
        except KeyError:
            raise LabError(f"lab {self.name!r} has no node {name!r} "
                           f"(nodes: {', '.join(self.state.nodes)})") from None

    def netns(self, node: str) -> Netns:
        """The node's namespace, for ``run``/``sh``/``popen``/``ip`` (a bridge's holds ``br0``)."""
        return Netns(self.node(node).netns, self._netns)

    def env(self, node: str) -> dict[str, str]:
        """The environment a node's processes get: PATH to this install, ``env``, VIPMGR_ETCD."""
        extra = dict(self.node(node).env)
        if self.state.etcd_url:
            extra.setdefault("VIPMGR_ETCD", self.state.etcd_url)
        return node_env(extra)

    def workdir(self, node: str) -> Path:
        return Path(self.state.tmpdir) / node

    def log_path(self, node: str) -> Path:
        return Path(self.state.tmpdir) / f"{node}.log"

    # --- commands and processes ---------------------------------------------------

    def exec(self, node: str, argv: Sequence[str], *, check: bool = False,
             timeout: float = 30.0, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to completion in the node's namespace and environment, in ``cwd``
        (default: the node's workdir)."""
        return self.netns(node).run(argv, check=check, timeout=timeout, env=self.env(node),
                                    cwd=cwd or str(self.workdir(node)))

    def process_state(self, node: str) -> str:
        """``none`` (no main process), ``running``, ``frozen`` or ``exited``."""
        st = self.node(node)
        if st.pid is None:
            return "none"
        stat = _proc_stat(st.pid)
        if stat is None or stat[1] != st.start_time:
            _reap(st.pid)
            return "exited"
        return "frozen" if stat[0] in "Tt" else "running"

    def start(self, node: str, cmd: Sequence[str] | None = None) -> int:
        """Start the node's main process (``cmd`` replaces the topology's) and return its pid.

        This is how agents join a lab: ``lab.start("gw-a", ["vipmgr", "agent", …])``;
        the process runs in the node's namespace and workdir, logs to
        ``<tmpdir>/<node>.log``, and crash/freeze faults and ``lab down`` find it.
        """
        st = self.node(node)
        if self.process_state(node) in ("running", "frozen"):
            raise LabError(f"{node}: main process {st.pid} is still running")
        if cmd is not None:
            st.cmd = list(cmd)
        if not st.cmd:
            raise LabError(f"{node}: no cmd to start")
        with open(self.log_path(node), "ab") as log:
            proc = subprocess.Popen(self.netns(node).argv(st.cmd), env=self.env(node),
                                    cwd=self.workdir(node), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        stat = _proc_stat(proc.pid)
        st.pid, st.start_time = proc.pid, stat[1] if stat else None
        self.save()
        return proc.pid

    def _signal(self, node: str, sig: int) -> bool:
        """Signal the main process's group (it runs in a session of its own); False if none."""
        if self.process_state(node) not in ("running", "frozen"):
            return False
        try:
            os.killpg(self.node(node).pid, sig)
        except ProcessLookupError:
            return False
        return True

    def stop(self, node: str, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the main process, SIGKILL it after ``timeout``; a frozen one is thawed first."""
        self.stop_all([node], timeout)

    def stop_all(self, nodes: Sequence[str] | None = None, timeout: float = STOP_TIMEOUT) -> None:
        nodes = list(self.state.nodes) if nodes is None else nodes
        live = [n for n in nodes if self._signal(n, signal.SIGCONT)]
        for n in live:
            self._signal(n, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while live and time.monotonic() < deadline:
            live = [n for n in live if self.process_state(n) != "exited"]
            time.sleep(0.02)
        for n in live:
            self._signal(n, signal.SIGKILL)
        for n in nodes:
            st = self.node(n)
            if st.pid is not None:
                _reap(st.pid)

    def wait_healthy(self, node: str, deadline: float) -> None:
        """Run the node's healthcheck until it passes; LabError at the deadline or if cmd died."""
        st = self.node(node)
        if not st.healthcheck:
            return
        while True:
            try:
                probe = self.exec(node, st.healthcheck, timeout=max(0.5, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                probe = None
            if probe is not None and probe.returncode == 0:
                return
            if st.cmd and self.process_state(node) == "exited":
                raise LabError(f"{node}: main process exited; log {self.log_path(node)}:\n"
                               f"{self.log_tail(node)}")
            if time.monotonic() >= deadline:
                why = (probe.stderr or probe.stdout).strip() if probe else "timed out"
                raise LabError(f"{node}: healthcheck {' '.join(st.healthcheck)} still failing "
                               f"at the deadline: {why}")
            time.sleep(0.1)

    def log_tail(self, node: str, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path(node).read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    # --- faults -------------------------------------------------------------------

    def fault(self, node: str, kind: str, iface: str = "eth1") -> None:
        """Inject one fault into a node, or ``heal`` every fault it has.

        crash: SIGKILL the main process; freeze: SIGSTOP it; linkdown: the far
        end of ``iface``'s link goes down, so the node loses carrier but keeps
        its addresses and routes (a pulled cable); heartbeat-partition: drop IP protocol 112 in and out;
        etcd-partition: drop traffic to and from every etcd member's client port (the node
        stays reachable from the etcd host otherwise: the lab's Prometheus runs there). Packet drops
        are one nft table inside the node's namespace, so heal removes them whole.
        """
        st = self.node(node)
        if kind == "heal":
            self._heal(node)
            return
        if kind in ("crash", "freeze"):
            sig = signal.SIGKILL if kind == "crash" else signal.SIGSTOP
            if not self._signal(node, sig):
                raise LabError(f"{node}: no running main process to {kind}")
            if kind == "crash":
                deadline = time.monotonic() + STOP_TIMEOUT
                while self.process_state(node) != "exited" and time.monotonic() < deadline:
                    time.sleep(0.01)
        elif kind == "linkdown":
            peer, peer_if = self.peer(node, iface)
            self.netns(peer).ip("link", "set", peer_if, "down")
            kind = f"linkdown:{iface}"
        elif kind == "heartbeat-partition":
            self._drop(node, [f"ip protocol {VRRP_PROTO} drop"], [f"ip protocol {VRRP_PROTO} drop"])
        elif kind == "etcd-partition":  # from every etcd member's client port, nothing else
            members = endpoint_addresses(self.state.etcd_url or "")
            if not members:
                raise LabError(f"lab {self.name!r} has no etcd URL (VIPMGR_ETCD in the topology)")
            self._drop(node, [f"ip saddr {h} tcp sport {p} drop" for h, p in members],
                       [f"ip daddr {h} tcp dport {p} drop" for h, p in members])
        else:
            raise LabError(f"unknown fault {kind!r} (one of {', '.join(FAULTS)})")
        if kind not in st.faults:
            st.faults.append(kind)
        self.save()

    def peer(self, node: str, iface: str) -> tuple[str, str]:
        """The other end (node, interface) of the link on ``node:iface``."""
        for a, a_if, b, b_if in self.state.links:
            if (a, a_if) == (node, iface):
                return b, b_if
            if (b, b_if) == (node, iface):
                return a, a_if
        raise LabError(f"{node}:{iface} is not an endpoint of any link in lab {self.name!r}")

    def _drop(self, node: str, inbound: list[str], outbound: list[str]) -> None:
        script = [f"table inet {FAULT_TABLE} {{",
                  "  chain input { type filter hook input priority -300; policy accept; }",
                  "  chain output { type filter hook output priority -300; policy accept; }",
                  "}"]
        script += [f"add rule inet {FAULT_TABLE} input {rule}" for rule in inbound]
        script += [f"add rule inet {FAULT_TABLE} output {rule}" for rule in outbound]
        self.netns(node).run(["nft", "-f", "-"], input="\n".join(script) + "\n")

    def _heal(self, node: str) -> None:
        st = self.node(node)
        ns = self.netns(node)
        self._signal(node, signal.SIGCONT)
        for fault in st.faults:
            if fault.startswith("linkdown:"):
                peer, peer_if = self.peer(node, fault.split(":", 1)[1])
                self.netns(peer).up(peer_if)
        ns.run(["nft", "delete", "table", "inet", FAULT_TABLE], check=False)
        st.faults.clear()
        self.save()
        if st.cmd and self.process_state(node) == "exited":
            self.start(node)

    # --- inspection -----------------------------------------------------------------

    def curl(self, node: str, dst: str = "203.0.113.10", port: int = 80,
             timeout: float = 2.0) -> str:
        """The source address the echo service at ``dst`` sees for a request from ``node``."""
        url = f"http://{dst}:{port}/"
        out = self.exec(node, ["python3", "-m", "vipmgr.lab.echo", "get", url,
                               "--timeout", str(timeout)], timeout=timeout + 5)
        if out.returncode != 0:
            raise LabError(f"{node}: {out.stderr.strip() or out.stdout.strip()}")
        return out.stdout.strip()

    def addresses(self, node: str) -> dict[str, list[str]]:
        """Interface -> IPv4 CIDRs inside the node (loopback's 127.0.0.1 left out)."""
        out = self.netns(node).ip("-j", "-4", "addr", "show", check=False).stdout
        result: dict[str, list[str]] = {}
        for link in json.loads(out or "[]"):
            cidrs = [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                     if a.get("local") != "127.0.0.1"]
            if cidrs:
                result[link["ifname"]] = cidrs
        return result

    def status(self) -> dict:
        """Everything ``lab status`` shows, as data."""
        present = set(list_namespaces())
        nodes = {}
        for name, st in self.state.nodes.items():
            nodes[name] = {
                "kind": st.kind, "netns": st.netns, "present": st.netns in present,
                "process": self.process_state(name), "pid": st.pid,
                "cmd": " ".join(st.cmd), "faults": list(st.faults),
                "addresses": self.addresses(name) if st.kind != "bridge" else {},
            }
        return {"name": self.name, "prefix": self.state.prefix,
                "topology": self.state.topology, "tmpdir": self.state.tmpdir,
                "etcd": self.state.etcd_url, "up_seconds": self.state.up_seconds,
                "state_dir": str(self.state_dir), "nodes": nodes}


def _etcd_url(topology: Topology) -> str | None:
    for node in topology.nodes.values():
        if node.env.get("VIPMGR_ETCD"):
            return node.env["VIPMGR_ETCD"]
    return None


def running_labs(root: Path | None = None) -> list[str]:
    root = root or state_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "state.json").is_file())


def deploy(topology: Topology, *, root: Path | None = None, timeout: float = UP_TIMEOUT,
           progress: Callable[[str], None] | None = None) -> Lab:
    """Build the topology in namespaces and start its processes; a ready :class:`Lab`.

    Ready means every namespace, link and exec line is in place, every ``cmd``
    runs and every healthcheck passed, within ``timeout`` seconds. On any
    failure everything made so far is torn down before the error propagates.
    """
    root = root or state_root()
    say = progress or (lambda _msg: None)
    if (root / topology.name / "state.json").exists():
        raise LabError(f"lab {topology.name!r} is already up: 'vipmgr lab down "
                       f"--name {topology.name}' first")
    destroy(topology.name, root)  # leftovers of a lab whose state was lost (a reboot of /run)
    started = time.monotonic()
    deadline = started + timeout
    prefix = lab_prefix(topology.name)
    (root / topology.name).mkdir(parents=True, exist_ok=True)
    lab = Lab(LabState(
        name=topology.name, prefix=prefix, topology=topology.path,
        tmpdir=tempfile.mkdtemp(prefix=f"vipmgr-lab-{topology.name}-"),
        etcd_url=_etcd_url(topology), created=time.time(),
        nodes={n.name: NodeState(n.name, n.kind, prefix + n.name, list(n.cmd), dict(n.env),
                                 list(n.healthcheck))
               for n in topology.nodes.values()},
        links=[[l.a.node, l.a.iface, l.b.node, l.b.iface] for l in topology.links]), root)
    lab.save()
    healthy: set[str] = set()

    def become_healthy(name: str) -> None:
        """Wait for the node's healthcheck, then run its healthy-stage hooks (once)."""
        if name in healthy:
            return
        lab.wait_healthy(name, deadline)
        for hook in topology.nodes[name].stage_exec:
            say(f"{name}: {' '.join(hook.argv)}")
            out = lab.exec(name, hook.argv, cwd=str(Path(topology.path).parent or "."),
                           timeout=max(1.0, deadline - time.monotonic()))
            if out.returncode != 0:
                raise LabError(f"{name}: stage {hook.stage} exec {' '.join(hook.argv)!r} failed "
                               f"(exit {out.returncode}): {(out.stderr or out.stdout).strip()}")
        healthy.add(name)

    try:
        _build(lab, topology, say)
        say("starting processes")
        for name in topology.start_order():
            node = topology.nodes[name]
            for dep in node.wait_for:
                if dep.stage == "healthy":
                    become_healthy(dep.node)
            if node.cmd:
                lab.start(name)
        say("waiting for healthchecks")
        for name in topology.nodes:
            become_healthy(name)
    except BaseException:
        destroy(topology.name, root)
        raise
    lab.state.up_seconds = round(time.monotonic() - started, 3)
    lab.save()
    return lab


def _build(lab: Lab, topology: Topology, say: Callable[[str], None]) -> None:
    nl = lab._netns
    say(f"creating {len(topology.nodes)} namespaces ({lab.state.prefix}*)")
    for node in topology.nodes.values():
        lab.workdir(node.name).mkdir()
        if node.is_bridge:
            nl.add_bridge(node.name)
        else:
            nl.add(node.name)
        if node.sysctls:
            nl[node.name].run(["sysctl", "-q", "-w",
                               *(f"{k}={v}" for k, v in node.sysctls.items())])
    say(f"creating {len(topology.links)} links")
    for link in topology.links:
        nl.link(link.a.node, link.a.iface, link.b.node, link.b.iface)
    say("running exec lines")
    for node in topology.nodes.values():
        for argv in node.exec:
            out = lab.exec(node.name, argv)
            if out.returncode != 0:
                raise LabError(f"{node.name}: exec {' '.join(argv)!r} failed: "
                               f"{(out.stderr or out.stdout).strip()}")


def destroy(name: str, root: Path | None = None) -> list[str]:
    """Stop every process, delete every namespace and the temp and state dirs of lab ``name``.

    Idempotent. Without a state file (never up, or already down) it still
    removes namespaces named with the lab's prefix, except those another
    running lab owns. Returns the namespaces it deleted.
    """
    root = root or state_root()
    try:
        lab = Lab.load(name, root)
    except LabError:
        lab = None
    if lab is not None:
        lab.stop_all()
        prefix, tmpdir = lab.state.prefix, lab.state.tmpdir
        owned = {st.netns for st in lab.state.nodes.values()}
    else:
        prefix, tmpdir, owned = lab_prefix(name), "", set()
    others: set[str] = set()
    for other in running_labs(root):
        if other != name:
            others |= {st.netns for st in Lab.load(other, root).state.nodes.values()}
    doomed = [ns for ns in list_namespaces()
              if ns in owned or (ns.startswith(prefix) and ns not in others)]
    for ns in doomed:
        delete_namespace(ns)
    if tmpdir:
        shutil.rmtree(tmpdir, ignore_errors=True)
    shutil.rmtree(root / name, ignore_errors=True)
    try:
        root.rmdir()  # leave /run as we found it when this was the last lab
    except OSError:
        pass
    return doomed
