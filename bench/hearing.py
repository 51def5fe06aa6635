#!/usr/bin/env python3
"""What hearing one peer's heartbeat costs the agent, by the number of gateways it carries.

The wire bench (bench/wire.py) times decoding; this one times everything after it as
well: one datagram from the active node of G gateways, received by a node that is a
standby member of all G — ``Receiver.process`` (parse, HMAC, replay window), then per
record what the agent does (``GatewayMember.on_advert``: the received counter, the
conversion, ``NodeHeartbeat.feed`` through ``core.heartbeat.step`` into the gateway's
real ``Election``, the actions applied, its timer rescheduled). Each datagram carries
fresh stamps 20 ms apart on the core's clock, as the lab's do.

Printed: median and p99 µs per datagram and per record, and the share of one core
that hearing alone costs a node at the seed lab's rates (two peers, each sending one
datagram per 20 ms advert interval, every record in each). Bounded: ROUNDS datagrams
per figure (a few seconds in all).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time

from vipmgr.agent.heartbeat import NodeHeartbeat
from vipmgr.agent.member import GatewayMember, MemberContext
from vipmgr.agent.metrics import AgentMetrics
from vipmgr.resources.models import EgressGateway, ObjectMeta
from vipmgr.store.authority import DEFAULT_PREFIX
from vipmgr.wire.codec import Encoder
from vipmgr.wire.keys import KeyRing
from vipmgr.wire.message import Advert, Role
from vipmgr.wire.receiver import Receiver
from prometheus_client import CollectorRegistry

KEY = bytes(range(32))
GATEWAYS = (1, 10, 30, 100)
ROUNDS = 2000
PERIOD = 0.02   # the active's advert interval
PEERS = 2       # a node of the seed lab hears two others


class Datapath:
    """Nothing to program: a standby never does."""

    generation = 0

    def program(self, gateway, until) -> None:
        pass

    def withdraw(self, gateway) -> int:
        return 0

    async def settled(self, generation, limit) -> None:
        pass


class Executor:
    """etcd answers nothing (the watch and the lease stay in flight): the standby keeps
    listening, which is what this measures."""

    async def run(self, op):
        await asyncio.Event().wait()


def advert(gateway: str, vrid: int, stamp: float) -> Advert:
    return Advert(node="gw-a", gateway=gateway, vrid=vrid, role=Role.ACTIVE, epoch=1000 + vrid,
                  priority=254, interval_ms=20, egress_ip="192.0.2.100", healthy=True,
                  etcd_reachable=True, heard=("gw-b", "gw-c"), stamp=stamp,
                  echo_node="gw-b", echo_stamp=stamp - 0.01)


async def measure(gateways: int, rounds: int) -> tuple[list[float], int]:
    loop = asyncio.get_running_loop()
    clock = [loop.time()]
    names = [f"gw{i:03d}" for i in range(gateways)]
    metrics = AgentMetrics("gw-b", CollectorRegistry())
    heartbeat = NodeHeartbeat(lambda _if, _adverts: None, metrics, lambda: clock[0])
    ctx = MemberContext("gw-b", Datapath(), metrics, heartbeat, lambda: clock[0],
                        DEFAULT_PREFIX)
    members = {}
    for i, name in enumerate(names):
        gw = EgressGateway(meta=ObjectMeta(name), manifest={})
        member = GatewayMember(ctx, gw, ("gw-a", "gw-b", "gw-c"), 100, "eth1",
                               "192.0.2.100", client=None)
        member.executor = Executor()
        member.start(True, False)
        members[name] = member
    vrids = {name: 1 + i % 255 for i, name in enumerate(names)}
    encoder = Encoder(KEY)
    receiver = Receiver("gw-b", vrids, KeyRing((KEY,), require_auth=True))
    stamp = time.time()
    packets = []
    for r in range(rounds):
        adverts = [advert(n, vrids[n], stamp + r * PERIOD) for n in names]
        packets.append(encoder.encode(adverts, "198.51.100.11"))
    samples = []
    records = 0
    for r, datagrams in enumerate(packets):
        clock[0] += PERIOD
        t0 = time.perf_counter_ns()
        for datagram in datagrams:
            result = receiver.process(datagram, stamp + r * PERIOD)
            for adv in result.adverts:
                members[adv.gateway].on_advert(adv)
                records += 1
        samples.append((time.perf_counter_ns() - t0) / 1000)
        if r % 50 == 0:
            await asyncio.sleep(0)  # let the members' timers run, as the loop would
    for member in members.values():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(member.close(), 2.0)
    assert set(receiver.counters) == {"accepted"}, receiver.counters
    return samples, records // rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    print(f"{'gateways':>8} {'records':>7} {'µs/datagram p50':>16} {'p99':>8} "
          f"{'µs/record':>10} {'core % at the lab rate':>23}")
    for gateways in GATEWAYS:
        samples, per = asyncio.run(measure(gateways, args.rounds))
        ordered = sorted(samples)
        p50, p99 = statistics.median(ordered), ordered[int(len(ordered) * 0.99)]
        share = 100 * p50 * 1e-6 * PEERS / PERIOD
        print(f"{gateways:>8} {per:>7} {p50:>16.1f} {p99:>8.1f} {p50 / per:>10.1f} "
              f"{share:>22.1f}%")


if __name__ == "__main__":
    main()
