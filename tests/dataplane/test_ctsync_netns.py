"""VIP-mode flows moved between two gateway namespaces: injected state, and drop-not-reset.

The world (dpworld.py): ga and gb are members of one VirtualIPAddress gateway,
the VMs run on the worker, the server is on the echo host. A "move" is ga
stepping down and gb taking the VIP, the worker steering to gb.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time

import pytest
from dpworld import NODES, SERVICE, VIP, gateway, policy, resource

from vipmgr.agent.ctsync import DELTA, MAX_ENTRIES, ConntrackSync, Frame, NullSyncMetrics, encode
from vipmgr.agent.snapshot import Snapshot
from vipmgr.dataplane.ctsync import CtSocket, TCP, vip_input_rules
from vipmgr.dataplane.kernel import NetnsThread
from vipmgr.dataplane.plan import build_node_plan
from vipmgr.dataplane.reconcile import Dataplane
from vipmgr.wire.keys import KeyRing

pytestmark = pytest.mark.netns
LONG = 60.0
PORT = 9000
CTPORT = 17612
BOTH = [resource("VirtualMachine", vm, {"nodeName": "w", "addresses": [ip]},
                 {"app": "backend"}, namespace="default")
        for vm, ip in (("vm1", "198.18.1.2"), ("vm2", "198.18.2.2"))]


def plan(node: str, holder: str | None):
    return build_node_plan(node, [gateway()], [policy()], BOTH, NODES, {"egw": holder})


def in_ns(world, short: str, fn, *args):
    thread = NetnsThread(world[short].name, "ct-test")
    try:
        return thread.call(fn, *args)
    finally:
        thread.close()


def dump(world, short: str):
    def body():
        sock = CtSocket()
        try:
            return sock.dump([VIP])[VIP]
        finally:
            sock.close()
    return in_ns(world, short, body)


def inject(world, short: str, flows):
    def body():
        sock = CtSocket()
        try:
            return sock.inject(VIP, flows)
        finally:
            sock.close()
    return in_ns(world, short, body)


def established(world, short: str, n: int, timeout: float = 10.0):
    """The entries SNATed to the VIP on ``short`` once there are ``n`` (clients start
    slowly on a loaded host)."""
    deadline = time.monotonic() + timeout
    while len(flows := dump(world, short)) < n:
        assert time.monotonic() < deadline, f"{len(flows)} of {n} flows through {short}"
        time.sleep(0.1)
    return flows


def start_server(world):
    world["echo"].popen([sys.executable, "-m", "vipmgr.lab.flows", "serve", "--port", str(PORT)])
    deadline = time.monotonic() + 10
    while f":{PORT} " not in world["echo"].run(["ss", "-ltn"]).stdout:
        assert time.monotonic() < deadline, "flows server did not start"
        time.sleep(0.05)


def start_flows(world, vm: str, n: int, duration: float, sport_base: int = 0):
    return world[vm].popen([sys.executable, "-m", "vipmgr.lab.flows", "run", "--to",
                            f"{SERVICE}:{PORT}", "--flows", str(n), "--duration", str(duration),
                            "--sport-base", str(sport_base), "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def report(proc) -> dict:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out)


def serve_from(ga: Dataplane, gb: Dataplane, w: Dataplane, holder: str) -> None:
    (ga if holder == "ga" else gb).reconcile(plan(holder, holder), arm=True)
    other = "gb" if holder == "ga" else "ga"
    (gb if holder == "ga" else ga).reconcile(plan(other, holder))
    w.reconcile(plan("w", holder))


def test_injected_flows_with_their_nat_carry_on_on_the_new_active(world):
    """TCP flows (two VMs, the same source ports: NAT collisions) established through ga;
    their entries are injected into gb before gb takes the VIP: every one carries on."""
    start_server(world)
    with Dataplane(world["ga"].name, LONG) as ga, Dataplane(world["gb"].name, LONG) as gb, \
            Dataplane(world["w"].name, LONG) as w:
        serve_from(ga, gb, w, "ga")
        procs = [start_flows(world, vm, 20, 4.0, sport_base=41000) for vm in ("vm1", "vm2")]
        flows = established(world, "ga", 40)
        time.sleep(0.5)
        assert len(flows) == 40 and {f.proto for f in flows} == {TCP}
        ports = sorted(f.nat_port for f in flows)
        assert len(set(ports)) == 40, "collisions got distinct VIP ports"
        assert sum(41000 <= p < 41020 for p in ports) == 20, "one VM kept its ports"
        # the move: gb learns the flows, then ga lets go and gb takes over
        got = inject(world, "gb", flows)
        assert (got.created, got.existed, got.failed) == (40, 0, None)
        again = inject(world, "gb", flows)
        assert (again.created, again.existed, again.failed) == (0, 40, None), "EEXIST counted"
        assert {(f.key, f.nat_port) for f in dump(world, "gb")} == \
            {(f.key, f.nat_port) for f in flows}, "gb holds the same mappings"
        ga.reconcile(plan("ga", None))
        gb.reconcile(plan("gb", "gb"), arm=True)
        w.reconcile(plan("w", "gb"))
        results = [report(p) for p in procs]
    for r in results:
        assert r["survived"] == 20, r
        assert r["worst_stall_ms"] < 1000, r


def test_injected_entries_forward_nothing_until_the_node_is_armed(world):
    """State on a standby is inert: gb holds the injected entries but is not armed, so the
    gate drops the flows' packets (the counter says so) until gb takes the gateway."""
    start_server(world)
    with Dataplane(world["ga"].name, LONG) as ga, Dataplane(world["gb"].name, LONG) as gb, \
            Dataplane(world["w"].name, LONG) as w:
        serve_from(ga, gb, w, "ga")
        proc = start_flows(world, "vm1", 5, 3.0)
        assert inject(world, "gb", established(world, "ga", 5)).created == 5
        w.reconcile(plan("w", "gb"))  # a stale steering to the standby
        time.sleep(0.5)
        fenced = gb.drops_nowait().result(5)[("egw", "fenced")]
        assert fenced > 0, "the standby's gate did not drop the injected flows"
        r = report(proc)
    assert r["survived"] == 0, "a standby forwarded injected flows"


DROP_TEST = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.settimeout(0.05)
print("ready", flush=True)
got = 0; last = time.monotonic(); end = time.monotonic() + float(sys.argv[3])
next_send = time.monotonic() + 1.2
while time.monotonic() < end:
    if time.monotonic() >= next_send:      # the client speaks rarely: the server's segments
        s.sendall(b"ping\n")                  # meet the new active first
        next_send += 1.2
    try:
        data = s.recv(4096)
    except socket.timeout:
        continue
    except ConnectionResetError:
        print("reset", got); sys.exit(0)
    if not data:
        print("eof", got); sys.exit(0)
    got += data.count(b"\n"); last = time.monotonic()
print("alive" if time.monotonic() - last < 0.5 else "silent", got)
"""

TALKER = r"""
import socket, sys, threading, time
srv = socket.create_server(("0.0.0.0", int(sys.argv[1])), reuse_port=True)
while True:
    c, _ = srv.accept()
    def talk(c=c):
        try:
            while True:
                c.sendall(b"x\n"); time.sleep(0.02)
        except OSError:
            pass
    threading.Thread(target=talk, daemon=True).start()
"""


@pytest.mark.parametrize("drop_rules", [True, False], ids=["drop-rules", "no-rules"])
def test_a_packet_to_the_vip_without_state_is_dropped_not_reset(world, drop_rules):
    """No injection: the server talks every 20 ms, the client every 1.2 s. After the move
    the server's segment reaches gb first. With the members' gw_in rules
    (ctsync.vip_input_rules) it is dropped and counted, the client's next segment is
    picked up mid-stream and SNATed to the same VIP port, and the server's retransmission
    flows; with the rules flushed, gb's stack resets the connection."""
    world["echo"].popen([sys.executable, "-c", TALKER, str(PORT + 1)])
    deadline = time.monotonic() + 10
    while f":{PORT + 1} " not in world["echo"].run(["ss", "-ltn"]).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with Dataplane(world["ga"].name, LONG) as ga, Dataplane(world["gb"].name, LONG) as gb, \
            Dataplane(world["w"].name, LONG) as w:
        serve_from(ga, gb, w, "ga")
        assert any("ct state invalid" in r for r in vip_input_rules(VIP))
        if not drop_rules:
            for g in ("ga", "gb"):
                world[g].run(["nft", "flush", "chain", "inet", "vipmgr", "gw_in"])
        client = world["vm1"].popen([sys.executable, "-c", DROP_TEST, SERVICE, str(PORT + 1),
                                     "3.5"], stdout=subprocess.PIPE, text=True)
        assert client.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # the client's first line comes 0.9 s after the move
        ga.reconcile(plan("ga", None))
        gb.reconcile(plan("gb", "gb"), arm=True)
        w.reconcile(plan("w", "gb"))
        if not drop_rules:
            world["gb"].run(["nft", "flush", "chain", "inet", "vipmgr", "gw_in"])
        outcome = client.communicate(timeout=20)[0]
        nostate = gb.drops_nowait().result(5).get(("egw", "nostate"), 0)
    if drop_rules:
        assert outcome.split()[0] == "alive", outcome
        assert nostate > 0, "nothing was dropped: the test did not race"
    else:
        assert outcome.split()[0] == "reset", outcome


# --- the replication channel between two namespaces -------------------------------------

KEY = KeyRing((b"replication-test-key-0123456789",))


class Recorded(NullSyncMetrics):
    """The metric calls, summed per (method, gateway, label)."""

    def __init__(self) -> None:
        self.calls: dict[tuple, float] = {}

    def _add(self, *key, value: float = 1) -> None:
        self.calls[key] = self.calls.get(key, 0) + value

    def ctsync_replicated(self, gateway, direction, count):
        self._add("replicated", gateway, direction, value=count)

    def ctsync_lag(self, gateway, seconds):
        self.calls[("lag", gateway)] = seconds

    def ctsync_resync(self, gateway, reason):
        self._add("resync", gateway, reason)

    def ctsync_rejected(self, reason):
        self._add("rejected", reason)

    def ctsync_overflow(self, gateway, count):
        self._add("overflow", gateway, value=count)


async def wait_for(pred, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def forge(world, frame_bytes: bytes, dst: str) -> None:
    """Send one datagram from the worker (on the internal segment) to ``dst``."""
    def body():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(frame_bytes, (dst, CTPORT))
    in_ns(world, "w", body)


SNAP = Snapshot(gateways={"egw": gateway()}, nodes={n.name: n for n in NODES})


@contextlib.asynccontextmanager
async def syncing(world, dps, ma, mb, max_entries: int = MAX_ENTRIES):
    """ga serving (and sending), gb standby (following), both replicators running."""
    a = ConntrackSync("ga", lambda: KEY, lambda: SNAP, ma, netns=world["ga"].name, port=CTPORT)
    b = ConntrackSync("gb", lambda: KEY, lambda: SNAP, mb, netns=world["gb"].name, port=CTPORT,
                      max_entries=max_entries)
    await a.start()
    await b.start()
    try:
        serve_from(*dps, "ga")
        a.applied(plan("ga", "ga"))
        b.applied(plan("gb", "ga"))
        yield a, b
    finally:
        await a.close()
        await b.close()


def test_replicated_flows_carry_on_after_a_move_and_the_channel_refuses_forgeries(
        world):
    """ga serves and streams its flows' events to gb; a forged frame changes nothing; ga
    stops sending before its leave flush (gb keeps every flow), gb injects before it takes
    the VIP: all 20 flows (10 NAT collisions) carry on, and ga now follows gb."""
    start_server(world)
    ma, mb = Recorded(), Recorded()

    async def scenario(ga, gb, w):
        async with syncing(world, (ga, gb, w), ma, mb) as (a, b):
            await wait_for(lambda: b.following["egw"].synced)
            procs = [start_flows(world, vm, 10, 4.0, sport_base=42000) for vm in ("vm1", "vm2")]
            await wait_for(lambda: len(b.following["egw"].flows) == 20)
            await asyncio.sleep(0.5)
            have = {(f.key, f.nat_port) for f in dump(world, "ga")}
            assert {(f.key, f.nat_port) for f in b.following["egw"].flows.values()} == have
            # a forgery from the internal segment: refused, counted, nothing changes
            bogus = Frame(DELTA, "egw", "ga", b.following["egw"].session, 10**6, time.time(),
                          tuple((f, True) for f in b.following["egw"].flows.values()))
            forge(world, encode(bogus, KeyRing((b"not-the-key-at-all-0123456789",))),
                  "198.51.100.12")
            await wait_for(lambda: b.rejected.get("auth") == 1)
            assert len(b.following["egw"].flows) == 20
            # the move (graceful): ga stops sending, lets go (leave flush), gb injects, takes
            a.stop_serving("egw")
            ga.reconcile(plan("ga", None))
            await asyncio.sleep(0.1)
            assert len(b.following["egw"].flows) == 20, "ga's leave flush reached gb"
            got = (await b.before_take(["egw"]))["egw"]
            assert (got.created, got.failed) == (20, None), got
            gb.reconcile(plan("gb", "gb"), arm=True)
            w.reconcile(plan("w", "gb"))
            a.applied(plan("ga", None))
            b.applied(plan("gb", "gb"))
            await wait_for(lambda: a.following["egw"].synced
                           and len(a.following["egw"].flows) == 20)
            return [await asyncio.to_thread(report, p) for p in procs]

    with Dataplane(world["ga"].name, LONG) as ga, Dataplane(world["gb"].name, LONG) as gb, \
            Dataplane(world["w"].name, LONG) as w:
        results = asyncio.run(scenario(ga, gb, w))
    for r in results:
        assert r["survived"] == 10, r
    assert ma.calls[("replicated", "egw", "sent")] >= 20
    assert mb.calls[("replicated", "egw", "received")] >= 20
    assert 0 <= mb.calls[("lag", "egw")] < 1.0
    assert mb.calls[("rejected", "auth")] == 1


def test_a_standby_holds_at_most_max_entries_and_counts_the_rest(world):
    start_server(world)
    mb = Recorded()

    async def scenario(ga, gb, w):
        async with syncing(world, (ga, gb, w), None, mb, max_entries=5) as (_a, b):
            proc = start_flows(world, "vm1", 12, 1.5)
            await wait_for(lambda: mb.calls.get(("overflow", "egw"), 0) >= 7)
            assert len(b.following["egw"].flows) == 5
            await asyncio.to_thread(report, proc)

    with Dataplane(world["ga"].name, LONG) as ga, Dataplane(world["gb"].name, LONG) as gb, \
            Dataplane(world["w"].name, LONG) as w:
        asyncio.run(scenario(ga, gb, w))


UDP_ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[2], int(sys.argv[1])))  # replies from the address the client used
while True:
    data, (ip, port) = s.recvfrom(100)
    s.sendto(b"%s:%d" % (ip.encode(), port), (ip, port))
"""

UDP_CLIENT = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 40000)); s.settimeout(0.02)
seen = []; end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    s.sendto(b"x", (sys.argv[1], int(sys.argv[2])))
    try:
        seen.append(s.recv(100).decode())
    except socket.timeout:
        pass
    time.sleep(0.02)
print(" ".join(dict.fromkeys(seen)))
"""


def test_flows_survive_a_crash_of_the_active_tcp_and_udp_keep_their_vip_ports(world):
    """The active crashes: its replicator vanishes without a word and its dead-man expires
    (300 ms here); gb injects what it was sent and takes over. TCP flows of both VMs (NAT
    collisions) carry on; a UDP flow per VM (both from port 40000: one of them was given
    another VIP port) is seen by the server from the same VIP port before and after."""
    start_server(world)
    world["echo"].popen([sys.executable, "-c", UDP_ECHO, str(PORT + 2), SERVICE])

    async def keep_armed(ga):
        while True:
            ga.refresh_nowait({"egw": 0.3})
            await asyncio.sleep(0.1)

    async def scenario(ga, gb, w):
        async with syncing(world, (ga, gb, w), None, None) as (a, b):
            refresher = asyncio.create_task(keep_armed(ga))
            await wait_for(lambda: b.following["egw"].synced)
            tcp = [start_flows(world, vm, 10, 4.0, sport_base=43000) for vm in ("vm1", "vm2")]
            udp = [world[vm].popen([sys.executable, "-c", UDP_CLIENT, SERVICE, str(PORT + 2),
                                    "4.0"], stdout=subprocess.PIPE, text=True)
                   for vm in ("vm1", "vm2")]
            await wait_for(lambda: len(b.following["egw"].flows) == 22)
            await asyncio.sleep(1.0)
            # the crash: no stop_serving, no withdraw; the kernel lets go by itself
            refresher.cancel()
            for task in list(a._tasks):
                task.cancel()
            a._close_events()
            await asyncio.sleep(0.35)
            got = (await b.before_take(["egw"]))["egw"]
            gb.reconcile(plan("gb", "gb"), arm=True)
            w.reconcile(plan("w", "gb"))
            assert (got.created, got.failed) == (22, None), got
            tcp_results = [await asyncio.to_thread(report, p) for p in tcp]
            udp_seen = [(await asyncio.to_thread(p.communicate, None, 30))[0].split()
                        for p in udp]
            return tcp_results, udp_seen

    ga_dp = Dataplane(world["ga"].name, 0.3)
    with ga_dp as ga, Dataplane(world["gb"].name, LONG) as gb, \
            Dataplane(world["w"].name, LONG) as w:
        tcp_results, udp_seen = asyncio.run(scenario(ga, gb, w))
    for r in tcp_results:
        assert r["survived"] == 10, r
        assert r["worst_stall_ms"] < 1000, r
    for seen in udp_seen:
        assert len(seen) == 1 and seen[0].startswith(f"{VIP}:"), udp_seen
    assert udp_seen[0] != udp_seen[1], "the colliding UDP flows got distinct VIP ports"


INVALID_SEND = r"""
from scapy.all import IP, TCP, send
# SYN+FIN: conntrack marks it invalid, so no ct is attached (nothing matches a ct expression)
send(IP(src="198.18.1.2", dst="203.0.113.10") / TCP(sport=44444, dport=9000, flags="SF"),
     count=3, verbose=0)
"""

CAPTURE_TCP_SOURCES = r"""
import socket, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind(("eth0", 0)); s.settimeout(0.2)
print("ready", flush=True)
end = time.monotonic() + 3
while time.monotonic() < end:
    try:
        f = s.recv(2000)
    except socket.timeout:
        continue
    if f[23] == 6:
        print(socket.inet_ntoa(f[26:30]), flush=True)
"""


@pytest.mark.parametrize("steered_to", ["ga", "gb"], ids=["active", "standby"])
def test_an_invalid_packet_of_a_selected_vm_never_leaves_with_the_vm_address(world, steered_to):
    """No leak also for packets conntrack refuses (invalid: no entry, no NAT): on the active
    node they would leave un-SNATed, on a standby (a stale steering) they would be forwarded
    although it is not armed. Seen on the external segment, nothing may carry the VM's source."""
    with Dataplane(world["ga"].name, LONG) as ga, Dataplane(world["gb"].name, LONG) as gb, \
            Dataplane(world["w"].name, LONG) as w:
        serve_from(ga, gb, w, "ga")
        w.reconcile(plan("w", steered_to))
        capture = world["echo"].popen([sys.executable, "-c", CAPTURE_TCP_SOURCES],
                                      stdout=subprocess.PIPE, text=True)
        assert capture.stdout.readline().strip() == "ready"
        world["vm1"].run([sys.executable, "-c", INVALID_SEND])
        seen = capture.communicate(timeout=20)[0].split()
    assert "198.18.1.2" not in seen, f"leaked with the VM's address: {seen}"
