"""Inventory at scale: a cluster's VMs and policies must never be able to move a role.

The seed lab with its agents, plus N VirtualMachines and P policies written into
etcd (each policy selects N / P VMs, half of them on each worker); then C VMs
change labels per second for S seconds (each change moves a VM to the next
policy). Printed: every agent's event-loop lag (from the
``vipmgr_event_loop_lag_seconds`` histogram, the part accrued during the churn),
role changes during the churn (``vipmgr_gateway_transitions_total``), agent CPU
and RSS, and how long after the last change the worker's kernel had it.

    .venv/bin/python bench/inventory.py --vms 10000 --policies 1000 --rate 100 --seconds 60

Addresses: synthetic VMs use 198.19.0.0/16 (benchmark range), destinations
203.0.113.0/24; nothing is sent to them — this measures the control path.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

from vipmgr.lab.runtime import Lab, deploy, destroy
from vipmgr.lab.topology import default_topology_path, load

AGENTS = ("gw-a", "gw-b", "gw-c", "worker-a", "worker-b")
WORKERS = ("worker-a", "worker-b")
METRICS = "http://127.0.0.1:9750/metrics"

# Runs inside the etcd namespace: writes the inventory, then churns it at a pace.
WRITER = r'''
import asyncio, json, sys, time
from vipmgr.store.client import EtcdSettings, connect
vms, policies, rate, seconds = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                float(sys.argv[4]))
P = "/vipmgr/resources"
def vm(i, pol):
    return json.dumps({"apiVersion": "vipmgr.io/v1alpha1", "kind": "VirtualMachine",
        "metadata": {"name": f"bench-{i}", "namespace": "bench", "labels": {"bench": f"p{pol}"}},
        "spec": {"nodeName": ("worker-a", "worker-b")[i % 2],
                 "addresses": [f"198.19.{i // 250}.{i % 250 + 1}"]}}).encode()
def policy(p):
    return json.dumps({"apiVersion": "network.deckhouse.io/v1alpha1", "kind": "EgressGatewayPolicy",
        "metadata": {"name": f"bench-p{p}"},
        "spec": {"destinationCIDRs": ["203.0.113.0/24"], "egressGatewayName": "egress-gw",
                 "selectors": [{"podSelector": {"matchLabels": {"bench": f"p{p}"}}}]}}).encode()
async def main():
    client = await connect(EtcdSettings.from_options())
    mode = sys.argv[5]
    if mode == "load":
        for p in range(policies):
            await client.put(f"{P}/egressgatewaypolicies/bench-p{p}".encode(), policy(p))
        for i in range(vms):
            await client.put(f"{P}/virtualmachines/bench/bench-{i}".encode(), vm(i, i % policies))
    else:
        n = int(rate * seconds)
        start = time.monotonic()
        for k in range(n):
            i = (k * 7919) % vms  # spread over the inventory
            await client.put(f"{P}/virtualmachines/bench/bench-{i}".encode(),
                             vm(i, (i + 1 + k) % policies))
            delay = start + (k + 1) / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        print(json.dumps({"last_vm": i, "last_policy": (i + 1 + k) % policies,
                          "last_ip": f"198.19.{i // 250}.{i % 250 + 1}",
                          "node": ("worker-a", "worker-b")[i % 2], "at": time.time(),
                          "sent": n, "took": time.monotonic() - start}))
    await client.close()
asyncio.run(main())
'''


def scrape(lab: Lab, node: str) -> str:
    out = lab.exec(node, [sys.executable, "-m", "vipmgr.lab.echo", "get", METRICS], timeout=30)
    return out.stdout


def histogram(text: str, name: str) -> dict[float, float]:
    out: dict[float, float] = {}
    for m in re.finditer(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', text, re.M):
        out[float(m.group(1))] = float(m.group(2))
    return out


def counter_sum(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def quantile_bound(delta: dict[float, float], q: float) -> float:
    """The smallest bucket bound holding fraction ``q`` of the samples (inf: none does)."""
    total = delta.get(float("inf"), 0.0)
    for bound in sorted(delta):
        if total and delta[bound] >= q * total:
            return bound
    return float("inf")


def proc_stats(lab: Lab, node: str) -> tuple[float, float]:
    """(CPU seconds, RSS MiB) of the node's main process."""
    pid = lab.node(node).pid
    stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    ticks = (int(stat[11]) + int(stat[12])) / 100.0
    rss = int(open(f"/proc/{pid}/statm").read().split()[1]) * 4096 / 2**20
    return ticks, rss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=10000)
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=100, help="VM label changes per second")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--name", default="binv")
    ap.add_argument("--keep", action="store_true", help="leave the lab up (vipmgr lab down -n NAME)")
    args = ap.parse_args()
    destroy(args.name)
    lab = deploy(load(default_topology_path()).renamed(args.name))
    try:
        t0 = time.monotonic()
        out = lab.exec("etcd", [sys.executable, "-c", WRITER, str(args.vms), str(args.policies),
                                "0", "0", "load"], timeout=1200)
        assert out.returncode == 0, out.stderr
        print(f"inventory written: {args.vms} VMs, {args.policies} policies in "
              f"{time.monotonic() - t0:.1f} s", flush=True)
        time.sleep(10)  # every agent digests the load
        before = {n: scrape(lab, n) for n in AGENTS}
        cpu0 = {n: proc_stats(lab, n) for n in AGENTS}
        t1 = time.monotonic()
        out = lab.exec("etcd", [sys.executable, "-c", WRITER, str(args.vms), str(args.policies),
                                str(args.rate), str(args.seconds), "churn"],
                       timeout=args.seconds + 600)
        assert out.returncode == 0, out.stderr
        last = json.loads(out.stdout)
        ip, pol, node = last["last_ip"], f"bench-p{last['last_policy']}", last["node"]
        caught_up = None
        while time.time() - last["at"] < 30:
            sets = lab.exec(node, ["nft", "list", "set", "inet", "vipmgr",
                                   f"p-{pol}-local"]).stdout
            if re.search(rf"\b{re.escape(ip)}\b", sets):
                caught_up = time.time() - last["at"]
                break
            time.sleep(0.02)
        span = time.monotonic() - t1
        after = {n: scrape(lab, n) for n in AGENTS}
        cpu1 = {n: proc_stats(lab, n) for n in AGENTS}
        print(f"churn: {last['sent']} changes in {last['took']:.1f} s "
              f"({last['sent'] / last['took']:.0f}/s); last change in the kernel of {node} "
              + (f"{caught_up * 1e3:.0f} ms later" if caught_up is not None else "NEVER (30 s)"))
        print(f"{'agent':<10} {'lag p50':>8} {'lag p99':>8} {'lag max':>8} {'samples':>8} "
              f"{'roles':>6} {'cpu %':>6} {'rss MiB':>8}")
        for n in AGENTS:
            h0 = histogram(before[n], "vipmgr_event_loop_lag_seconds")
            h1 = histogram(after[n], "vipmgr_event_loop_lag_seconds")
            delta = {b: h1.get(b, 0) - h0.get(b, 0) for b in h1}
            roles = counter_sum(after[n], "vipmgr_gateway_transitions_total") \
                - counter_sum(before[n], "vipmgr_gateway_transitions_total")
            cpu = (cpu1[n][0] - cpu0[n][0]) / span * 100
            fmt = lambda s: "n/a" if s == float("inf") else f"≤{s * 1e3:g}ms"  # noqa: E731
            top = max((b for b in delta if delta[b] > delta.get(_below(delta, b), 0)),
                      default=float("inf"))
            print(f"{n:<10} {fmt(quantile_bound(delta, 0.5)):>8} "
                  f"{fmt(quantile_bound(delta, 0.99)):>8} {fmt(top):>8} "
                  f"{delta.get(float('inf'), 0):>8.0f} {roles:>6.0f} {cpu:>6.1f} "
                  f"{cpu1[n][1]:>8.0f}")
        return 0
    finally:
        if not args.keep:
            destroy(args.name)


def _below(delta: dict[float, float], bound: float) -> float:
    smaller = [b for b in delta if b < bound]
    return max(smaller) if smaller else -1.0


if __name__ == "__main__":
    sys.exit(main())
