"""Failover benchmark on the seed lab: vipmgr or keepalived, same topology, same stream, same faults.

One run deploys its own lab (``bench-<impl>`` unless named), starts the
implementation on the egress nodes, and repeats trials: a bounded, paced UDP
stream from ``vm-backend`` to the echo service (203.0.113.10:7) while an ARP
prober on the ``internet`` router asks who holds the VIP every 10 ms; a fault
hits the current active node one second in; when the stream ends the logs
are analysed (:mod:`vipmgr.lab.analysis`), the fault is healed, and the next
trial waits until the lab is stable again (one VIP holder that the
implementation agrees is active, every gateway process running, datagrams
arriving from the VIP). The lab is torn down at the end, also on failure,
unless ``keep`` is set.

keepalived runs the common egress recipe: one VRRPv3 instance on eth1 with the
advert interval vipmgr uses by default (20 ms; keepalived accepts VRRPv3
intervals in centiseconds), owning the public VIP 192.0.2.100 and an internal
VIP 198.51.100.100 that worker-b uses as next hop for vm-backend's traffic;
static nft SNAT to the VIP on every gateway.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vipmgr.config.timers import Timers
from vipmgr.lab import flows
from vipmgr.lab.analysis import Sent, TrialResult, analyze, summarize
from vipmgr.lab.echo import UdpRecord
from vipmgr.lab.plot import Trace, svg
from vipmgr.lab.probe import read_arp_log
from vipmgr.lab.runtime import Lab, LabError, deploy, destroy
from vipmgr.lab.topology import Topology, default_topology_path, load

VIP = "192.0.2.100"
INTERNAL_VIP = "198.51.100.100"
ECHO_IP, ECHO_PORT = "203.0.113.10", 7
GATEWAYS = ("gw-a", "gw-b", "gw-c")
WORKERS = ("worker-a", "worker-b")
AGENT_NODES = GATEWAYS + WORKERS
METRICS_PORT = 9750
SENDER, SENDER_IP = "vm-backend", "198.18.2.2"
ECHO_NODE = "internet"
GATEWAY_NAME = "egress-gw"
BENCH_FAULTS = ("crash", "freeze", "linkdown", "graceful")
# rebalance: uncordon the trial's target, whose gateway moves back to it after the
# placement hold-down (vipmgr.lab.placement)
TRIAL_FAULTS = (*BENCH_FAULTS, "rebalance")
ADVERT_INTERVAL = Timers().advert_interval  # vipmgr's default; keepalived gets the same
MAX_STREAM = 5.0       # seconds of stream per trial, at most
ARP_INTERVAL = 0.01
STABLE_TIMEOUT = 20.0  # after a heal, the lab must be stable again within this
READY_TIMEOUT = 30.0   # the implementation's first active node
PY = sys.executable

Say = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


def vip_holders(lab: Lab, ip: str = VIP) -> list[str]:
    """Gateways with ``ip`` configured (the kernel's truth: they answer ARP for it)."""
    return [gw for gw in GATEWAYS
            if any(c.split("/")[0] == ip for cidrs in lab.addresses(gw).values() for c in cidrs)]


def seed_network(name: str, topology: str | None = None) -> Topology:
    """The seed topology under lab name ``name`` without its agents and without the manifest
    hook: the network, etcd and the echo service, for callers that start agents their way."""
    topo = load(topology or default_topology_path()).renamed(name)
    return topo.with_cmds({n: None for n in AGENT_NODES if n in topo.nodes}).without_stage_exec()


def agent_cmd(node: str) -> list[str]:
    """The agent command line the seed topology gives its egress nodes and workers."""
    return ["vipmgr", "agent", "--node", node, "--metrics-addr", f"0.0.0.0:{METRICS_PORT}"]


def wait_ready(lab: Lab, timeout: float = READY_TIMEOUT) -> None:
    """Until ``vipmgr status`` says every gateway is healthy and vm-backend egresses as the VIP;
    LabError with the agents' log tails when an agent died or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        out = lab.exec("etcd", ["vipmgr", "status"], timeout=10)
        if out.returncode == 0 and _curl_or_none(lab, SENDER) == VIP:
            return
        dead = [n for n in AGENT_NODES if lab.process_state(n) == "exited"]
        if dead or time.monotonic() > deadline:
            logs = "\n".join(f"--- {n}:\n{lab.log_tail(n, 10)}" for n in dead or GATEWAYS)
            raise LabError(f"vipmgr status did not turn healthy (exit {out.returncode}): "
                           f"{out.stdout.strip() or out.stderr.strip()}\n{logs}")
        time.sleep(0.2)


def runs_agents(lab: Lab) -> bool:
    """Whether the lab's topology starts vipmgr agents as main processes."""
    return any(st.cmd[:2] == ["vipmgr", "agent"] for st in lab.state.nodes.values())


def _curl_or_none(lab: Lab, vm: str) -> str | None:
    try:
        return lab.curl(vm, timeout=0.5)
    except LabError:
        return None


def agent_available() -> tuple[bool, str]:
    """Whether this installation has ``vipmgr agent`` (and why not)."""
    out = subprocess.run([PY, "-m", "vipmgr.cli", "agent", "--help"], capture_output=True,
                         text=True, timeout=30)
    lines = (out.stderr or out.stdout).strip().splitlines()
    return out.returncode == 0, lines[-1] if lines else f"exit {out.returncode}"


class Impl(ABC):
    """An HA implementation the benchmark can drive on the seed lab."""

    name = ""

    @abstractmethod
    def preflight(self) -> None:
        """Raise LabError, before any lab is deployed, if this host cannot run it."""

    @abstractmethod
    def start(self, lab: Lab, say: Say) -> None:
        """Configure and start it on the lab's nodes."""

    @abstractmethod
    def active(self, lab: Lab) -> str | None:
        """The node the implementation says is active (None: none, or several)."""

    def unstable(self, lab: Lab) -> str | None:
        """Why the lab is not in a steady state yet, or None when it is."""
        down = [gw for gw in GATEWAYS if lab.process_state(gw) != "running"]
        if down:
            return f"not running on {', '.join(down)}"
        holders = vip_holders(lab)
        if len(holders) != 1:
            return f"VIP {VIP} held by {holders or 'nobody'}"
        active = self.active(lab)
        if active != holders[0]:
            return f"active {active} but VIP on {holders[0]}"
        return None


KEEPALIVED_INSTANCE = """\
vrrp_instance {name} {{
    state BACKUP
    nopreempt
    interface eth1
    virtual_router_id {vrid}
    version 3
    priority {priority}
    advert_int {advert}
    virtual_ipaddress {{
{addresses}
    }}
}}
"""


def keepalived_conf(node: str, instances: list[tuple[str, int, int, tuple[str, ...]]]) -> str:
    """keepalived's config for ``node``: per (name, vrid, priority, addresses) one VRRPv3
    instance, BACKUP + nopreempt (vipmgr's default), at vipmgr's advert interval."""
    return f"global_defs {{\n    router_id {node}\n    vrrp_garp_master_delay 0\n}}\n" + "".join(
        KEEPALIVED_INSTANCE.format(name=name, vrid=vrid, priority=priority,
                                   advert=f"{ADVERT_INTERVAL:g}",
                                   addresses="\n".join(f"        {a}" for a in addresses))
        for name, vrid, priority, addresses in instances)


def start_keepalived(lab: Lab, node: str, conf_text: str) -> None:
    """Write ``node``'s keepalived.conf and start keepalived in the foreground as its main
    process (pid files in its workdir)."""
    wd = lab.workdir(node)
    conf, pid, vrrp_pid = wd / "keepalived.conf", wd / "keepalived.pid", wd / "vrrp.pid"
    conf.write_text(conf_text)
    # a crash leaves pid files behind, and keepalived refuses to start over them
    lab.start(node, ["sh", "-c", f"rm -f {pid} {vrrp_pid}; exec keepalived -n -l -D -P "
                                 f"-f {conf} -p {pid} -r {vrrp_pid}"])


class Keepalived(Impl):
    """keepalived's usual egress recipe, one instance per egress node, in the foreground."""

    name = "keepalived"
    VRID = 51
    SNAT = ("table ip bench_egress {{\n chain post {{\n  type nat hook postrouting priority srcnat;\n"
            "  ip saddr {src} oifname eth1 snat to {vip}\n }}\n}}\n")

    def preflight(self) -> None:
        if shutil.which("keepalived") is None:
            raise LabError("keepalived is not installed (Debian package keepalived)")

    def start(self, lab: Lab, say: Say) -> None:
        say(f"keepalived on {', '.join(GATEWAYS)}: VRRPv3 advert_int {ADVERT_INTERVAL:g} s, "
            f"VIPs {VIP} (eth1) and {INTERNAL_VIP} (eth0), static SNAT")
        for i, gw in enumerate(GATEWAYS):
            lab.netns(gw).run(["nft", "-f", "-"], input=self.SNAT.format(src=SENDER_IP, vip=VIP))
            start_keepalived(lab, gw, keepalived_conf(gw, [
                ("egress", self.VRID, 150 - 10 * i, (f"{VIP}/32 dev eth1",
                                                     f"{INTERNAL_VIP}/32 dev eth0"))]))
        worker = lab.netns("worker-b")
        worker.ip("rule", "add", "from", SENDER_IP, "to", "203.0.113.0/24", "lookup", "100")
        worker.ip("route", "add", "default", "via", INTERNAL_VIP, "dev", "eth0", "table", "100")

    def active(self, lab: Lab) -> str | None:
        live = [gw for gw in vip_holders(lab) if lab.process_state(gw) == "running"]
        return live[0] if len(live) == 1 else None

    def unstable(self, lab: Lab) -> str | None:
        why = super().unstable(lab)
        if why is None and vip_holders(lab, INTERNAL_VIP) != vip_holders(lab):
            why = f"internal VIP {INTERNAL_VIP} on {vip_holders(lab, INTERNAL_VIP)}"
        return why


class Vipmgr(Impl):
    """vipmgr agents on the egress nodes and workers, the seed manifests in VIP mode."""

    name = "vipmgr"
    MANIFESTS = ("lab-inventory.yaml", "egressgateway-virtual-ip.yaml", "egressgatewaypolicy.yaml")

    def preflight(self) -> None:
        ok, why = agent_available()
        if not ok:
            raise LabError(f"'vipmgr agent' is not available in this installation ({why})")

    def start(self, lab: Lab, say: Say) -> None:
        """Apply the seed manifests (unchanged if the topology's hook did) and start the agents
        the topology did not start itself; wait until ``vipmgr status`` is healthy."""
        manifests = Path(lab.state.topology).parent / "manifests"
        files = [str(manifests / m) for m in self.MANIFESTS]
        say(f"vipmgr apply {' '.join(self.MANIFESTS)}")
        out = lab.exec("etcd", ["vipmgr", "apply", *(a for f in files for a in ("-f", f))])
        if out.returncode != 0:
            raise LabError(f"vipmgr apply failed: {(out.stderr or out.stdout).strip()}")
        idle = [n for n in AGENT_NODES if lab.process_state(n) not in ("running", "frozen")]
        if idle:
            say(f"vipmgr agent on {', '.join(idle)}")
        for node in idle:
            lab.start(node, agent_cmd(node))
        wait_ready(lab)

    @staticmethod
    def status(lab: Lab, gateway: str = GATEWAY_NAME) -> dict:
        """The gateway's entry of ``vipmgr status -o json`` ({} when etcd does not answer)."""
        out = lab.exec("etcd", ["vipmgr", "status", "-o", "json", gateway], timeout=10)
        try:
            gateways = json.loads(out.stdout)["gateways"]
        except (json.JSONDecodeError, KeyError):
            return {}
        return gateways[0] if gateways else {}

    def active(self, lab: Lab) -> str | None:
        return self.status(lab).get("active")

    def unstable(self, lab: Lab) -> str | None:
        down = [n for n in WORKERS if lab.process_state(n) != "running"]
        if down:
            return f"agent not running on {', '.join(down)}"
        return super().unstable(lab) or self._moving(lab)

    @staticmethod
    def _moving(lab: Lab) -> str | None:
        """A rebalance placement still wants for the seed gateway (its first choice joined
        late, say): a trial started now would measure that move, not its fault."""
        out = lab.exec("etcd", ["vipmgr", "status", "-o", "json"], timeout=10)
        try:
            pending = json.loads(out.stdout)["placement"]["pending"]
        except (json.JSONDecodeError, KeyError, TypeError):
            return "no placement in vipmgr status"
        move = next((m for m in pending if m["gateway"] == GATEWAY_NAME), None)
        return f"placement still moves {GATEWAY_NAME} {move['from']} -> {move['to']}" \
            if move else None


IMPLS: dict[str, type[Impl]] = {"vipmgr": Vipmgr, "keepalived": Keepalived}


class _LogTail:
    """Records appended to an echo log since the last read."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, path.stat().st_size if path.exists() else 0

    def read(self) -> list[UdpRecord]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a half-written last line waits for the next read
        self.offset += end
        return [UdpRecord.parse(line) for line in data[:end].decode().splitlines()]


@dataclass
class FailoverBench:
    """Trials on a running lab whose implementation is already started."""

    lab: Lab
    impl: Impl
    rate: float = 1000.0
    duration: float = 3.0     # seconds of stream per trial
    fault_after: float = 1.0  # seconds into the stream
    say: Say = _quiet
    tcp_flows: int = 0        # long-lived TCP connections (vipmgr.lab.flows) across each fault

    def __post_init__(self) -> None:
        if not 0 < self.fault_after < self.duration <= MAX_STREAM:
            raise LabError(f"need 0 < fault_after < duration <= {MAX_STREAM} s")
        wd = self.lab.workdir(ECHO_NODE)
        self.udp, self.l2 = _LogTail(wd / "echo-udp.log"), _LogTail(wd / "echo-l2.log")
        self.next_seq = 0
        self.macs = self._macs()
        self.traces: list[Trace] = []  # one per trial, for --plot
        if self.tcp_flows:  # the flows' echo server; it lives as long as the lab
            subprocess.Popen(self.lab.netns(ECHO_NODE).argv(flows.serve_command()),
                             env=self.lab.env(ECHO_NODE), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)

    def _macs(self) -> dict[str, str]:
        """MAC -> node for every interface that can deliver to the router (gw/worker eth1)."""
        out = {}
        for node in (*GATEWAYS, *WORKERS):
            link = json.loads(self.lab.netns(node).ip("-j", "link", "show", "eth1").stdout)[0]
            out[link["address"]] = node
        return out

    def _popen(self, node: str, argv: list[str]) -> subprocess.Popen:
        return subprocess.Popen(self.lab.netns(node).argv(argv), env=self.lab.env(node),
                                cwd=self.lab.workdir(node), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def _stream(self, count: int, rate: float) -> tuple[subprocess.Popen, int]:
        first = self.next_seq
        self.next_seq += count
        return self._popen(SENDER, [PY, "-m", "vipmgr.lab.probe", "stream", ECHO_IP,
                                    "--port", str(ECHO_PORT), "--rate", str(rate),
                                    "--count", str(count), "--first-seq", str(first)]), first

    def path_works(self) -> bool:
        """A short burst (20 datagrams in 0.1 s) arrives, the last ten from the VIP."""
        self.udp.read()
        proc, first = self._stream(20, 200)
        proc.communicate(timeout=10)
        time.sleep(0.05)
        got = {r.seq: r.source for r in self.udp.read() if first <= r.seq < first + 20}
        return all(got.get(seq) == VIP for seq in range(first + 10, first + 20))

    def wait_stable(self, timeout: float = STABLE_TIMEOUT) -> str:
        """Wait for one active node with the VIP and a working path; that node."""
        deadline = time.monotonic() + timeout
        while True:
            why = self.impl.unstable(self.lab)
            if why is None and self.path_works():
                return str(self.impl.active(self.lab))
            if time.monotonic() > deadline:
                raise LabError(f"{self.impl.name}: no stable state within {timeout:g} s: "
                               f"{why or 'datagrams do not arrive from the VIP'}")
            time.sleep(0.1)

    def inject(self, node: str, fault: str) -> None:
        """graceful: SIGTERM (both implementations release the VIP on it); rebalance:
        ``vipmgr uncordon``; else lab.fault."""
        if fault == "graceful":
            self.lab.stop(node)
        elif fault == "rebalance":
            out = self.lab.exec("etcd", ["vipmgr", "uncordon", node], timeout=10)
            if out.returncode != 0:
                raise LabError(f"vipmgr uncordon {node}: {(out.stderr or out.stdout).strip()}")
        else:
            self.lab.fault(node, fault)

    def trial(self, index: int, fault: str, target: str | None = None) -> TrialResult:
        """One stream with one fault on ``target`` (default: the active node); the fault
        is left in place."""
        if fault not in TRIAL_FAULTS:
            raise LabError(f"unknown fault {fault!r} (one of {', '.join(TRIAL_FAULTS)})")
        active = self.wait_stable()
        self.udp.read()
        self.l2.read()
        arp_log = self.lab.workdir(ECHO_NODE) / f"arp-{index}-{self.next_seq}.log"
        arp = self._popen(ECHO_NODE, [PY, "-m", "vipmgr.lab.probe", "arp", VIP, "--iface", "eth0",
                                      "--interval", str(ARP_INTERVAL),
                                      "--duration", str(self.duration + 0.3),
                                      "--log", str(arp_log)])
        client = None
        if self.tcp_flows:  # connected and exchanging for a second before the stream starts
            client = self._popen(SENDER, flows.run_command(ECHO_IP, self.tcp_flows,
                                                           self.duration + 2.0))
            time.sleep(1.0)
        stream, first = self._stream(int(self.rate * self.duration), self.rate)
        try:
            started = stream.stdout.readline().split()
            if not started or started[0] != "started":
                raise LabError(f"stream sender failed: {stream.stderr.read().strip()}")
            time.sleep(max(0.0, float(started[1]) + self.fault_after - time.monotonic()))
            fault_at = time.monotonic()
            self.inject(target or active, fault)
            report = json.loads(stream.communicate(timeout=self.duration + 10)[0])
            arp.communicate(timeout=self.duration + 10)
            tcp = (flows.parse_report(client.communicate(timeout=self.duration + 30)[0])
                   if client is not None else None)
        finally:
            for proc in (stream, arp, *([client] if client is not None else [])):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        time.sleep(0.1)  # the last datagrams reach the echo log
        sent = Sent(first, report["count"], report["start"], report["end"])
        udp, l2 = self.udp.read(), self.l2.read()
        arp_answers = read_arp_log(arp_log) if arp_log.exists() else []
        result = analyze(index, fault, fault_at, sent, VIP, udp, l2, arp_answers,
                         active, self.impl.active(self.lab), self.macs)
        if tcp is not None:
            result.tcp_flows, result.tcp_survived = tcp.flows, tcp.survived
            result.tcp_worst_stall_ms = tcp.worst_stall_ms
        self.traces.append(Trace(
            f"{self.impl.name}, {fault} of {target or active}, trial {index + 1}: outage "
            f"{result.outage_ms:.0f} ms, lost {result.lost}, wrong source {result.wrong_source}, "
            f"dual ARP answers {result.dual_answer}",
            sent.start, sent.end, fault_at, [*GATEWAYS, *WORKERS],
            [(r.arrival, self.macs.get(r.mac, r.mac), r.source == VIP)
             for r in l2 if r.seq in sent],
            [(a.arrival, self.macs.get(a.mac, a.mac)) for a in arp_answers]))
        self.say(f"trial {index + 1}: {fault} {target or active}: {active} -> "
                 f"{result.active_after or '?'}: "
                 f"outage {result.outage_ms:.0f} ms{'' if result.recovered else ' (NOT RECOVERED)'}"
                 f", lost {result.lost}, wrong source {result.wrong_source}, "
                 f"dual answers {result.dual_answer}"
                 + (f", tcp flows survived {tcp.survived}/{tcp.flows}, worst stall "
                    f"{tcp.worst_stall_ms:.0f} ms" + (f" (lost: {tcp.errors})" if tcp.lost else "")
                    if tcp is not None else ""))
        return result


def run_failover(impl_name: str, fault: str, trials: int, *, rate: float = 1000.0,
                 duration: float = 3.0, name: str | None = None, topology: str | None = None,
                 keep: bool = False, say: Say = _quiet, plot: str | None = None,
                 tcp_flows: int = 0) -> dict:
    """Deploy a lab, run ``trials`` trials of ``fault`` against ``impl_name``, tear down; the report.

    ``plot``: write the trial with the median outage as an SVG there (:mod:`vipmgr.lab.plot`)."""
    impl = IMPLS[impl_name]()
    if trials < 1:
        raise LabError("need at least one trial")
    impl.preflight()
    lab_name = name or f"bench-{impl_name}"
    topo = (load(topology or default_topology_path()).renamed(lab_name) if impl_name == "vipmgr"
            else seed_network(lab_name, topology))  # the topology's own agents would compete
    say(f"lab {topo.name} up")
    lab = deploy(topo)
    try:
        impl.start(lab, say)
        bench = FailoverBench(lab, impl, rate, duration, say=say, tcp_flows=tcp_flows)
        results = []
        for i in range(trials):
            result = bench.trial(i, fault)
            results.append(result)
            lab.fault(result.active_before, "heal")
        bench.wait_stable()
        if plot:
            median = sorted(range(len(results)), key=lambda i: results[i].outage_ms)[
                (len(results) - 1) // 2]
            Path(plot).write_text(svg(bench.traces[median]))
            say(f"plot of trial {median + 1} (median outage) written to {plot}")
    finally:
        if keep:
            say(f"lab {lab.name} left up: vipmgr lab down --name {lab.name}")
        else:
            destroy(lab.name)
    return {"impl": impl_name, "fault": fault, "rate": rate, "stream_seconds": duration,
            "fault_after": bench.fault_after, "advert_interval_ms": round(ADVERT_INTERVAL * 1000),
            **summarize(results), "per_trial": [r.to_dict() for r in results]}
