#!/usr/bin/env python3
"""Dataplane benchmark: programming cost of a large gateway, one-VM changes, the dead-man refresh.

What it measures, in a throwaway network namespace it creates and removes
(needs root; addresses from 198.18.0.0/15 and 192.0.2.0/24):

- program worker       10,000 source IPs x 1,000 CIDRs, steering: one nft batch + 1 route/rule
- program gateway      the same selection on the active node, VIP mode: one nft batch,
                       the VIP, and 10,000 return routes (pipelined rtnetlink)
- add one VM           one more source on the worker (cached reconcile: one tiny batch)
- remove one VM        and back, back to back (the background conntrack dump for the
                       newly steered VM waits for a pause in the changes, at most 1 s)
- VM +/- spaced        the same, SPACING apart (the usual case: the dump runs in between)
- refresh              the dead-man re-arm of the 10k gateway (one nf_tables batch on the
                       arming thread): cost on the caller of refresh_nowait, time until armed,
                       and time until armed while verify reconciles run (every 20 ms)
- verify read          re-reading everything vipmgr owns (10k elements) from the kernel

Bounded: RUNS full programs (default 5), CHANGES one-VM changes (default 200),
SPACED spaced changes (default 40), REFRESHES refreshes (default 2000). Prints median,
p99 and max per figure.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import sys
import threading
import time
from typing import Callable

from vipmgr.dataplane.plan import (ActiveRole, GarpSettings, GatewayPlan, NodePlan, Selection,
                                   SteerPlan)
from vipmgr.dataplane.reconcile import Dataplane
from vipmgr.lab.netns import NetnsLab, netns_supported

SOURCES = 10_000
SPACING = 0.1  # s between spaced one-VM changes: longer than the steering flush's gather
CIDRS = 1_000


def sources(n: int) -> frozenset[str]:
    base = int(ipaddress.IPv4Address("198.18.0.1"))
    return frozenset(str(ipaddress.IPv4Address(base + i)) for i in range(n))


def cidrs(n: int) -> tuple[str, ...]:
    """Disjoint, non-adjacent /30s in 198.19.0.0/16 (nothing for the collapse to merge)."""
    base = int(ipaddress.IPv4Address("198.19.0.0"))
    return tuple(sorted(f"{ipaddress.IPv4Address(base + 8 * i)}/30" for i in range(n)))


def worker_plan(srcs: frozenset[str], dsts: tuple[str, ...]) -> NodePlan:
    return NodePlan("w", steering=(SteerPlan("bench", 1, (Selection("bench", srcs, dsts),),
                                             "192.0.2.12"),))


def gateway_plan(srcs: frozenset[str], dsts: tuple[str, ...]) -> NodePlan:
    routes = tuple(sorted((ip, "192.0.2.21") for ip in srcs))
    role = ActiveRole("VirtualIPAddress", "eth1", "192.0.2.100", True, routes, GarpSettings(0))
    return NodePlan("g", gateways=(GatewayPlan("bench", (Selection("bench", srcs, dsts),),
                                               role),))


def stats(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
    return (f"median {statistics.median(ms):9.3f} ms   p99 {p99:9.3f} ms   "
            f"max {ms[-1]:9.3f} ms   (n={len(ms)})")


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def refresh_during(dp: Dataplane, work: Callable[[], object], times: int) -> list[float]:
    """Refresh every 20 ms (the advert interval) while ``work`` runs ``times`` times on the
    reconcile thread; each refresh's time until it armed."""
    stop = threading.Event()
    samples: list[float] = []

    def refresher() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            assert dp.refresh("bench", 60.0)
            samples.append(time.perf_counter() - t0)
            stop.wait(0.02)

    thread = threading.Thread(target=refresher)
    thread.start()
    try:
        for _ in range(times):
            work()
    finally:
        stop.set()
        thread.join()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--refreshes", type=int, default=2000)
    parser.add_argument("--spaced", type=int, default=40)
    args = parser.parse_args()
    ok, why = netns_supported()
    if not ok:
        print(f"skipped: {why}", file=sys.stderr)
        return 2
    lab = NetnsLab(f"vbdp{os.getpid() % 100000}-")
    try:
        ns = lab.add("n")
        ns.ip("link", "add", "eth1", "type", "veth", "peer", "name", "eth1p")
        ns.up("eth1")
        ns.up("eth1p")
        ns.set_addr("eth1", "192.0.2.11/24")
        srcs, dsts = sources(SOURCES), cidrs(CIDRS)
        results: dict[str, list[float]] = {}
        with Dataplane(ns.name, deadman_timeout=60.0) as dp:
            for label, build in (("program worker", worker_plan), ("program gateway", gateway_plan)):
                plan = build(srcs, dsts)
                for _ in range(args.runs):
                    results.setdefault(label, []).append(timed(lambda: dp.reconcile(plan)))
                    assert not dp.reconcile(plan, verify=True), "second reconcile changed something"
                    results.setdefault("verify read", []).append(timed(dp.read))
                    dp.flush()
            base = worker_plan(srcs, dsts)
            dp.reconcile(base)
            extra = "198.18.200.200"
            grown = worker_plan(srcs | {extra}, dsts)
            for _ in range(args.changes):
                results.setdefault("add one VM", []).append(timed(lambda: dp.reconcile(grown)))
                results.setdefault("remove one VM", []).append(timed(lambda: dp.reconcile(base)))
            for _ in range(args.spaced):  # the steering flush's dump runs in between
                for plan in (grown, base):
                    time.sleep(SPACING)
                    results.setdefault("VM +/- spaced", []).append(timed(lambda: dp.reconcile(plan)))
            dp.flush()
            dp.reconcile(gateway_plan(srcs, dsts), arm=True)
            caller, trip = [], []
            for _ in range(args.refreshes):
                t0 = time.perf_counter()
                future = dp.refresh_nowait({"bench": 60.0})
                caller.append(time.perf_counter() - t0)
                assert future.result(5)["bench"]
                trip.append(time.perf_counter() - t0)
            results["refresh: caller"], results["refresh: armed"] = caller, trip
            results["refresh @verify"] = refresh_during(dp, lambda: dp.reconcile(
                gateway_plan(srcs, dsts), verify=True), args.runs)
            dp.flush()
        print(f"dataplane bench: {SOURCES} sources x {CIDRS} CIDRs, kernel {os.uname().release}")
        for label, samples in results.items():
            print(f"  {label:16s} {stats(samples)}")
    finally:
        lab.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
