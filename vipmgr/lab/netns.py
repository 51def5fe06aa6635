"""Network-namespace primitives for the lab and for every netns test.

Everything is created inside namespaces this module makes: veth pairs are
created with both ends placed straight into namespaces (``ip -n A link add …
peer … netns B``), and a "bridge" is a Linux bridge living in a namespace of
its own. Nothing is ever configured in the host namespace.

A :class:`NetnsLab` owns every namespace whose name starts with its prefix and
every process it started; :meth:`NetnsLab.close` removes all of them, and is
idempotent, so a fixture finalizer or ``lab down`` can call it unconditionally.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Sequence

IFNAME_MAX = 15


class NetnsError(RuntimeError):
    """A namespace operation failed; the message carries the command and stderr."""


def _run(argv: Sequence[str], *, check: bool = True, input: str | None = None,
         timeout: float = 30.0, env: dict[str, str] | None = None, cwd: str | None = None
         ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, input=input,
                          timeout=timeout, env=env, cwd=cwd)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def list_namespaces() -> list[str]:
    """Names of all named network namespaces on the host."""
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_supported() -> tuple[bool, str]:
    """Whether this process may create namespaces; the reason when it may not."""
    if os.geteuid() != 0:
        return False, "needs root to create network namespaces"
    probe = f"vipmgr-probe-{os.getpid()}"
    proc = _run(["ip", "netns", "add", probe], check=False)
    if proc.returncode != 0:
        return False, f"kernel refused 'ip netns add': {proc.stderr.strip()}"
    _run(["ip", "netns", "del", probe], check=False)
    return True, ""


@dataclass
class Netns:
    """One network namespace: run commands in it, start processes in it."""

    name: str
    lab: "NetnsLab"

    def argv(self, cmd: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]

    def run(self, cmd: Sequence[str], *, check: bool = True, input: str | None = None,
            timeout: float = 30.0, env: dict[str, str] | None = None, cwd: str | None = None
            ) -> subprocess.CompletedProcess[str]:
        """Run to completion; ``env`` is the whole environment (None: inherit ours)."""
        return _run(self.argv(cmd), check=check, input=input, timeout=timeout, env=env, cwd=cwd)

    def sh(self, script: str, *, check: bool = True, timeout: float = 30.0
           ) -> subprocess.CompletedProcess[str]:
        return self.run(["sh", "-c", script], check=check, timeout=timeout)

    def popen(self, cmd: Sequence[str], *, env: dict[str, str] | None = None,
              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, **kw) -> subprocess.Popen:
        """Start a long-running process inside the namespace; the lab stops it on close."""
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        proc = subprocess.Popen(self.argv(cmd), env=full_env, stdout=stdout, stderr=stderr,
                                start_new_session=True, **kw)
        self.lab.processes.append(proc)
        return proc

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(["ip", "-n", self.name, *args], check=check)

    def set_addr(self, ifname: str, cidr: str) -> None:
        self.ip("addr", "add", cidr, "dev", ifname)

    def up(self, ifname: str) -> None:
        self.ip("link", "set", ifname, "up")

    def pids(self) -> list[int]:
        out = _run(["ip", "netns", "pids", self.name], check=False).stdout
        return [int(p) for p in out.split()]


@dataclass
class NetnsLab:
    """A set of namespaces sharing a name prefix, torn down together."""

    prefix: str
    namespaces: dict[str, Netns] = field(default_factory=dict)
    processes: list[subprocess.Popen] = field(default_factory=list)

    def ns_name(self, short: str) -> str:
        return f"{self.prefix}{short}"

    def add(self, short: str) -> Netns:
        """Create namespace ``prefix+short`` with loopback up."""
        name = self.ns_name(short)
        _run(["ip", "netns", "add", name])
        ns = Netns(name, self)
        self.namespaces[short] = ns
        ns.up("lo")
        return ns

    def __getitem__(self, short: str) -> Netns:
        return self.namespaces[short]

    def add_bridge(self, short: str) -> Netns:
        """A bridge: a namespace holding Linux bridge ``br0`` (no STP, no forwarding delay).

        IPv6 is off in it, so the segment carries no link-local chatter of its own.
        """
        ns = self.add(short)
        ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1"])
        ns.ip("link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0")
        ns.up("br0")
        return ns

    def link(self, a: str, a_if: str, b: str, b_if: str) -> None:
        """A veth pair a:a_if <-> b:b_if, both ends up. A bridge end is enslaved to br0."""
        for ifname in (a_if, b_if):
            if len(ifname) > IFNAME_MAX:
                raise NetnsError(f"interface name {ifname!r} is longer than {IFNAME_MAX} characters")
        ns_a, ns_b = self.namespaces[a], self.namespaces[b]
        _run(["ip", "-n", ns_a.name, "link", "add", a_if, "type", "veth",
              "peer", "name", b_if, "netns", ns_b.name])
        for ns, ifname in ((ns_a, a_if), (ns_b, b_if)):
            if self._is_bridge(ns):
                ns.ip("link", "set", ifname, "master", "br0")
            ns.up(ifname)

    @staticmethod
    def _is_bridge(ns: Netns) -> bool:
        return ns.ip("link", "show", "br0", check=False).returncode == 0

    def stop_processes(self, timeout: float = 3.0) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGCONT)
                _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.processes:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                proc.wait(remaining)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.processes.clear()

    def close(self) -> None:
        """Stop every process and delete every namespace with this prefix. Idempotent."""
        self.stop_processes()
        cleanup_prefix(self.prefix)
        self.namespaces.clear()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def delete_namespace(name: str) -> None:
    """Kill every process inside namespace ``name``, then delete it. A missing name is fine."""
    out = _run(["ip", "netns", "pids", name], check=False).stdout
    for pid in (int(p) for p in out.split()):
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _run(["ip", "netns", "del", name], check=False)


def cleanup_prefix(prefix: str) -> list[str]:
    """Kill what runs in, and delete, every namespace whose name starts with ``prefix``."""
    removed = [name for name in list_namespaces() if name.startswith(prefix)]
    for name in removed:
        delete_namespace(name)
    return removed
