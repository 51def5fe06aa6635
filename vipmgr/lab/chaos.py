"""``vipmgr lab chaos``: a reproducible random schedule of faults against the real agents,
checkers running the whole time, and a Jepsen-style report (docs/chaos.md).

One run deploys its own lab (the 3-member etcd topology unless ``--topology``),
waits for the seed scenario to serve, then plays the schedule that ``--seed``
and ``--minutes`` determine: one fault at a time, held a few seconds, healed,
then calm. Meanwhile the benchmark's instruments run back to back in windows:
a paced UDP stream from vm-backend to the echo service (whose L2 log says
which node delivered each datagram and from which source) and an ARP prober
asking who holds the VIP. At the end the logs are checked against the
schedule (:func:`check`, pure):

- **dual owner**: an ARP probe answered by two MACs (two nodes held the VIP);
- **wrong source**: a selected datagram that left with another source (a leak);
- **unavailable**: a whole second without a datagram from the VIP while the
  traffic was owed: some gateway was eligible and reached both etcd and the
  heartbeat network, since at least the failover bound (the bound is granted
  after every fault that may move the role; none after a *benign* fault, which
  must not disturb the traffic: a standby's trouble, an etcd member or leader
  lost, 20 % heartbeat loss, an etcd outage under ``hold``);
- **no active after heal**: no datagram from the VIP within the bound after a heal;
- **role change while calm**: the delivering node changed while only benign
  faults (or none) were in force, past the bound after the last other one —
  unless an agent logged a planned move to that node just before (a rebalance
  once the placement's first choice has been eligible for the hold-down: a
  graceful handover, reported as a planned move, still checked for dual owners,
  leaks and gaps like any other second).

Every anomaly is reported with its time and the agents' log lines around it;
the exit status is 1 if there is any.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import click

from vipmgr.config.timers import Timers
from vipmgr.lab.analysis import Sent
from vipmgr.lab.bench import (
    ECHO_NODE, GATEWAY_NAME, GATEWAYS, PY, SENDER, VIP, FailoverBench, Vipmgr,
)
from vipmgr.lab.echo import UdpRecord, read_udp_log
from vipmgr.lab.etcd import endpoint_hosts
from vipmgr.lab.probe import ArpAnswer, read_arp_log
from vipmgr.lab.runtime import Lab, LabError, deploy, destroy, running_labs
from vipmgr.lab.topology import load

ETCD3_TOPOLOGY = Path(__file__).resolve().parents[2] / "lab" / "egress-etcd3.clab.yml"
BOUND = Timers().liveness_bound  # an active (and traffic) within this after a fault or heal
FENCE_MS = Timers().fence_deadline * 1000
RATE = 200.0          # datagrams per second of the stream
WINDOW = 20.0         # seconds per instrument run (the instruments stop themselves at 30 s)
ARP_INTERVAL = 0.02
HOLD = (3.0, 8.0)     # seconds a fault is held
CALM = (2.0, 5.0)     # seconds of calm after the bound that follows a heal
WARMUP = 3.0
LOSS_PERCENT = 20
VRRP = "ip protocol 112"
LOG_BEFORE, LOG_AFTER = 2.0, 1.0  # seconds of agent log shown around an anomaly
LOG_LINES = 12
PAUSE = re.compile(r": paused (\d+) ms")
PLANNED = re.compile(r" active -> releasing \(\w+: rebalance to ([\w.-]+)\)")
PLANNED_GRACE = 1.0   # s from a logged planned move to the traffic on the new node
MAX_MINUTES = 60.0
STABLE_TIMEOUT = 60.0  # before the schedule starts: one active, the VIP on it, traffic flowing

Say = Callable[[str], None]


@dataclass(frozen=True)
class FaultKind:
    """One kind of fault: whom it hits, what it takes away, whether the role may move."""

    name: str
    target: str          # active | standby | gateways | member | leader | majority
    benign: bool         # the role must not move and the traffic must not stop
    cuts_target: bool    # the target node is no longer an eligible, connected gateway
    instant: bool = False
    members: int = 1     # needs at least this many etcd members
    what: str = ""


KINDS: dict[str, FaultKind] = {k.name: k for k in (
    FaultKind("crash", "active", False, True, what="SIGKILL the active's agent; heal restarts it"),
    FaultKind("crash-standby", "standby", True, True, what="SIGKILL a standby's agent"),
    FaultKind("freeze", "active", False, True, what="SIGSTOP the active's agent; heal SIGCONT"),
    FaultKind("freeze-standby", "standby", True, True, what="SIGSTOP a standby's agent"),
    FaultKind("linkdown", "active", False, True, what="the active loses carrier on eth1"),
    FaultKind("linkdown-standby", "standby", True, True, what="a standby loses carrier"),
    FaultKind("heartbeat-partition", "active", False, True,
              what="the active drops VRRP in and out"),
    FaultKind("heartbeat-partition-in", "active", False, True,
              what="the active hears nobody (VRRP in dropped); the others hear it"),
    FaultKind("heartbeat-partition-out", "active", False, True,
              what="nobody hears the active (VRRP out dropped); it hears them"),
    FaultKind("etcd-partition", "active", False, True,
              what="the active drops traffic to and from every etcd member"),
    FaultKind("etcd-partition-standby", "standby", True, True,
              what="a standby drops traffic to and from every etcd member"),
    FaultKind("etcd-member-kill", "member", True, False, members=3,
              what="SIGKILL an etcd member that does not lead; heal restarts it"),
    FaultKind("etcd-leader-kill", "leader", True, False, members=3,
              what="SIGKILL the etcd leader; heal restarts it"),
    FaultKind("etcd-member-partition", "member", True, False, members=3,
              what="an etcd member drops everything on eth0"),
    FaultKind("etcd-outage", "majority", True, False,
              what="SIGKILL a majority of etcd (the member, with one): nobody reaches etcd"),
    FaultKind("heartbeat-loss", "gateways", True, False,
              what=f"every gateway drops {LOSS_PERCENT} % of the VRRP it receives"),
    FaultKind("cordon", "active", False, True, what="vipmgr cordon the active; heal uncordons"),
    FaultKind("sigterm", "active", False, True,
              what="SIGTERM the active's agent (it releases); heal starts it"),
    FaultKind("switchover", "active", False, False, instant=True,
              what="vipmgr switchover the gateway to the best standby"),
)}


@dataclass(frozen=True)
class Step:
    """One scheduled fault: due ``at`` seconds from the start, held ``hold`` seconds, then
    ``calm`` seconds without a fault; ``pick`` (0..1) chooses among several possible
    targets, reproducibly. A slow injection or heal delays the steps after it (the calm
    is kept); the report has the times as they ran."""

    at: float
    kind: str
    hold: float
    calm: float
    pick: float


def make_schedule(seed: int, minutes: float, kinds: Sequence[str],
                  hold: float | None = None) -> list[Step]:
    """The same steps for the same seed, minutes, kinds and ``hold`` (seconds each fault is
    held; None: random within HOLD)."""
    rng = random.Random(seed)
    total = minutes * 60
    steps: list[Step] = []
    t = WARMUP
    while True:
        kind = KINDS[rng.choice(list(kinds))]
        held = 0.0 if kind.instant else round(rng.uniform(*HOLD), 1) if hold is None else hold
        calm = round(BOUND + rng.uniform(*CALM), 1)
        if t + held + calm > total:
            return steps
        steps.append(Step(round(t, 1), kind.name, held, calm, round(rng.random(), 3)))
        t += held + calm


@dataclass
class Episode:
    """A step as it ran, on which nodes; CLOCK_MONOTONIC when its injection began and when
    its heal had ended (so the fault is in force, at most, over [injected, healed))."""

    step: Step
    nodes: list[str]
    injected: float
    healed: float | None = None
    error: str = ""

    @property
    def kind(self) -> FaultKind:
        return KINDS[self.step.kind]

    @property
    def end(self) -> float:
        return self.injected if self.healed is None else self.healed


@dataclass
class Anomaly:
    at: float            # CLOCK_MONOTONIC
    check: str
    detail: str
    until: float | None = None
    logs: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Observations:
    """What the instruments recorded, and the run's clock origin."""

    start: float
    end: float
    sent: list[Sent]
    l2: list[UdpRecord]
    arp: list[list[ArpAnswer]]   # one list per prober window (probe numbers restart)
    macs: dict[str, str]         # MAC -> node


# --- checking (pure) --------------------------------------------------------------------


def _spans(points: Iterable[float], join: float) -> list[tuple[float, float, int]]:
    """Sorted times grouped into (first, last, count) runs whose gaps are <= ``join``."""
    out: list[tuple[float, float, int]] = []
    for t in sorted(points):
        if out and t - out[-1][1] <= join:
            out[-1] = (out[-1][0], t, out[-1][2] + 1)
        else:
            out.append((t, t, 1))
    return out


def _cut_gateways(episodes: Sequence[Episode], t: float) -> set[str] | None:
    """Gateways a fault in force at ``t`` cuts off; None when every gateway is (no etcd)."""
    cut: set[str] = set()
    for ep in episodes:
        if ep.injected <= t < ep.end:
            if ep.kind.target == "majority":
                return None
            if ep.kind.cuts_target:
                cut.update(ep.nodes)
    return cut


def _owed(episodes: Sequence[Episode], lo: float, hi: float, gateways: Sequence[str],
          bound: float) -> bool:
    """Whether traffic is owed over all of [lo, hi): since ``lo - bound`` some gateway was
    eligible and reached etcd and its peers at every moment, and no fault that may move
    the role began or ended (a benign fault grants no such grace: it must not disturb)."""
    since = lo - bound
    edges = {since} | {t for ep in episodes for t in (ep.injected, ep.end) if since < t < hi}
    for t in edges:
        cut = _cut_gateways(episodes, t)
        if cut is None or not set(gateways) - cut:
            return False
    return not any(since <= t < hi for ep in episodes if not ep.kind.benign
                   for t in (ep.injected, ep.end))


def _calm(episodes: Sequence[Episode], t: float, bound: float) -> bool:
    """No fault that may move the role in force at ``t``, nor ended within ``bound`` before."""
    return not any(ep.injected <= t < ep.end + bound for ep in episodes if not ep.kind.benign)


def check(obs: Observations, episodes: Sequence[Episode], gateways: Sequence[str] = GATEWAYS,
          vip: str = VIP, bound: float = BOUND,
          planned: Sequence[tuple[float, str]] = ()) -> tuple[list[Anomaly], dict]:
    """Every anomaly, and the summary figures, from what was observed and what was done;
    ``planned``: (time, target node) of every planned move an agent logged."""
    anomalies: list[Anomaly] = []
    mine = [r for r in obs.l2 if any(r.seq in s for s in obs.sent)]
    good = sorted(r.arrival for r in mine if r.source == vip)

    # two owners: an ARP probe answered by two MACs
    dual_times = []
    for window in obs.arp:
        by_probe: dict[int, list[ArpAnswer]] = defaultdict(list)
        for a in window:
            by_probe[a.probe].append(a)
        dual_times += [min(a.arrival for a in answers) for answers in by_probe.values()
                       if len({a.mac for a in answers}) > 1]
    for first, last, n in _spans(dual_times, 0.5):
        anomalies.append(Anomaly(first, "dual-owner", f"{n} ARP probes for {vip} answered by "
                                 "two MACs", last))

    # leaks: selected traffic that left with another source
    wrong = [r for r in mine if r.source != vip]
    for first, last, n in _spans((r.arrival for r in wrong), 1.0):
        sources = sorted({f"{r.source} via {obs.macs.get(r.mac, r.mac)}" for r in wrong
                          if first <= r.arrival <= last})
        anomalies.append(Anomaly(first, "wrong-source", f"{n} datagrams arrived from "
                                 f"{', '.join(sources)} instead of {vip}", last))

    # availability: whole seconds without a good datagram while traffic was owed
    covered = [(s.start, s.end) for s in obs.sent]
    seconds = int(obs.end - obs.start)
    owed = missing = 0
    idx = 0
    dark: list[float] = []
    for k in range(seconds):
        lo, hi = obs.start + k, obs.start + k + 1
        if not any(a <= lo and hi <= b + 1.0 / RATE for a, b in covered):
            continue  # the stream was between windows: no evidence either way
        if not _owed(episodes, lo, hi, gateways, bound):
            continue
        owed += 1
        while idx < len(good) and good[idx] < lo:
            idx += 1
        if idx >= len(good) or good[idx] >= hi:
            missing += 1
            dark.append(lo)
    for first, last, n in _spans(dark, 1.0):
        anomalies.append(Anomaly(first, "unavailable", f"{n} s without a datagram from {vip} "
                                 "while an eligible gateway reached etcd and its peers",
                                 last + 1))

    # liveness: a datagram from the VIP within the bound after every heal
    heals = 0
    for ep in episodes:
        healed = ep.healed if not ep.kind.instant else ep.injected
        if healed is None or healed + bound > obs.end:
            continue
        if not _owed(episodes, healed + bound, healed + bound + 1e-3, gateways, 0.0):
            continue
        heals += 1
        if not any(healed <= t <= healed + bound for t in good):
            anomalies.append(Anomaly(healed, "no-active-after-heal",
                                     f"no datagram from {vip} within {bound:.1f} s after "
                                     f"{ep.step.kind} on {','.join(ep.nodes)} was healed"))

    # role changes: the node delivering the VIP's traffic changed
    changes = []
    prev = None
    for r in sorted((r for r in mine if r.source == vip), key=lambda r: r.arrival):
        node = obs.macs.get(r.mac, r.mac)
        if prev is not None and node != prev:
            changes.append((r.arrival, prev, node))
        prev = node
    planned_moves = 0
    for t, a, b in changes:
        if any(at <= t <= at + PLANNED_GRACE and to == b for at, to in planned):
            planned_moves += 1
            continue
        if _calm(episodes, t, bound):
            during = [ep.step.kind for ep in episodes if ep.injected <= t < ep.end]
            anomalies.append(Anomaly(t, "role-change-while-calm",
                                     f"{a} -> {b}" + (f" during {', '.join(during)}"
                                                      if during else "")))
    anomalies.sort(key=lambda a: a.at)
    summary = {
        "sent": sum(s.count for s in obs.sent),
        "received": len({r.seq for r in mine}),
        "good": len(good),
        "wrong_source": len(wrong),
        "dual_owner_probes": len(dual_times),
        "owed_seconds": owed,
        "unavailable_seconds": missing,
        "heals_checked": heals,
        "role_changes": [[round(t - obs.start, 3), a, b] for t, a, b in changes],
        "planned_moves": planned_moves,
    }
    return anomalies, summary


# --- running --------------------------------------------------------------------------


def etcd_members(lab: Lab) -> dict[str, str]:
    """etcd member node -> its host address, for every host of the lab's VIPMGR_ETCD."""
    hosts = endpoint_hosts(lab.state.etcd_url or "")
    members = {}
    for node, st in lab.state.nodes.items():
        if st.kind == "bridge":
            continue
        addrs = {c.split("/")[0] for cidrs in lab.addresses(node).values() for c in cidrs}
        for host in hosts:
            if host in addrs:
                members[node] = host
    return members


class Instruments(threading.Thread):
    """The stream and the ARP prober, run back to back in windows until ``end``."""

    def __init__(self, bench: FailoverBench, end: float) -> None:
        super().__init__(name="chaos-instruments", daemon=True)
        self.bench, self.end = bench, end
        self.sent: list[Sent] = []
        self.arp_logs: list[Path] = []
        self.errors: list[str] = []

    def run(self) -> None:
        lab = self.bench.lab
        while (left := self.end - time.monotonic()) > 1.0:
            window = min(WINDOW, left)
            log = lab.workdir(ECHO_NODE) / f"chaos-arp-{len(self.arp_logs)}.log"
            self.arp_logs.append(log)
            arp = self.bench._popen(ECHO_NODE, [PY, "-m", "vipmgr.lab.probe", "arp", VIP,
                                                "--iface", "eth0", "--interval", str(ARP_INTERVAL),
                                                "--duration", str(window + 0.2),
                                                "--log", str(log)])
            stream, _ = self.bench._stream(int(RATE * window), RATE)
            try:
                out, err = stream.communicate(timeout=window + 15)
                arp.communicate(timeout=window + 15)
            except subprocess.TimeoutExpired:
                self.errors.append(f"an instrument overran its {window:.0f} s window")
                continue
            finally:
                for proc in (stream, arp):
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
            try:
                report = json.loads(out.strip().splitlines()[-1])
            except (IndexError, json.JSONDecodeError):
                self.errors.append(f"stream sender failed: {err.strip()[-300:]}")
                continue
            self.sent.append(Sent(report["first_seq"], report["count"], report["start"],
                                  report["end"]))


class Chaos:
    """Plays a schedule on a running lab whose agents serve."""

    def __init__(self, lab: Lab, say: Say) -> None:
        self.lab, self.say = lab, say
        self.members = etcd_members(lab)
        self.bench = FailoverBench(lab, Vipmgr(), rate=RATE)
        self.episodes: list[Episode] = []
        self._last_good: tuple[float, str] | None = None

    # who is who

    def active(self) -> str | None:
        """The node that delivered the latest datagram from the VIP (within 1 s), else the
        node ``vipmgr status`` names."""
        for rec in self.bench.l2.read():
            if rec.source == VIP:
                self._last_good = (rec.arrival, self.bench.macs.get(rec.mac, rec.mac))
        if self._last_good and time.monotonic() - self._last_good[0] < 1.0:
            return self._last_good[1]
        try:
            return Vipmgr.status(self.lab).get("active")
        except subprocess.TimeoutExpired:
            return None  # no traffic and no answer from status: the step is skipped

    def leader(self) -> str | None:
        try:
            url = self.lab.exec(next(iter(self.members)), [
                "python3", "-m", "vipmgr.lab.etcd", "leader", self.lab.state.etcd_url or ""],
                timeout=10).stdout.strip()
        except subprocess.TimeoutExpired:
            return None
        for node, host in self.members.items():
            if f"//{host}:" in url:
                return node
        return None

    def targets(self, step: Step) -> list[str]:
        kind = KINDS[step.kind]
        if kind.target == "gateways":
            return list(GATEWAYS)
        if kind.target in ("member", "leader", "majority"):
            members = sorted(self.members)
            leader = self.leader()
            if kind.target == "leader":
                return [leader] if leader else []
            if kind.target == "majority":
                return members[:len(members) // 2 + 1]
            followers = [m for m in members if m != leader] or members
            return [followers[int(step.pick * len(followers)) % len(followers)]]
        active = self.active()
        if kind.target == "active":
            return [active] if active else []
        standbys = [g for g in GATEWAYS if g != active]
        return [standbys[int(step.pick * len(standbys)) % len(standbys)]]

    # doing

    def _vipmgr(self, *args: str) -> None:
        try:
            out = self.lab.exec("etcd", ["vipmgr", *args], timeout=15)
        except subprocess.TimeoutExpired:
            raise LabError(f"vipmgr {' '.join(args)} did not finish within 15 s") from None
        if out.returncode != 0:
            raise LabError(f"vipmgr {' '.join(args)}: {(out.stderr or out.stdout).strip()}")

    def inject(self, kind: FaultKind, node: str) -> None:
        lab = self.lab
        match kind.name:
            case "crash" | "crash-standby" | "etcd-member-kill" | "etcd-leader-kill" \
                    | "etcd-outage":
                lab.fault(node, "crash")
            case "freeze" | "freeze-standby":
                lab.fault(node, "freeze")
            case "linkdown" | "linkdown-standby":
                lab.fault(node, "linkdown")
            case "heartbeat-partition" | "etcd-partition":
                lab.fault(node, kind.name)
            case "etcd-partition-standby":
                lab.fault(node, "etcd-partition")
            case "heartbeat-partition-in":
                lab._drop(node, [f"{VRRP} drop"], [])
            case "heartbeat-partition-out":
                lab._drop(node, [], [f"{VRRP} drop"])
            case "etcd-member-partition":
                lab._drop(node, ["iifname eth0 drop"], ["oifname eth0 drop"])
            case "heartbeat-loss":
                lab._drop(node, [f"{VRRP} numgen random mod 100 < {LOSS_PERCENT} drop"], [])
            case "cordon":
                self._vipmgr("cordon", node)
            case "sigterm":
                lab.stop(node)
            case "switchover":
                self._vipmgr("switchover", GATEWAY_NAME)

    def heal(self, kind: FaultKind, node: str) -> None:
        if kind.name == "cordon":
            self._vipmgr("uncordon", node)
        elif kind.name == "sigterm":
            self.lab.start(node)
        else:
            # removes the drop table, thaws, raises the link, restarts a killed main process
            self.lab.fault(node, "heal")

    def play(self, schedule: Sequence[Step], start: float, end: float) -> None:
        """Each step when due and after the previous one's calm, while it fits before ``end``."""
        ready = start
        for i, step in enumerate(schedule, 1):
            time.sleep(max(0.0, start + step.at - time.monotonic(), ready - time.monotonic()))
            if time.monotonic() + step.hold + step.calm > end:
                self.say(f"{time.monotonic() - start:7.1f}s  {i:3d}. {step.kind}: "
                         "no time left (the steps before ran late); stopping")
                return
            kind = KINDS[step.kind]
            nodes = self.targets(step)
            ep = Episode(step, nodes, time.monotonic())
            self.episodes.append(ep)
            if not nodes:
                ep.error = "no target found (no active node, or no etcd leader)"
                ep.healed = ep.injected
                self.say(f"{ep.injected - start:7.1f}s  {i:3d}. {step.kind}: skipped, {ep.error}")
                ready = time.monotonic() + step.calm
                continue
            try:
                for node in nodes:
                    self.inject(kind, node)
            except LabError as exc:
                ep.error = str(exc)
            self.say(f"{ep.injected - start:7.1f}s  {i:3d}. {step.kind} on {','.join(nodes)}"
                     + (f" (failed: {ep.error})" if ep.error else ""))
            if not kind.instant:
                time.sleep(max(0.0, ep.injected + step.hold - time.monotonic()))
                for node in nodes:
                    try:
                        self.heal(kind, node)
                    except LabError as exc:
                        ep.error = (ep.error + "; " if ep.error else "") + f"heal: {exc}"
                ep.healed = time.monotonic()
            ready = time.monotonic() + step.calm

    def heal_everything(self) -> None:
        for ep in self.episodes:
            if ep.healed is None and not ep.kind.instant:
                for node in ep.nodes:
                    try:
                        self.heal(ep.kind, node)
                    except LabError:
                        pass  # the lab goes down next anyway
                ep.healed = time.monotonic()


# --- the report ------------------------------------------------------------------------


def _seconds_of_day(wall: float) -> float:
    day = time.localtime(wall)
    return day.tm_hour * 3600 + day.tm_min * 60 + day.tm_sec + wall % 1


def _stamped(path: Path) -> list[tuple[float | None, str]]:
    """(time of day, line) of an agent log (text format, HH:MM:SS.mmm first); a line
    without a stamp (a traceback's) gets None and belongs to the stamped line before it."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        t = None
        if len(line) >= 12 and line[2] == ":" and line[5] == ":" and line[8] == ".":
            try:
                t = int(line[:2]) * 3600 + int(line[3:5]) * 60 + float(line[6:12])
            except ValueError:
                t = None
        out.append((t, line))
    return out


def _log_lines(path: Path, wall: float) -> list[str]:
    """Lines of an agent log from LOG_BEFORE before wall-clock ``wall`` to LOG_AFTER after."""
    now = _seconds_of_day(wall)
    out, keep = [], False
    for t, line in _stamped(path):
        if t is not None:
            keep = now - LOG_BEFORE <= t <= now + LOG_AFTER
        if keep:
            out.append(line)
    return out[-LOG_LINES:]


def agent_pauses(lab: Lab, wall0: float, wall1: float) -> list[int]:
    """Milliseconds of every event-loop pause the gateways' agents logged during the run
    ("paused N ms"): a loaded machine, which the election's short timers feel."""
    lo, hi = _seconds_of_day(wall0), _seconds_of_day(wall1)
    out = []
    for node in GATEWAYS:
        for t, line in _stamped(lab.log_path(node)):
            match = PAUSE.search(line)
            if t is not None and lo <= t <= hi and match:
                out.append(int(match.group(1)))
    return out


def planned_moves(lab: Lab, wall0: float, mono0: float, wall1: float) -> list[tuple[float, str]]:
    """(time on the run's monotonic clock, target) of every planned move (a rebalance
    handover) the gateways' agents logged during the run."""
    lo, hi, day0 = _seconds_of_day(wall0), _seconds_of_day(wall1), _seconds_of_day(wall0)
    out = []
    for node in GATEWAYS:
        for t, line in _stamped(lab.log_path(node)):
            match = PLANNED.search(line)
            if t is not None and lo <= t <= hi and match:
                out.append((mono0 + (t - day0), match.group(1)))
    return sorted(out)


def attach_logs(lab: Lab, anomalies: Sequence[Anomaly], wall0: float, mono0: float) -> None:
    for a in anomalies:
        wall = wall0 + (a.at - mono0)
        for node in (*GATEWAYS, "worker-b"):
            lines = _log_lines(lab.log_path(node), wall)
            if lines:
                a.logs[node] = lines


def render(report: dict) -> str:
    r, start = report, report["clock"]["start"]
    out = [f"vipmgr lab chaos: seed {r['seed']}, {r['minutes']:g} min, lab {r['lab']}, "
           f"topology {r['topology']} ({r['etcd_members']} etcd member(s))",
           f"failover bound {r['bound']:.2f} s; stream {RATE:g}/s {SENDER} -> echo; "
           f"ARP probe for {VIP} every {ARP_INTERVAL * 1000:.0f} ms",
           f"faults in the schedule: {', '.join(r['kinds'])}", "", "Schedule (s from start):"]
    for ep in r["episodes"]:
        held = "" if ep["healed"] is None else f"held {ep['healed'] - ep['injected']:.1f} s"
        out.append(f"  {ep['injected'] - start:7.1f}  {ep['kind']:<24} "
                   f"{','.join(ep['nodes']) or '-':<14} {held}"
                   + (f"  ERROR {ep['error']}" if ep["error"] else ""))
    s = r["summary"]
    out += ["", "Checkers:",
            f"  dual owners             {s['dual_owner_probes']} ARP probes answered by two MACs",
            f"  wrong source            {s['wrong_source']} of {s['received']} datagrams "
            f"received ({s['sent']} sent)",
            f"  availability            {s['unavailable_seconds']} s without traffic of "
            f"{s['owed_seconds']} s owed",
            f"  liveness                {s['heals_checked']} heals checked",
            f"  role changes            {len(s['role_changes'])}: "
            + ", ".join(f"{t:.1f}s {a}->{b}" for t, a, b in s["role_changes"][:12])
            + (" ..." if len(s["role_changes"]) > 12 else "")
            + (f" ({s['planned_moves']} planned)" if s.get("planned_moves") else "")]
    p = s.get("agent_pauses")
    if p:
        out.append(f"  agent pauses            {p['count']} logged, max {p['max_ms']} ms, "
                   f"{p['over_fence_deadline']} longer than fenceDeadline ({FENCE_MS:.0f} ms)")
        if p["over_fence_deadline"]:
            out.append("  WARNING: the agents' event loops stalled longer than the fence "
                       "deadline: this machine is too loaded for the default timers, and "
                       "anomalies may come from that rather than from the faults")
    for err in r["instrument_errors"]:
        out.append(f"  instrument error: {err}")
    out += ["", f"Anomalies ({len(r['anomalies'])}):"]
    for i, a in enumerate(r["anomalies"], 1):
        span = f"-{a['until'] - start:.1f}" if a["until"] else ""
        out.append(f"  [{i}] t={a['at'] - start:.1f}{span} s  {a['check']}: {a['detail']}")
        for node, lines in a["logs"].items():
            out.append(f"      {node}.log:")
            out += [f"        {line}" for line in lines]
    out += ["", f"RESULT: {len(r['anomalies'])} anomalies" if r["anomalies"] else
            "RESULT: no anomalies"]
    return "\n".join(out)


def run_chaos(minutes: float, seed: int, *, name: str = "chaos", topology: str | None = None,
              kinds: Sequence[str] | None = None, hold: float | None = None,
              keep: bool = False, say: Say = lambda _m: None) -> dict:
    """Deploy a lab, play the schedule, check, tear down; the report (``render`` prints it)."""
    if not 0 < minutes <= MAX_MINUTES:
        raise LabError(f"--minutes must be in (0, {MAX_MINUTES:g}]")
    if hold is not None and not 0 < hold < minutes * 60:
        raise LabError(f"--hold must be in (0, {minutes * 60:g}) seconds (the run's length)")
    if name in running_labs():
        raise LabError(f"lab {name!r} is already up: pick another -n or 'vipmgr lab down "
                       f"--name {name}'")
    Vipmgr().preflight()
    path = str(topology or ETCD3_TOPOLOGY)
    topo = load(path).renamed(name)
    say(f"lab {name} up ({path})")
    lab = deploy(topo, timeout=30)
    try:
        Vipmgr().start(lab, say)
        chaos = Chaos(lab, say)
        n_members = len(chaos.members)
        usable = [k for k in (kinds or KINDS) if KINDS[k].members <= n_members]
        schedule = make_schedule(seed, minutes, usable, hold)
        chaos.bench.wait_stable(STABLE_TIMEOUT)
        say(f"{len(schedule)} faults over {minutes:g} min (seed {seed})")
        wall0, start = time.time(), time.monotonic()
        end = start + minutes * 60
        instruments = Instruments(chaos.bench, end)
        instruments.start()
        played = False
        try:
            chaos.play(schedule, start, end)
            played = True
        finally:
            chaos.heal_everything()
            if not played:
                instruments.end = time.monotonic()  # the window in progress is the last
            instruments.join(timeout=WINDOW + 30)
        time.sleep(0.2)  # the last datagrams reach the echo log
        l2 = read_udp_log(lab.workdir(ECHO_NODE) / "echo-l2.log")
        arp = [read_arp_log(p) for p in instruments.arp_logs if p.exists()]
        obs = Observations(start, min(end, time.monotonic()), instruments.sent, l2, arp,
                           chaos.bench.macs)
        wall1 = wall0 + (obs.end - start)
        anomalies, summary = check(obs, chaos.episodes,
                                   planned=planned_moves(lab, wall0, start, wall1))
        attach_logs(lab, anomalies, wall0, start)
        pauses = agent_pauses(lab, wall0, wall1)
        summary["agent_pauses"] = {"count": len(pauses), "max_ms": max(pauses, default=0),
                                   "over_fence_deadline": sum(
                                       1 for p in pauses if p > FENCE_MS)}
        return {"seed": seed, "minutes": minutes, "lab": name, "topology": path,
                "etcd_members": n_members, "bound": BOUND, "kinds": usable,
                "clock": {"start": start, "end": obs.end, "wall_start": wall0},
                "episodes": [{"kind": ep.step.kind, "at": ep.step.at, "hold": ep.step.hold,
                              "nodes": ep.nodes, "injected": ep.injected, "healed": ep.healed,
                              "error": ep.error} for ep in chaos.episodes],
                "summary": summary, "instrument_errors": instruments.errors,
                "anomalies": [asdict(a) for a in anomalies]}
    finally:
        if keep:
            say(f"lab {name} left up: vipmgr lab down --name {name}")
        else:
            destroy(name)


@click.command("chaos")
@click.option("--minutes", type=float, default=2.0, show_default=True,
              help="how long the schedule runs")
@click.option("--seed", type=int, default=None, help="the schedule's seed (default: random, "
              "printed, so the run can be repeated)")
@click.option("-n", "--name", default="chaos", show_default=True,
              help="lab name (deployed for the run and torn down after it)")
@click.option("--topology", type=click.Path(exists=True, dir_okay=False), default=None,
              help="topology file (default: lab/egress-etcd3.clab.yml)")
@click.option("--fault", "faults", multiple=True, type=click.Choice(list(KINDS)),
              help="only these kinds of fault (repeatable; default: all the topology allows)")
@click.option("--hold", type=float, default=None,
              help="seconds each fault is held (default: random, 3-8 s); e.g. --minutes 10.2 "
              "--fault heartbeat-loss --hold 600 keeps one fault for ten minutes")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="also write the report as JSON to this file")
@click.option("--keep", is_flag=True, help="leave the lab up afterwards")
def chaos_command(minutes: float, seed: int | None, name: str, topology: str | None,
                  faults: tuple[str, ...], hold: float | None, json_path: str | None,
                  keep: bool) -> None:
    """A reproducible random schedule of faults against the real agents, with checkers;
    exit 1 on any anomaly (docs/chaos.md)."""
    if seed is None:
        seed = random.SystemRandom().randrange(1, 10 ** 6)
    click.echo(f"seed {seed}")
    try:
        report = run_chaos(minutes, seed, name=name, topology=topology,
                           kinds=list(faults) or None, hold=hold, keep=keep,
                           say=click.echo)
    except (LabError, subprocess.TimeoutExpired) as exc:
        where = f"left up: vipmgr lab down --name {name}" if keep else \
            "torn down; --keep leaves it up to look at"
        raise click.ClickException(f"{exc} (lab {name} {where})") from None
    click.echo("")
    click.echo(render(report))
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2))
    sys.exit(1 if report["anomalies"] else 0)


if __name__ == "__main__":
    chaos_command()
