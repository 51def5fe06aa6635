"""Two namespaces on a bridge exchange heartbeats over the real raw-socket transport.

A third namespace forges adverts with the wrong key. An nft rule inside the
receiver's namespace drops the real sender's packets: the receiver must report
silence within k × interval, and hear the sender again once the rule is gone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
import struct
from collections import Counter

import pytest

from vipmgr.wire.codec import Encoder
from vipmgr.wire.keys import KeyRing
from vipmgr.wire.message import Advert, Reject, Role
from vipmgr.wire.receiver import Receiver
from vipmgr.wire.transport import HeartbeatTransport, in_netns, open_vrrp_socket

pytestmark = [pytest.mark.netns]

GW, VRID, INTERVAL_MS, K = "egress-1", 42, 20, 3
GW2, VRID2 = "egress-2", 7
ADDR = {"a": "192.0.2.1", "b": "192.0.2.2", "m": "192.0.2.66"}
DROP_A = f"""table inet vt_wire {{
  chain input {{ type filter hook input priority 0; ip protocol 112 ip saddr {ADDR['a']} drop; }}
}}"""


@pytest.fixture
def lab(netns_lab):
    netns_lab.add_bridge("br")
    for short, addr in ADDR.items():
        ns = netns_lab.add(short)
        netns_lab.link(short, "eth0", "br", f"p{short}")
        ns.set_addr("eth0", f"{addr}/24")
    return netns_lab


def garbage(src: str, dst: str) -> list[bytes]:
    """Protocol-112 datagrams that are not heartbeats: empty, short, random, VRRPv2."""
    rnd = random.Random(4)
    ip = lambda payload, ttl=255: struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0,
                                              ttl, 112, 0, socket.inet_aton(src),
                                              socket.inet_aton(dst)) + payload
    return ([ip(b""), ip(b"\x31"), ip(b"\x21\x2a" + bytes(14)), ip(bytes(40), ttl=1)]
            + [ip(rnd.randbytes(rnd.randrange(1, 300))) for _ in range(16)])


def advert(node: str, gateway: str = GW, vrid: int = VRID) -> Advert:
    return Advert(node=node, gateway=gateway, vrid=vrid, role=Role.ACTIVE if node == "node-a"
                  else Role.STANDBY, epoch=7, priority=100, interval_ms=INTERVAL_MS,
                  egress_ip="198.51.100.10", healthy=True, etcd_reachable=True)


def test_heartbeats_silence_and_forgery(lab, keys):
    good, wrong = keys
    ring = KeyRing((good,), require_auth=True)
    got: dict[str, list[tuple[str, str, str]]] = {"a": [], "b": []}
    rejected: Counter[str] = Counter()

    def transport(short: str, key: bytes, peers=None) -> HeartbeatTransport:
        sock = in_netns(lab[short].name, lambda: open_vrrp_socket("eth0", multicast=peers is None))
        return HeartbeatTransport(
            sock, "eth0", Encoder(key), Receiver(f"node-{short}", {GW: VRID}, ring),
            lambda adv, src, ifname: got.setdefault(short, []).append((adv.node, src, ifname)),
            peers=peers, on_reject=lambda reason, ifname: rejected.update([f"{short}:{reason}"]))

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        ta, tb = transport("a", good), transport("b", good)
        # the forger impersonates node-a, unicast straight at b
        tm = transport("m", wrong, peers=[ADDR["b"]])
        for t in (ta, tb, tm):
            t.start(loop)
        loop_errors: list[dict] = []
        loop.set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))

        async def beat() -> None:
            while True:
                ta.send([advert("node-a")])
                tb.send([advert("node-b")])
                tm.send([advert("node-a")])
                await asyncio.sleep(INTERVAL_MS / 1000)

        beating = asyncio.create_task(beat())
        try:
            await asyncio.sleep(0.4)
            rb = tb.receiver
            assert "node-a" in rb.heard(GW, loop.time(), K)
            assert "node-b" in ta.receiver.heard(GW, loop.time(), K)
            assert rb.counters[Reject.AUTH] >= 10, rb.counters
            assert rb.counters["accepted"] == len(got["b"]) >= 10
            assert set(got["b"]) == {("node-a", ADDR["a"], "eth0")}     # no forged one got through

            # garbage with a sane IP header (the kernel insists) reaches b's reader: counted
            before = sum(rb.counters.values())
            for junk in garbage(ADDR["m"], ADDR["b"]):
                tm.sock.sendto(junk, (ADDR["b"], 0))
            await asyncio.sleep(0.05)
            assert sum(v for r, v in rb.counters.items() if r not in ("accepted", Reject.AUTH)) \
                == len(garbage(ADDR["m"], ADDR["b"])), rb.counters
            assert sum(rb.counters.values()) > before

            assert "node-a" in rb.heard(GW, loop.time(), K)
            lab["b"].run(["nft", "-f", "-"], input=DROP_A)    # blocks the loop while it runs
            dropped_at = loop.time()
            while "node-a" in rb.heard(GW, loop.time(), K):
                assert loop.time() - dropped_at < 1.0, "silence never reported"
                await asyncio.sleep(0.002)
            silent_after = loop.time() - dropped_at
            print(f"silence reported {silent_after * 1000:.1f} ms after the drop")
            # at most k × interval after the rule is in, plus scheduling slack
            assert silent_after <= K * INTERVAL_MS / 1000 + 0.08, silent_after
            accepted, forged = rb.counters["accepted"], rb.counters[Reject.AUTH]
            await asyncio.sleep(0.1)
            assert rb.counters["accepted"] == accepted           # nothing of a's gets through
            assert rb.counters[Reject.AUTH] > forged             # yet b still receives
            assert "node-b" in ta.receiver.heard(GW, loop.time(), K)  # only one direction cut

            lab["b"].run(["nft", "delete", "table", "inet", "vt_wire"])
            await asyncio.sleep(0.1)
            assert "node-a" in rb.heard(GW, loop.time(), K)     # rejoins, replay window intact
            assert rb.counters[Reject.REPLAY] == 0
            assert ta.send_errors == tb.send_errors == {}
            assert loop_errors == []
            assert rejected == {f"b:{r}": n for r, n in rb.counters.items() if r != "accepted"}
        finally:
            beating.cancel()
            for t in (ta, tb, tm):
                t.close()

    asyncio.run(scenario())


def test_unicast_peers_multi_gateway_datagrams_and_send_errors_are_counted(lab, keys):
    """Two gateways in one datagram per peer: on_advert sees both, in order; a split
    advert set is several datagrams per peer."""
    good, _ = keys
    got = []
    gateways = {GW: VRID, GW2: VRID2}
    both = [advert("node-a"), advert("node-a", GW2, VRID2)]
    sock_a = in_netns(lab["a"].name, lambda: open_vrrp_socket("eth0", multicast=False))
    sock_b = in_netns(lab["b"].name, lambda: open_vrrp_socket("eth0", multicast=False))
    ring = KeyRing((good,))
    ta = HeartbeatTransport(sock_a, "eth0", Encoder(good), Receiver("node-a", gateways, ring),
                            lambda *a: None, peers=[ADDR["b"], ADDR["m"]])
    tb = HeartbeatTransport(sock_b, "eth0", Encoder(good), Receiver("node-b", gateways, ring),
                            lambda adv, src, ifname: got.append((adv, src)))

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        tb.start(loop)
        try:
            assert ta.send(both) == 2
            await asyncio.sleep(0.05)
            assert got == [(a, ADDR["a"]) for a in both]
            assert tb.receiver.counters == {"accepted": 1}
            many = [advert("node-a", f"gateway-{i:02d}-" + "x" * 40, 1 + i) for i in range(40)]
            assert ta.send(many) == 2 * len(ta.encoder.encode(many, ADDR["a"])) > 2
            # an output drop inside a's namespace surfaces as a counted send error, not an exception
            lab["a"].run(["nft", "-f", "-"], input=DROP_A.replace("input", "output")
                         .replace("ip saddr", "ip daddr").replace(ADDR["a"], ADDR["b"]))
            assert ta.send([dataclasses.replace(advert("node-a"), epoch=8)]) == 1
            assert ta.send_errors == {"EPERM": 1}
        finally:
            tb.close()
            ta.close()

    asyncio.run(scenario())
