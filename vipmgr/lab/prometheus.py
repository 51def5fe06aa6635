"""A real Prometheus inside a lab: scrapes every agent, evaluates the alert rules.

Debian's ``prometheus`` binary runs in one node's namespace (``etcd`` by
default: it sits on the internal segment every agent's ``/metrics`` listens
on) with a throwaway data dir in that node's workdir, listening on a lab
address only. It is a process of the node's namespace, so ``lab down`` kills
it with the namespace and removes the data dir with the lab's temp dir;
:meth:`LabPrometheus.stop` ends it earlier.

Queries run inside the namespace too (``python3 -m vipmgr.lab.echo get``):
nothing of the lab is reachable from the host, and nothing here changes that.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any, Sequence

import yaml

from vipmgr.lab.runtime import Lab, LabError

DEFAULT_NODE = "etcd"
PORT = 9090
METRICS_PORT = 9750
READY_TIMEOUT = 20.0


def agent_targets(lab: Lab, nodes: Sequence[str], iface: str = "eth0",
                  port: int = METRICS_PORT) -> list[str]:
    """``address:port`` of each node's ``/metrics`` on the internal segment."""
    targets = []
    for node in nodes:
        cidrs = lab.addresses(node).get(iface) or []
        if not cidrs:
            raise LabError(f"{node} has no address on {iface} to scrape")
        targets.append(f"{cidrs[0].split('/')[0]}:{port}")
    return targets


def shortened_rules(source: Path, hold: str = "2s") -> str:
    """The alert rules with every ``for:`` set to ``hold``: the same expressions, so a test
    sees them fire within seconds instead of minutes."""
    doc = yaml.safe_load(source.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "alert" in rule and "for" in rule:
                rule["for"] = hold
    return yaml.safe_dump(doc, sort_keys=False)


class LabPrometheus:
    """One Prometheus process in ``node``'s namespace of a running lab."""

    def __init__(self, lab: Lab, targets: Sequence[str], *, rules: Sequence[Path] = (),
                 node: str = DEFAULT_NODE, scrape_interval: float = 1.0,
                 evaluation_interval: float = 1.0) -> None:
        self.lab, self.node, self.targets = lab, node, list(targets)
        self.rules = [Path(r) for r in rules]
        self.scrape_interval, self.evaluation_interval = scrape_interval, evaluation_interval
        addrs = lab.addresses(node).get("eth0") or []
        if not addrs:
            raise LabError(f"{node} has no eth0 address for Prometheus to listen on")
        self.address = f"{addrs[0].split('/')[0]}:{PORT}"
        self.dir = lab.workdir(node) / "prometheus"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": f"{self.scrape_interval:g}s",
                       "scrape_timeout": f"{min(self.scrape_interval, 1.0):g}s",
                       "evaluation_interval": f"{self.evaluation_interval:g}s"},
            "rule_files": [str(r) for r in self.rules],
            "scrape_configs": [{"job_name": "vipmgr",
                                "static_configs": [{"targets": self.targets}]}],
        }

    def start(self, timeout: float = READY_TIMEOUT) -> "LabPrometheus":
        if shutil.which("prometheus") is None:
            raise LabError("prometheus is not installed (Debian package prometheus)")
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "prometheus.yml"
        conf.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        log = open(self.dir / "prometheus.log", "ab")
        try:
            self.proc = subprocess.Popen(
                self.lab.netns(self.node).argv([
                    "prometheus", f"--config.file={conf}",
                    f"--storage.tsdb.path={self.dir / 'data'}",
                    f"--web.listen-address={self.address}", "--log.level=warn",
                    "--storage.tsdb.retention.time=1h"]),
                cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise LabError(f"prometheus exited ({self.proc.returncode}): {self.log_tail()}")
            if self._get("/-/ready") is not None:
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise LabError(f"prometheus not ready within {timeout:g}s: {self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def log_tail(self, lines: int = 10) -> str:
        try:
            return "\n".join((self.dir / "prometheus.log").read_text().splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def _get(self, path: str) -> str | None:
        out = self.lab.exec(self.node, ["python3", "-m", "vipmgr.lab.echo", "get",
                                        self.url + path, "--timeout", "2"], timeout=10)
        return out.stdout if out.returncode == 0 else None

    def api(self, path: str, **params: str) -> Any:
        """``/api/v1/<path>``'s ``data``; LabError when Prometheus says error."""
        body = self._get(f"/api/v1/{path}?{urllib.parse.urlencode(params)}")
        if body is None:
            raise LabError(f"prometheus at {self.url} did not answer /api/v1/{path}")
        doc = json.loads(body)
        if doc.get("status") != "success":
            raise LabError(f"prometheus /api/v1/{path} {params}: {doc.get('error')}")
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        return self.api("query", query=expr)["result"]

    def firing(self) -> dict[str, list[dict[str, str]]]:
        """Alert name -> the label sets of its firing alerts."""
        out: dict[str, list[dict[str, str]]] = {}
        for alert in self.api("alerts")["alerts"]:
            if alert["state"] == "firing":
                out.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
        return out

    def targets_up(self) -> int:
        return sum(1 for t in self.api("targets")["activeTargets"] if t["health"] == "up")
