#!/usr/bin/env python3
"""Conntrack replication benchmark: what following new flows costs the active node.

In two throwaway network namespaces (needs root; 198.51.100.0/24 between them,
flows from 198.18.0.0/15 to 203.0.113.0/24 SNATed to 192.0.2.100):

- a load generator creates SNAT entries in the active's namespace at RATE new flows
  per second for SECONDS (ctnetlink creates, 100 per send; each entry expires after
  LIFETIME s, so the kernel also emits DESTROY events at the same rate: the steady
  state of RATE new flows/s), in this process;
- the sender (vipmgr.agent.ctsync.ConntrackSync serving the gateway) runs in its own
  process in that namespace: its CPU time (utime + stime from /proc) over the load
  window, as a share of one core, is the figure of the issue (target <= 10 % at
  10,000 new flows/s);
- the standby (a second ConntrackSync, following) runs in the other namespace and
  reports how many flows it holds, the replication lag it saw (receive time minus
  send stamp, per frame), and how long injecting its whole cache takes (the work a
  take waits for before the VIP is added).

Bounded: at most 20,000 flows/s, 30 s per run, RUNS runs per rate.

    python bench/ctsync.py --rates 1000,10000 --seconds 5 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time

from vipmgr.agent.ctsync import ConntrackSync, NullSyncMetrics, SyncGateway
from vipmgr.dataplane.ctsync import UDP, Flow, create_message
from vipmgr.dataplane.netlink import NETLINK_NETFILTER, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from vipmgr.dataplane.kernel import NetnsThread
from vipmgr.lab.netns import NetnsLab, netns_supported
from vipmgr.wire.keys import KeyRing

VIP = "192.0.2.100"
A_IP, B_IP = "198.51.100.1", "198.51.100.2"
PORT = 17613
KEY = KeyRing((b"ctsync-benchmark-key-0123456789",))
MAX_RATE, MAX_SECONDS = 20_000, 30.0
BATCH = 100
LIFETIME = 2  # s: each generated entry expires by itself (DESTROY events)


class Seen(NullSyncMetrics):
    def __init__(self) -> None:
        self.samples: list[float] = []
        self.sent = 0

    def ctsync_replicated(self, gateway: str, direction: str, count: int) -> None:
        if direction == "sent":
            self.sent += count

    def ctsync_lag(self, gateway: str, seconds: float) -> None:
        self.samples.append(seconds)


async def _role(role: str, seconds: float) -> None:
    """Child process: the sender or the standby, for ``seconds``; prints a JSON line."""
    gw = SyncGateway("bench", VIP, (B_IP,) if role == "sender" else (A_IP,))
    seen = Seen()
    sync = ConntrackSync(role, lambda: KEY, lambda: None, seen, port=PORT)
    await sync.start()
    sync.configure({"bench": gw}, {"bench"} if role == "sender" else set())
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.sleep(seconds)
    out: dict = {}
    if role == "standby":
        state = sync.following["bench"]
        out = {"entries": len(state.flows), "synced": state.synced, "lag": seen.samples}
        sync.inject_budget = 60.0
        started = time.monotonic()
        got = (await sync.before_take(["bench"])).get("bench")
        out["inject_s"] = time.monotonic() - started
        out["injected"] = got.created if got else 0
    else:
        out = {"sent": seen.sent}
    await sync.close()
    print(json.dumps(out), flush=True)


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def generate(rate: int, seconds: float, seed: int) -> int:
    """Create ``rate`` SNAT entries a second for ``seconds`` (this thread's namespace):
    create requests without ACKs, BATCH per send (the kernel answers failures only), so
    the generator keeps up with 10,000/s on a loaded host."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.bind((0, 0))
    sock.setblocking(False)
    vip = socket.inet_aton(VIP)
    flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL
    rng = random.Random(seed)
    made = 0
    start = time.monotonic()
    try:
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate) - made
            if due <= 0:
                time.sleep(BATCH / rate / 4)
                continue
            batch = []
            for _ in range(min(due, BATCH)):
                src = (0xC6120000 + rng.randrange(1 << 17)).to_bytes(4, "big")  # 198.18/15
                sport = rng.randrange(1024, 65536)
                flow = Flow(UDP, socket.inet_ntoa(src), sport,
                            f"203.0.113.{rng.randrange(1, 255)}", rng.randrange(1024, 65536),
                            sport)
                batch.append(create_message(made, flags, vip, flow, 0, LIFETIME))
                made += 1
            sock.send(b"".join(batch))
            try:
                while sock.recv(65536):
                    pass  # failures (a rare EEXIST clash): no new flow, nothing to do
            except BlockingIOError:
                pass
    finally:
        sock.close()
    return made


def run_once(lab: NetnsLab, rate: int, seconds: float, seed: int) -> dict:
    for ns in ("a", "b"):  # the previous run's entries (injected ones live 120 s)
        lab[ns].run(["conntrack", "-F"], check=False)
    here = os.path.abspath(__file__)
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(here))}
    sender = subprocess.Popen(lab["a"].argv([sys.executable, here, "--role", "sender",
                                             "--seconds", str(seconds + LIFETIME + 2)]),
                              stdout=subprocess.PIPE, text=True, env=env)
    standby = subprocess.Popen(lab["b"].argv([sys.executable, here, "--role", "standby",
                                              "--seconds", str(seconds + 1.5)]),
                               stdout=subprocess.PIPE, text=True, env=env)
    lab.processes += [sender, standby]
    for p in (sender, standby):
        assert json.loads(p.stdout.readline())["ready"]
    time.sleep(0.5)
    gen = NetnsThread(lab["a"].name, "bench-gen")
    try:
        cpu0, t0 = cpu_seconds(sender.pid), time.monotonic()
        made = gen.call(generate, rate, seconds, seed)
        cpu1, t1 = cpu_seconds(sender.pid), time.monotonic()
    finally:
        gen.close()
    result = json.loads(standby.stdout.readline())
    sent = json.loads(sender.stdout.readline())["sent"]
    sender.wait(seconds + LIFETIME + 10)
    standby.wait(60)
    lag = sorted(result["lag"]) or [0.0]
    return {"rate": made / (t1 - t0), "cpu": (cpu1 - cpu0) / (t1 - t0),
            "us_per_event": (cpu1 - cpu0) / max(sent, 1) * 1e6, "sent": sent,
            "entries": result["entries"], "lag_p50": lag[len(lag) // 2],
            "lag_p99": lag[int(len(lag) * 0.99)], "lag_max": lag[-1],
            "inject_s": result["inject_s"], "injected": result["injected"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="1000,10000")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--role", choices=["sender", "standby"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        asyncio.run(_role(args.role, args.seconds))
        return 0
    rates = [int(r) for r in args.rates.split(",")]
    if any(not 0 < r <= MAX_RATE for r in rates) or not 0 < args.seconds <= MAX_SECONDS:
        print(f"rates must be 1..{MAX_RATE}, seconds 0..{MAX_SECONDS:g}", file=sys.stderr)
        return 2
    ok, why = netns_supported()
    if not ok:
        print(f"skipped: {why}", file=sys.stderr)
        return 2
    lab = NetnsLab(f"vbct{os.getpid() % 100000}-")
    try:
        lab.add("a")
        lab.add("b")
        lab.link("a", "eth0", "b", "eth0")
        lab["a"].set_addr("eth0", f"{A_IP}/24")
        lab["b"].set_addr("eth0", f"{B_IP}/24")
        print(f"{'new flows/s':>12} {'sender CPU':>11} {'per event':>10} {'standby holds':>14} "
              f"{'lag p50/p99/max ms':>20} {'inject cache':>18}")
        for rate in rates:
            for run in range(args.runs):
                r = run_once(lab, rate, args.seconds, seed=run)
                print(f"{r['rate']:>12.0f} {r['cpu'] * 100:>10.1f}% "
                      f"{r['us_per_event']:>7.1f} us {r['entries']:>14} "
                      f"{r['lag_p50'] * 1e3:>6.1f}/{r['lag_p99'] * 1e3:.1f}/"
                      f"{r['lag_max'] * 1e3:.1f} "
                      f"{r['injected']:>7} in {r['inject_s'] * 1e3:.0f} ms", flush=True)
    finally:
        lab.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
