"""Start and stop throwaway etcd servers (Debian ``etcd-server``) for tests and labs.

:class:`EtcdServer` is one member (alone, or one of a cluster's);
:class:`EtcdCluster` is three (or any odd number of) members on loopback, each
with its own ports and temp data dir, so a test can kill a member, the leader,
or a majority, and restart them. :func:`member_status` asks any member who
leads, through etcd's JSON gateway (stdlib only, so it also runs inside a lab
namespace).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Sequence
from urllib.parse import urlsplit


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def endpoint_hosts(endpoints: str) -> list[str]:
    """The host of every URL in a comma-separated endpoint list (``VIPMGR_ETCD``)."""
    hosts = []
    for url in (e.strip() for e in endpoints.split(",")):
        host = urlsplit(url if "://" in url else f"http://{url}").hostname if url else None
        if host and host not in hosts:
            hosts.append(host)
    return hosts


def endpoint_addresses(endpoints: str) -> list[tuple[str, int]]:
    """(host, port) of every URL in a comma-separated endpoint list (port 2379 if none)."""
    found = []
    for url in (e.strip() for e in endpoints.split(",")):
        parts = urlsplit(url if "://" in url else f"http://{url}") if url else None
        if parts and parts.hostname and (parts.hostname, parts.port or 2379) not in found:
            found.append((parts.hostname, parts.port or 2379))
    return found


@dataclass(frozen=True)
class MemberStatus:
    """What one member says: its own raft id and the leader's (0: it knows no leader)."""

    member_id: int
    leader: int
    raft_term: int

    @property
    def is_leader(self) -> bool:
        return self.leader != 0 and self.leader == self.member_id


def member_status(url: str, timeout: float = 1.0) -> MemberStatus | None:
    """The member's status via ``POST /v3/maintenance/status``; None if it does not answer."""
    req = urllib.request.Request(url.rstrip("/") + "/v3/maintenance/status", data=b"{}",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = json.loads(resp.read())
    except (OSError, urllib.error.URLError, json.JSONDecodeError):
        return None
    return MemberStatus(int(data["header"]["member_id"]), int(data.get("leader", 0)),
                        int(data.get("raftTerm", 0)))


@dataclass
class EtcdServer:
    """One etcd member with a temp data dir; ``prefix_argv`` runs it inside a namespace.

    Alone by default; a cluster member gets its ``name`` and the ``initial_cluster``
    string (``name=peer-url,…``) naming every member.
    """

    host: str = "127.0.0.1"
    client_port: int = 0
    peer_port: int = 0
    prefix_argv: Sequence[str] = ()
    data_dir: str = ""
    scheme: str = "http"               # "https" with TLS flags in extra_args
    extra_args: Sequence[str] = ()
    name: str = "vipmgr-test"
    initial_cluster: str = ""          # empty: a cluster of this member alone
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    def allocate(self) -> "EtcdServer":
        """Pick the data dir and ports now (a cluster needs every peer URL before starting)."""
        if not self.data_dir:
            self.data_dir = tempfile.mkdtemp(prefix="vipmgr-etcd-")
        if not self.client_port:
            self.client_port = free_port(self.host)
        if not self.peer_port:
            self.peer_port = free_port(self.host)
        return self

    def start(self, timeout: float = 15.0) -> "EtcdServer":
        self.launch()
        self.wait_ready(timeout)
        return self

    def launch(self) -> None:
        """Start the process without waiting (cluster members must all start first)."""
        if shutil.which("etcd") is None:
            raise RuntimeError("etcd not found: install Debian's etcd-server (make system-deps)")
        self.allocate()
        argv = [*self.prefix_argv, "etcd", "--name", self.name,
                "--data-dir", self.data_dir,
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", self.peer_url,
                "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", self.initial_cluster or f"{self.name}={self.peer_url}",
                "--log-level", "error", "--logger", "zap", *self.extra_args]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"etcd exited with {self.proc.returncode}: {err[-2000:]}")
            try:
                with socket.create_connection((self.host, self.client_port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd did not listen on {self.url} within {timeout}s")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL (a crash: no goodbye to the peers or the clients)."""
        if self.proc is not None:
            self.signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        """Stop the server (keeps the data dir, so :meth:`start` again is a restart)."""
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def destroy(self) -> None:
        """Stop and remove the data dir."""
        self.stop()
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = ""


@dataclass
class EtcdCluster:
    """``size`` members on ``host``, free ports, throwaway dirs; use as a context manager
    (or call :meth:`destroy`) so every process and dir goes, whatever the test did."""

    size: int = 3
    host: str = "127.0.0.1"
    token: str = "vipmgr-test"
    members: list[EtcdServer] = field(default_factory=list)

    def start(self, timeout: float = 20.0) -> "EtcdCluster":
        if not self.members:
            self.members = [EtcdServer(host=self.host, name=f"m{i}").allocate()
                            for i in range(self.size)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        try:
            for m in self.members:
                m.initial_cluster = initial
                # pre-vote: a member back from a partition does not force an election
                m.extra_args = ("--initial-cluster-token", self.token, "--pre-vote")
                m.launch()
            for m in self.members:
                m.wait_ready(timeout)
            self.wait_leader(timeout)
        except BaseException:
            self.destroy()
            raise
        return self

    def __enter__(self) -> "EtcdCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.destroy()

    @property
    def urls(self) -> str:
        """Every member's client URL, comma-separated (``VIPMGR_ETCD``)."""
        return ",".join(m.url for m in self.members)

    def leader(self) -> int | None:
        """Index of the member the running members agree leads, or None."""
        running = [m.url for m in self.members if m.running]
        url = leader_of(",".join(running), timeout=0.5)
        return [m.url for m in self.members].index(url) if url else None

    def wait_leader(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.leader()
            if found is not None:
                return found
            time.sleep(0.05)
        raise RuntimeError(f"no etcd leader among {self.urls} within {timeout}s")

    def restart(self, index: int, timeout: float = 15.0) -> None:
        """Start a killed/stopped member again on its data dir (it rejoins its cluster)."""
        self.members[index].start(timeout)

    def destroy(self) -> None:
        for m in self.members:
            m.destroy()


def leader_of(endpoints: str, timeout: float = 1.0) -> str | None:
    """The client URL of the member the answering members agree leads, or None."""
    urls = [u.strip() for u in endpoints.split(",") if u.strip()]
    statuses = {url: member_status(url, timeout) for url in urls}
    ids = {st.member_id: url for url, st in statuses.items() if st is not None}
    leaders = {st.leader for st in statuses.values() if st is not None and st.leader}
    return ids.get(leaders.pop()) if len(leaders) == 1 else None


def main(argv: list[str] | None = None) -> int:
    """``python -m vipmgr.lab.etcd leader URL[,URL…]``: print the leader's URL (run it where
    the members are reachable, e.g. ``vipmgr lab exec etcd -- python3 -m vipmgr.lab.etcd``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m vipmgr.lab.etcd")
    sub = parser.add_subparsers(dest="command", required=True)
    p_leader = sub.add_parser("leader", help="the URL of the current leader")
    p_leader.add_argument("endpoints", help="comma-separated client URLs")
    args = parser.parse_args(argv)
    url = leader_of(args.endpoints)
    if url is None:
        print("no leader the answering members agree on")
        return 1
    print(url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
