"""Scale benchmark on the seed lab (docs/lab.md, "bench scale"): what the agents cost as
gateways are added, how many heartbeat datagrams the segment carries, and a crash of
the node holding a third of the gateways.

One run deploys its own lab (``bench-scale`` unless named) and starts the agents,
with a short placement hold-down so ``gateways`` VirtualIPAddress gateways spread
over the three egress nodes quickly. Idle figures are taken twice, with the seed's
one gateway and with all of them: CPU of each agent process (utime + stime from
``/proc``, one core = 100 %), its RSS, and the protocol-112 datagrams the
``internet`` router sees on the public segment. Then the node that holds the seed
gateway (about a third of all, by placement) is crashed while the failover bench's
UDP stream runs through the seed gateway (wrong source, outage) and an ARP prober
asks for each of up to ``SAMPLED_VIPS`` of that node's VIPs every 10 ms: for each,
the time from the crash until another node answers, and any probe two nodes
answered.

keepalived, side by side in the same run (on a lab of its own afterwards, so
the two never share the CPU): one VRRPv3 instance per gateway at the same advert
interval, each owning one of the same VIPs; idle CPU, RSS and datagrams the same
way.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from vipmgr.lab.analysis import dual_answers, percentile
from vipmgr.lab.bench import (
    AGENT_NODES, ARP_INTERVAL, ECHO_NODE, GATEWAY_NAME, GATEWAYS, PY, VIP, FailoverBench, Say,
    Vipmgr, _quiet, agent_cmd, keepalived_conf, seed_network, start_keepalived,
)
from vipmgr.lab.placement import FIRST_EXTRA_VIP, agent_config, gateway_manifests
from vipmgr.lab.probe import read_arp_log
from vipmgr.lab.runtime import Lab, LabError, deploy, destroy

SAMPLE = 10.0            # seconds of idle per measurement
CALM = 3.0               # seconds after the last change before an idle measurement
HOLD_DOWN = 2.0          # the agents' placementHoldDown: gateways spread within seconds
SETTLE_TIMEOUT = 90.0
SAMPLED_VIPS = 16        # VIPs of the crashed node probed by ARP (the issue: at least 10)
PROBE_FOR = 4.0          # seconds of ARP probing around the crash (it hits 1 s in)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def gateway_vip(name: str) -> str:
    """The VIP of the seed gateway or of gwNN (vipmgr.lab.placement.gateway_manifests)."""
    return VIP if name == GATEWAY_NAME else f"192.0.2.{FIRST_EXTRA_VIP + int(name[2:]) - 1}"


def _session(sid: int) -> list[tuple[int, list[str]]]:
    """(pid, /proc/pid/stat fields after the name) of every process in session ``sid``: the
    lab starts each main process in a session of its own, so this is it and its children
    (keepalived's VRRP child, an agent's helpers)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone meanwhile
        if int(fields[3]) == sid:
            out.append((int(entry.name), fields))
    return out


def _cpu_seconds(sid: int) -> float:
    """utime + stime of the session's processes, all threads."""
    return sum(int(f[11]) + int(f[12]) for _pid, f in _session(sid)) / CLK_TCK


def _rss_mb(sid: int) -> float:
    total = 0
    for pid, _fields in _session(sid):
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
    return total / 1024


def idle(lab: Lab, nodes: tuple[str, ...], seconds: float = SAMPLE) -> dict:
    """CPU % and RSS of each node's main process, and heartbeat datagrams per second on
    the public segment, over ``seconds`` of calm."""
    # each main process leads a session of its own: its pid is the session id
    sessions = {n: lab.node(n).pid for n in nodes if lab.process_state(n) == "running"}
    counter = subprocess.Popen(
        lab.netns(ECHO_NODE).argv([PY, "-m", "vipmgr.lab.probe", "vrrp", "--iface", "eth0",
                                   "--duration", str(seconds)]),
        env=lab.env(ECHO_NODE), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    before = {n: _cpu_seconds(sid) for n, sid in sessions.items()}
    out, err = counter.communicate(timeout=seconds + 30)
    wall = time.monotonic() - t0
    cpu = {n: round(100 * (_cpu_seconds(sid) - before[n]) / wall, 2)
           for n, sid in sessions.items()}
    try:
        seen = json.loads(out)
    except json.JSONDecodeError:
        raise LabError(f"heartbeat counter failed: {err.strip()}") from None
    packets = sum(seen["packets"].values())
    return {"cpu_pct": cpu, "rss_mb": {n: round(_rss_mb(sid), 1) for n, sid in sessions.items()},
            "heartbeat_datagrams_per_s": round(packets / seen["seconds"], 1),
            "heartbeat_bytes_per_s": round(sum(seen["bytes"].values()) / seen["seconds"])}


def holders(lab: Lab) -> dict[str, str | None]:
    """gateway -> active node, from ``vipmgr status -o json`` ({} when it did not answer)."""
    out = lab.exec("etcd", ["vipmgr", "status", "-o", "json"], timeout=30)
    try:
        return {g["name"]: g.get("active") for g in json.loads(out.stdout)["gateways"]}
    except (json.JSONDecodeError, KeyError):
        return {}


def wait_spread(lab: Lab, count: int, nodes: tuple[str, ...], say: Say) -> dict[str, str]:
    """Until all ``count`` gateways are active, none on a node outside ``nodes``, and no
    node holds more than ⌈count / len(nodes)⌉; the holders."""
    bound = -(-count // len(nodes))
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        now = holders(lab)
        loads = {n: sum(1 for h in now.values() if h == n) for n in nodes}
        if len(now) == count and all(h in nodes for h in now.values()) \
                and max(loads.values()) <= bound:
            say(f"{count} gateways spread: " + ", ".join(f"{n} {c}" for n, c in loads.items()))
            return {g: str(h) for g, h in now.items()}
        time.sleep(1.0)
    raise LabError(f"{count} gateways did not spread over {', '.join(nodes)} within "
                   f"{SETTLE_TIMEOUT:g} s: {holders(lab)}")


def crash(lab: Lab, impl: Vipmgr, placed: dict[str, str], say: Say) -> dict:
    """Crash the seed gateway's node during a failover trial, with ARP probers on a sample
    of that node's other VIPs; per VIP the time until another node answers."""
    victim = placed[GATEWAY_NAME]
    mine = sorted(g for g, n in placed.items() if n == victim)
    sampled = [GATEWAY_NAME] + [g for g in mine if g != GATEWAY_NAME][:SAMPLED_VIPS - 1]
    trial = FailoverBench(lab, impl, duration=PROBE_FOR, say=say)
    trial.wait_stable()
    macs = {node: mac for mac, node in trial.macs.items()}
    wd = lab.workdir(ECHO_NODE)
    probers = {g: subprocess.Popen(
        lab.netns(ECHO_NODE).argv([PY, "-m", "vipmgr.lab.probe", "arp", gateway_vip(g),
                                   "--iface", "eth0", "--interval", str(ARP_INTERVAL),
                                   "--duration", str(PROBE_FOR + 1.0),
                                   "--log", str(wd / f"scale-arp-{g}.log")]),
        env=lab.env(ECHO_NODE), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for g in sampled if g != GATEWAY_NAME}
    try:
        say(f"crash {victim} (holds {len(mine)} of {len(placed)} gateways; ARP-probing "
            f"{len(sampled)} of their VIPs)")
        result = trial.trial(0, "crash", target=victim)
        for proc in probers.values():
            proc.wait(timeout=PROBE_FOR + 10)
    finally:
        for proc in probers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    takeover: dict[str, float | None] = {GATEWAY_NAME: None}
    dual = result.dual_answer
    for g in probers:
        answers = read_arp_log(wd / f"scale-arp-{g}.log")
        elsewhere = [a.arrival for a in answers
                     if a.arrival > result.fault_at and a.mac != macs[victim]]
        takeover[g] = round((min(elsewhere) - result.fault_at) * 1000, 1) if elsewhere else None
        dual += dual_answers(answers)[0]
    # the seed gateway's ARP prober is the trial's: its outage is the stream's
    takeover[GATEWAY_NAME] = round(result.outage_ms, 1) if result.recovered else None
    times = [t for t in takeover.values() if t is not None]
    return {"victim": victim, "held": len(mine), "sampled": len(sampled),
            "taken_over": len(times), "takeover_ms": takeover,
            "takeover_p50_ms": round(percentile(times, 50), 1) if times else None,
            "takeover_p99_ms": round(percentile(times, 99), 1) if times else None,
            "takeover_max_ms": max(times) if times else None,
            "wrong_source": result.wrong_source, "dual_answer": dual,
            "seed_outage_ms": round(result.outage_ms, 1), "lost": result.lost}


def run_vipmgr(gateways: int, name: str, topology: str | None, keep: bool, say: Say,
               sample: float) -> dict:
    topo = seed_network(name, topology)
    say(f"lab {topo.name} up")
    lab = deploy(topo)
    try:
        impl = Vipmgr()
        impl.preflight()
        for node in AGENT_NODES:
            cfg = lab.workdir(node) / "agent.yaml"
            cfg.write_text(agent_config(HOLD_DOWN))
            lab.start(node, [*agent_cmd(node), "--config", str(cfg)])
        impl.start(lab, say)
        wait_spread(lab, 1, GATEWAYS, say)
        time.sleep(CALM)
        say(f"idle with 1 gateway, {sample:g} s")
        one = idle(lab, AGENT_NODES, sample)
        path = lab.workdir("etcd") / "gateways.yaml"
        path.write_text(gateway_manifests(gateways - 1))
        out = lab.exec("etcd", ["vipmgr", "apply", "-f", str(path)], timeout=60)
        if out.returncode != 0:
            raise LabError(f"vipmgr apply: {(out.stderr or out.stdout).strip()}")
        placed = wait_spread(lab, gateways, GATEWAYS, say)
        time.sleep(CALM)
        say(f"idle with {gateways} gateways, {sample:g} s")
        many = idle(lab, AGENT_NODES, sample)
        return {"one": one, "many": many, "crash": crash(lab, impl, placed, say)}
    finally:
        if keep:
            say(f"lab {lab.name} left up: vipmgr lab down --name {lab.name}")
        else:
            destroy(lab.name)


def keepalived_instances(priority: int, gateways: int) -> list:
    """One VRRPv3 instance per gateway (VRID 1.., the same VIPs as vipmgr's)."""
    names = [GATEWAY_NAME] + [f"gw{i:02d}" for i in range(1, gateways)]
    return [(g.replace("-", "_"), i + 1, priority, (f"{gateway_vip(g)}/32 dev eth1",))
            for i, g in enumerate(names)]


def run_keepalived(gateways: int, name: str, topology: str | None, say: Say,
                   sample: float) -> dict:
    topo = seed_network(name, topology)
    say(f"lab {topo.name} up (keepalived, one instance per gateway)")
    lab = deploy(topo)
    try:
        out = {}
        for count in (1, gateways):
            for i, gw in enumerate(GATEWAYS):
                lab.stop(gw)
                start_keepalived(lab, gw, keepalived_conf(gw, keepalived_instances(
                    150 - 10 * i, count)))
            time.sleep(CALM + 2.0)
            say(f"keepalived idle with {count} instance(s), {sample:g} s")
            out["one" if count == 1 else "many"] = idle(lab, GATEWAYS, sample)
        return out
    finally:
        destroy(lab.name)


def run_scale(gateways: int = 100, *, name: str | None = None, topology: str | None = None,
              keep: bool = False, keepalived: bool = True, sample: float = SAMPLE,
              say: Say = _quiet) -> dict:
    """The whole benchmark; the report (see the module docstring)."""
    if not 2 <= gateways <= 151:
        raise LabError("between 2 and 151 gateways (the seed's and gw01..gw150)")
    report = {"gateways": gateways, "sample_s": sample,
              "vipmgr": run_vipmgr(gateways, name or "bench-scale", topology, keep, say, sample)}
    if keepalived and shutil.which("keepalived") is not None:
        report["keepalived"] = run_keepalived(gateways, (name or "bench-scale") + "-ka",
                                              topology, say, sample)
    return report
