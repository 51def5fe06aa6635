#!/usr/bin/env python3
"""Heartbeat hot-path benchmark: build+send and receive+verify, median and p99 in µs.

What it measures (per heartbeat, HMAC-SHA256 on, require_auth on):

- codec build          Encoder.encode (struct + HMAC + checksums, cached scapy header
                       and name block); every advert has a new stamp, as the agent's do
- codec verify         Receiver.process (parse, checksums, HMAC, replay window)
- build+send           Encoder.encode + sendto on the real raw socket (IP_HDRINCL)
- receive+verify       recv_into on the raw socket + Receiver.process
- scapy build (naive)  IP()/VRRPv3()/Raw built by scapy per packet, for comparison

The socket figures use two throwaway network namespaces joined by a veth pair
(multicast to 224.0.0.18, addresses from 192.0.2.0/24), so they need root; the
namespaces are removed on exit. Without root only the codec figures are shown
(and the load estimate uses them, saying so).

Bounded: RUNS × ITER heartbeats per figure (defaults 5 × 2000), a few seconds.
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
from vipmgr.wire.codec import Encoder
from vipmgr.wire.keys import KeyRing
from vipmgr.wire.message import Advert, Frame, Role
from vipmgr.wire.receiver import Receiver
from vipmgr.wire.transport import HeartbeatTransport, in_netns, open_vrrp_socket

KEY = bytes(range(32))
SRC, DST = "192.0.2.1", "224.0.0.18"
BATCH = 100     # datagrams queued before draining: well under the default socket buffer
ADVERT = Advert(node="node-a", gateway="egress-1", vrid=42, role=Role.ACTIVE, epoch=123456,
                priority=200, interval_ms=20, egress_ip="198.51.100.10", healthy=True,
                etcd_reachable=True, heard=("node-b", "node-c"), stamp=1.0, echo_node="node-b",
                echo_stamp=1.0)


def fresh(n: int) -> Iterator[Advert]:
    """n adverts as the agent sends them: each with a new stamp (built outside the timing;
    making the Advert is the agent's cost, not the wire's)."""
    t0 = time.monotonic()
    return iter([dataclasses.replace(ADVERT, stamp=t0 + i * 0.02) for i in range(n)])


def receiver() -> Receiver:
    return Receiver("node-b", {"egress-1": 42}, KeyRing((KEY,), require_auth=True))


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


def bench_codec(n: int) -> dict[str, list[float]]:
    enc, rx = Encoder(KEY), receiver()
    adverts = fresh(n)
    build = timed(lambda: enc.encode(next(adverts), SRC), n)
    pkts = iter([enc.encode(a, SRC) for a in fresh(n)])
    verify = timed(lambda: rx.process(next(pkts), 0.0), n)
    assert rx.counters == {"accepted": n}, rx.counters
    return {"codec build": build, "codec verify": verify}


def bench_sockets(tx: HeartbeatTransport, rxsock: socket.socket, n: int) -> dict[str, list[float]]:
    """tx.send is the agent's call (source looked up per send); receive is what the
    transport's reader does per datagram: recv_into + Receiver.process."""
    rx, buf, adverts = receiver(), bytearray(1501), fresh(n + BATCH)
    send: list[float] = []
    recv: list[float] = []
    while len(send) < n:
        send += timed(lambda: tx.send(next(adverts)), BATCH)

        def one() -> None:
            got = rx.process(memoryview(buf)[:rxsock.recv_into(buf)], 0.0)
            assert isinstance(got, Frame), got
        recv += timed(one, BATCH)
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
                            Encoder(KEY), receiver(), lambda *_: None)
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
    runs, n = max(1, min(args.runs, 20)), max(BATCH, min(args.iter, 20000))
    results: dict[str, list[tuple[float, float]]] = {}
    with ExitStack() as stack:
        ok, why = netns_supported()
        pair = raw_pair(stack) if ok else None
        print(f"{runs} runs × {n} heartbeats, HMAC-SHA256, require_auth; sockets: "
              + ("raw, two namespaces over a veth pair" if ok else f"skipped ({why})"))
        for _ in range(runs):
            figures = bench_codec(n) | (bench_sockets(*pair, n) if pair else {}) \
                | bench_scapy(n // 10)
            for name, samples in figures.items():
                results.setdefault(name, []).append(summary(samples))
    # median and p99 columns: the median over runs of each run's median / p99
    print(f"{'µs per heartbeat':<22}{'median':>8}{'p99':>8}   (each run's median)")
    for name, per_run in results.items():
        med = statistics.median(m for m, _ in per_run)
        p99 = statistics.median(p for _, p in per_run)
        print(f"{name:<22}{med:>8.1f}{p99:>8.1f}   ({', '.join(f'{m:.1f}' for m, _ in per_run)})")
    send, recv = (statistics.median(m for m, _ in results.get(k) or results[c])
                  for k, c in (("build+send", "codec build"), ("receive+verify", "codec verify")))
    # one node of 10 three-node gateways, everyone at 20 ms: it sends 10 × 50 adverts/s
    # and receives twice that from its two peers per gateway
    load = 10 * 50 * (send + 2 * recv) / 1e6
    print(f"10 gateways × 20 ms, 3 nodes each: ≈{load * 100:.2f} % of a core per node"
          + ("" if pair else " (codec only)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
