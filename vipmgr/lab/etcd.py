"""Start and stop a throwaway etcd server (Debian ``etcd-server``) for tests and labs."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Sequence


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class EtcdServer:
    """One etcd member with a temp data dir; ``prefix_argv`` runs it inside a namespace."""

    host: str = "127.0.0.1"
    client_port: int = 0
    peer_port: int = 0
    prefix_argv: Sequence[str] = ()
    data_dir: str = ""
    scheme: str = "http"               # "https" with TLS flags in extra_args
    extra_args: Sequence[str] = ()
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.client_port}"

    def start(self, timeout: float = 15.0) -> "EtcdServer":
        if shutil.which("etcd") is None:
            raise RuntimeError("etcd not found: install Debian's etcd-server (make system-deps)")
        if not self.data_dir:
            self.data_dir = tempfile.mkdtemp(prefix="vipmgr-etcd-")
        if not self.client_port:
            self.client_port = free_port()
        if not self.peer_port:
            self.peer_port = free_port()
        peer = f"http://{self.host}:{self.peer_port}"
        argv = [*self.prefix_argv, "etcd", "--name", "vipmgr-test",
                "--data-dir", self.data_dir,
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"vipmgr-test={peer}",
                "--log-level", "error", "--logger", "zap", *self.extra_args]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
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

    def stop(self) -> None:
        """Stop the server (keeps the data dir, so :meth:`start` again is a restart)."""
        if self.proc is not None and self.proc.poll() is None:
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
