#!/usr/bin/env python3
"""Heartbeat hot-path benchmark: build+send and receive+verify, median and p99 in µs.

What it measures, per call (one node's adverts for 1, 10 and 100 gateways: one
interval's worth; 100 is several datagrams), HMAC-SHA256 on, require_auth on:

- codec build          Encoder.encode (struct + HMAC + checksums, each record's static
                       part cached by shape); every call has a new stamp and new echo
                       stamps, as the agent's do
- codec verify         Receiver.process of each datagram of the call (parse,
                       checksums, HMAC, replay window)
- build+send           HeartbeatTransport.send on the real raw socket (IP_HDRINCL)
- receive+verify       recv_into on the raw socket + Receiver.process, per datagram
- scapy build (naive)  IP()/VRRPv3()/Raw built by scapy per packet, for comparison

The socket figures use two throwaway network namespaces joined by a veth pair
(multicast to 224.0.0.18, addresses from 192.0.2.0/24), so they need root; the
namespaces are removed on exit. Without root only the codec figures are shown
(and the load estimate uses them, saying so).

Bounded: RUNS × ITER calls per figure (defaults 5 × 2000; ITER / 10, at least
100, for 100 gateways), a few tens of seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import statistics
import sys
import time
from contextlib import ExitStack
from typing import Callable, Iterator

from scapy.layers.inet import IP
from scapy.layers.vrrp import VRRPv3
from scapy.packet import Raw

from vipmgr.lab.netns import NetnsLab, netns_supported
from vipmgr.wire.codec import MAX_DATAGRAM, Encoder
from vipmgr.wire.keys import KeyRing
from vipmgr.wire.message import Advert, Frame, Role
from vipmgr.wire.receiver import Receiver
from vipmgr.wire.transport import HeartbeatTransport, in_netns, open_vrrp_socket

KEY = bytes(range(32))
SRC, DST = "192.0.2.1", "224.0.0.18"
GATEWAYS = (1, 10, 100)
IN_FLIGHT = 50  # datagrams queued before draining: well under the default socket buffer
ADVERT = Advert(node="node-a", gateway="egress-1", vrid=42, role=Role.ACTIVE, epoch=123456,
                priority=200, interval_ms=20, egress_ip="198.51.100.10", healthy=True,
                etcd_reachable=True, heard=("node-b", "node-c"), stamp=1.0, echo_node="node-b",
                echo_stamp=1.0)


def gateway_names(n: int) -> list[str]:
    return [f"egress-{i:03d}" for i in range(n)]


def fresh(n: int, calls: int) -> Iterator[list[Advert]]:
    """``calls`` advert sets of ``n`` gateways as the agent sends them: each with a new
    stamp and new echo stamps (built outside the timing; making the adverts is the agent's
    cost, not the wire's)."""
    t0 = time.monotonic()
    return iter([[dataclasses.replace(ADVERT, gateway=g, vrid=1 + i % 255, stamp=t0 + c * 0.02,
                                      echo_stamp=t0 + c * 0.02 - 0.005)
                  for i, g in enumerate(gateway_names(n))] for c in range(calls)])


def datagrams(n: int) -> int:
    """How many datagrams one call for ``n`` gateways takes (the split)."""
    return len(Encoder(KEY).encode(next(fresh(n, 1)), SRC))


def receiver(n: int) -> Receiver:
    return Receiver("node-b", {g: 1 + i % 255 for i, g in enumerate(gateway_names(n))},
                    KeyRing((KEY,), require_auth=True))


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1000)
    return out


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def bench_codec(gw: int, calls: int) -> dict[str, list[float]]:
    enc, rx = Encoder(KEY), receiver(gw)
    adverts = fresh(gw, calls)
    build = timed(lambda: enc.encode(next(adverts), SRC), calls)
    calls_parts = iter([enc.encode(a, SRC) for a in fresh(gw, calls)])
    verify = timed(lambda: [rx.process(p, 0.0) for p in next(calls_parts)], calls)
    assert set(rx.counters) == {"accepted"}, rx.counters
    return {"codec build": build, "codec verify": verify}


def bench_sockets(tx: HeartbeatTransport, rxsock: socket.socket, gw: int,
                  calls: int) -> dict[str, list[float]]:
    """tx.send is the agent's call (source looked up per send); receive is what the
    transport's reader does per datagram: recv_into + Receiver.process, summed over the
    datagrams of a call."""
    rx, buf = receiver(gw), bytearray(MAX_DATAGRAM + 1)
    parts = datagrams(gw)
    batch = max(1, IN_FLIGHT // parts)
    adverts = fresh(gw, calls + batch)
    send: list[float] = []
    recv: list[float] = []

    def one() -> None:
        for _ in range(parts):
            got = rx.process(memoryview(buf)[:rxsock.recv_into(buf)], 0.0)
            assert isinstance(got, Frame), got
    while len(send) < calls:
        send += timed(lambda: tx.send(next(adverts)), batch)
        recv += timed(one, batch)
    assert tx.send_errors == {}, tx.send_errors
    return {"build+send": send, "receive+verify": recv}


def bench_scapy(n: int) -> dict[str, list[float]]:
    return {"scapy build (naive)": timed(lambda: bytes(
        IP(src=SRC, dst=DST, ttl=255) / VRRPv3(vrid=42, priority=200, adv=2,
                                               addrlist=["198.51.100.10"]) / Raw(b"x" * 90)), n)}


def raw_pair(stack: ExitStack) -> tuple[HeartbeatTransport, socket.socket]:
    """A sending transport in namespace a and a blocking raw socket in b, on one veth."""
    lab = NetnsLab(f"vbw{os.getpid() % 100000}-")
    stack.callback(lab.close)
    lab.add("a")
    lab.add("b")
    lab.link("a", "eth0", "b", "eth0")
    lab["a"].set_addr("eth0", f"{SRC}/24")
    lab["b"].set_addr("eth0", "192.0.2.2/24")
    tx = HeartbeatTransport(in_netns(lab["a"].name, lambda: open_vrrp_socket("eth0")), "eth0",
                            Encoder(KEY), receiver(1), lambda *_: None)
    rx = in_netns(lab["b"].name, lambda: open_vrrp_socket("eth0"))
    stack.callback(tx.close)
    stack.callback(rx.close)
    rx.setblocking(True)
    rx.settimeout(2.0)
    return tx, rx


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--iter", type=int, default=2000)
    args = ap.parse_args(argv)
    runs, n = max(1, min(args.runs, 20)), max(IN_FLIGHT * 2, min(args.iter, 20000))
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with ExitStack() as stack:
        ok, why = netns_supported()
        pair = raw_pair(stack) if ok else None
        few = max(IN_FLIGHT * 2, n // 10)     # calls for 100 gateways
        print(f"{runs} runs × {n} calls ({few} for 100 gateways), HMAC-SHA256, "
              "require_auth; sockets: "
              + ("raw, two namespaces over a veth pair" if ok else f"skipped ({why})"))
        bench_codec(GATEWAYS[-1], IN_FLIGHT)     # warm-up: caches, allocator, CPU clock
        for _ in range(runs):
            for gw in GATEWAYS:
                calls = few if gw >= 100 else n
                figures = bench_codec(gw, calls) | (bench_sockets(*pair, gw, calls)
                                                    if pair else {})
                for name, samples in figures.items():
                    results.setdefault((name, gw), []).append(summary(samples))
            for name, samples in bench_scapy(n // 10).items():
                results.setdefault((name, 1), []).append(summary(samples))
    parts = {gw: datagrams(gw) for gw in GATEWAYS}
    # median and p99 columns: the median over runs of each run's median / p99
    print(f"{'µs per call':<22}{'gw':>4}{'dgrams':>7}{'median':>8}{'p99':>8}   (each run's median)")
    medians: dict[tuple[str, int], float] = {}
    for (name, gw), per_run in results.items():
        medians[name, gw] = med = statistics.median(m for m, _ in per_run)
        p99 = statistics.median(p for _, p in per_run)
        print(f"{name:<22}{gw:>4}{parts[gw]:>7}{med:>8.1f}{p99:>8.1f}   "
              f"({', '.join(f'{m:.1f}' for m, _ in per_run)})")
    # one node of G three-node gateways, everyone at 20 ms: it sends its G adverts in
    # 50 calls/s and receives as many from each of its two peers
    for gw in GATEWAYS[1:]:
        send, recv = (medians.get((k, gw)) or medians[c, gw]
                      for k, c in (("build+send", "codec build"),
                                   ("receive+verify", "codec verify")))
        load = 50 * (send + 2 * recv) / 1e6
        print(f"{gw} gateways × 20 ms, 3 nodes each: {50 * parts[gw]} datagrams/s sent, "
              f"≈{load * 100:.2f} % of a core per node" + ("" if pair else " (codec only)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
