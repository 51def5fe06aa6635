"""An attacker on the heartbeat segment (issue 17): captured, tampered, replayed,
sequence-bumped and forged heartbeats, and forged echoes for an active cut from etcd.

1. Wire level, three namespaces on a bridge: a genuine sender, a receiver, the attacker.
2. Agent level, the seed lab: the attacker is the lab's ``internet`` node on the public
   segment, the agents run as the lab runs them. Every attack is counted as ``auth`` (or
   ``replay`` for an unchanged copy), nothing changes roles or evidence, and with the
   active cut from etcd and from its peers' heartbeats, forged echoes do not keep it
   serving: 0 dual owners.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import select
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from heartbeat_attacks import resourced, tampered
from vipmgr.lab.bench import seed_network
from vipmgr.lab.runtime import deploy, destroy
from vipmgr.wire.codec import Encoder, decode
from vipmgr.wire.keys import KeyRing
from vipmgr.wire.message import Advert, Frame, Reject, Role
from vipmgr.wire.receiver import Receiver
from vipmgr.wire.transport import HeartbeatTransport, in_netns, open_vrrp_socket
from waiting import holds_for, wait_for, wait_for_async

pytestmark = [pytest.mark.netns]

COPIES = 20
CLUSTER_KEY = bytes(range(32))
ATTACKER_KEY = secrets.token_bytes(32)    # the attacker's own: it never has the cluster's


def capture(sock, want, timeout: float = 3.0) -> tuple[bytes, Frame]:
    """The first datagram on ``sock`` whose unverified decode satisfies ``want``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], 0.1)
        if not ready:
            continue
        data = sock.recv(2048)
        frame = decode(data)
        if isinstance(frame, Frame) and want(frame):
            return data, frame
    raise AssertionError("captured no heartbeat")


def send_copies(sock, packets: list[bytes], dst: str) -> int:
    """COPIES of each, paced (1 ms) so that no socket buffer on the way overflows: the
    test counts every datagram."""
    for pkt in packets:
        for _ in range(COPIES):
            sock.sendto(pkt, (dst, 0))
            time.sleep(0.001)
    return len(packets) * COPIES


# --- 1. wire level ---------------------------------------------------------------------

GW, VRID = "egress-1", 42
ADDR = {"a": "192.0.2.1", "b": "192.0.2.2", "m": "192.0.2.66"}


def test_receiver_in_another_namespace_rejects_every_attack_as_auth(netns_lab, caplog):
    netns_lab.add_bridge("br")
    for short, addr in ADDR.items():
        netns_lab.add(short)
        netns_lab.link(short, "eth0", "br", f"p{short}")
        netns_lab[short].set_addr("eth0", f"{addr}/24")
    ring = KeyRing((CLUSTER_KEY,), require_auth=True)
    genuine = Advert(node="node-a", gateway=GW, vrid=VRID, role=Role.ACTIVE, epoch=7,
                     priority=100, interval_ms=20, egress_ip="198.51.100.10", healthy=True,
                     etcd_reachable=True, stamp=1.0)
    heard = []
    sa = in_netns(netns_lab["a"].name, lambda: open_vrrp_socket("eth0"))
    sb = in_netns(netns_lab["b"].name, lambda: open_vrrp_socket("eth0"))
    spy = in_netns(netns_lab["m"].name, lambda: open_vrrp_socket("eth0"))
    ta = HeartbeatTransport(sa, "eth0", Encoder(CLUSTER_KEY), Receiver("node-a", {GW: VRID}, ring),
                            lambda *a: None)
    tb = HeartbeatTransport(sb, "eth0", Encoder(CLUSTER_KEY), Receiver("node-b", {GW: VRID}, ring),
                            lambda adv, src, _if: heard.append(adv))

    async def scenario():
        loop = asyncio.get_running_loop()
        tb.start(loop)
        sending = True

        async def beat():
            while sending:
                ta.send([dataclasses.replace(genuine, stamp=loop.time())])
                await asyncio.sleep(0.02)
        beats = asyncio.create_task(beat())
        try:
            # the receiver is up and has counted a genuine advert: the capture's original
            # reaches it before any copy
            await wait_for_async(lambda: tb.receiver.counters.get("accepted", 0) > 0, 5,
                                 "node-b accepting node-a's adverts")
            pkt, _ = await asyncio.to_thread(capture, spy,
                                             lambda f: f.adverts[0].node == "node-a")
            before = dict(tb.receiver.counters)
            forger = Encoder(ATTACKER_KEY).encode([dataclasses.replace(genuine, priority=255)],
                                                  ADDR["m"], ADDR["b"])
            edited = list(tampered(pkt).values())
            n_auth = send_copies(spy, edited + forger, ADDR["b"])
            send_copies(spy, [pkt], ADDR["b"])                    # the unchanged capture

            def delta(reason):
                return tb.receiver.counters.get(reason, 0) - before.get(reason, 0)
            await wait_for_async(lambda: delta(Reject.AUTH) >= n_auth
                                 and delta(Reject.REPLAY) >= COPIES, 5,
                                 "every copy counted")
            got = tb.receiver.counters
            assert got[Reject.AUTH] - before.get(Reject.AUTH, 0) == n_auth
            assert got[Reject.REPLAY] - before.get(Reject.REPLAY, 0) == COPIES
            assert set(got) == {"accepted", Reject.AUTH, Reject.REPLAY}
            assert {(a.node, a.priority) for a in heard} == {("node-a", 100)}
            assert tb.receiver.heard(GW, loop.time(), 3)["node-a"].priority == 100
        finally:
            sending = False
            await beats
            ta.close()
            tb.close()
            spy.close()

    with caplog.at_level(logging.WARNING, logger="vipmgr.wire"):
        asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if r.name == "vipmgr.wire"]
    # one line per (source, reason) within the 10 s interval, however many copies
    assert sorted(lines) == sorted([f"heartbeat rejected as auth from {ADDR['a']} on eth0",
                                    f"heartbeat rejected as auth from {ADDR['m']} on eth0",
                                    f"heartbeat rejected as replay from {ADDR['a']} on eth0"])


# --- 2. agent level: the seed lab ------------------------------------------------------

LAB = f"atk{os.getpid() % 10000}"
GWS = ("gw-a", "gw-b", "gw-c")
IPS = {"gw-a": "192.0.2.11", "gw-b": "192.0.2.12", "gw-c": "192.0.2.13"}
VIP = "192.0.2.100"
MANIFESTS = Path(__file__).resolve().parents[2] / "lab" / "manifests"
CUT_TABLE = "vt_attack_cut"
# The default timers × 5: a test box loaded by other work must not make the lab flap on
# its own (a "role change" must be the attack's); no attack here depends on the timers.
SLOW_TIMERS = {"advertInterval": "100ms", "standbyAdvertInterval": "250ms",
               "challengeWindow": "650ms", "fenceDeadline": "600ms", "confirmLead": "400ms",
               "deadmanTimeout": "500ms", "etcdTimeout": "250ms", "leaseTTL": 4}
ATTACKER_IP = "192.0.2.1"     # the internet node's address on the public segment


@pytest.fixture(scope="module")
def lab():
    destroy(LAB)
    lab = deploy(seed_network(LAB))
    try:
        gateway = yaml.safe_load((MANIFESTS / "egressgateway-virtual-ip.yaml").read_text())
        gateway["spec"]["failover"] = {"timers": SLOW_TIMERS}
        slow = lab.workdir("etcd") / "egressgateway-slow.yaml"
        slow.write_text(yaml.safe_dump(gateway))
        out = lab.exec("etcd", ["vipmgr", "apply", "-f", str(MANIFESTS / "lab-inventory.yaml"),
                                "-f", str(slow),
                                "-f", str(MANIFESTS / "egressgatewaypolicy.yaml")])
        assert out.returncode == 0, out.stderr
        start_agents(lab, "logLevel: info\n")     # nothing about keys: as the README lab runs
        yield lab
    finally:
        destroy(LAB)


def start_agents(lab, config: str) -> None:
    for node in GWS:
        cfg = lab.workdir(node) / "agent.yaml"
        cfg.write_text(config.format(workdir=lab.workdir(node)))
        if lab.process_state(node) == "running":
            lab.stop(node)
        lab.start(node, ["vipmgr", "agent", "--node", node, "--config", str(cfg)])
    wait_for(lambda: single_owner(lab), 20, "one active node serving the VIP")


def serving(lab) -> list[str]:
    return [n for n in GWS if VIP in lab.exec(n, ["ip", "-4", "-br", "addr", "show",
                                                   "eth1"]).stdout]


def single_owner(lab) -> str | None:
    nodes = serving(lab)
    return nodes[0] if len(nodes) == 1 else None


def metrics(lab, node: str) -> dict[str, float]:
    out = lab.exec(node, [sys.executable, "-c", "import urllib.request as u; print(u.urlopen("
                          "'http://127.0.0.1:9750/metrics', timeout=3).read().decode())"])
    found = {}
    for line in out.stdout.splitlines():
        m = re.match(r'(vipmgr_heartbeats_rejected_total\{reason="(\w+)"\}'
                     r'|vipmgr_heartbeat_auth_mode\{mode="(\w+)"\}) (\S+)', line)
        if m:
            found[m.group(2) or f"mode:{m.group(3)}"] = float(m.group(4))
    assert found or out.returncode == 0, out.stderr
    return found


def attacker_socket(lab):
    return in_netns(lab.netns("internet").name, lambda: open_vrrp_socket("eth0"))


def epoch(lab) -> int:
    out = lab.exec("etcd", ["vipmgr", "status", "-o", "json"])
    return json.loads(out.stdout)["gateways"][0]["epoch"]


def test_the_lab_runs_authenticated_and_every_attack_is_counted_as_auth(lab):
    owner, first_epoch = single_owner(lab), epoch(lab)
    before = {n: metrics(lab, n) for n in GWS}
    assert all(before[n].get("mode:etcd") == 1 for n in GWS), before   # keys from etcd
    sock = attacker_socket(lab)
    try:
        pkt, frame = capture(sock, lambda f: f.adverts[0].node == owner)
        forged = [datagram for peer in GWS if peer != owner
                  for datagram in Encoder(ATTACKER_KEY).encode(
                      [dataclasses.replace(a, node=peer, role=Role.STANDBY, priority=255,
                                           heard=()) for a in frame.adverts], ATTACKER_IP)]
        forged += Encoder(None).encode([dataclasses.replace(a, priority=0)
                                        for a in frame.adverts], ATTACKER_IP)  # unsigned "releasing"
        edited = [resourced(p, ATTACKER_IP) for p in tampered(pkt).values()]
        n_auth = send_copies(sock, edited + forged, "224.0.0.18")
        send_copies(sock, [pkt], "224.0.0.18")   # unchanged: its source is the owner's own
    finally:
        sock.close()

    def counted(node: str) -> dict[str, float] | None:
        after = metrics(lab, node)
        done = after.get("auth", 0) - before[node].get("auth", 0) >= n_auth and (
            node == owner or after.get("replay", 0) - before[node].get("replay", 0) >= COPIES)
        return after if done else None
    for node in GWS:
        after = wait_for(lambda: counted(node), 10, f"{node} counting every copy", step=0.1)
        assert after.get("auth", 0) - before[node].get("auth", 0) == n_auth, (node, after)
        if node != owner:    # the owner's kernel drops a datagram with its own source
            assert after.get("replay", 0) - before[node].get("replay", 0) == COPIES
        log = lab.log_tail(node, lines=400)
        assert log.count(f"heartbeat rejected as auth from {ATTACKER_IP} on") == 1, log
        assert "heartbeat rejected as auth from" in log
    assert single_owner(lab) == owner and epoch(lab) == first_epoch     # no role change


ROTATE = """\
import asyncio, sys, time
from vipmgr.store.client import EtcdSettings, connect
from vipmgr.store.keys import rotate_keys
async def main():
    client = await connect(EtcdSettings.from_options())
    try:
        doc = await rotate_keys(client, "/vipmgr", time.time(), activation_delay=2.0,
                                overlap=2.0)
        print(doc.current.id, doc.previous.retires)
    finally:
        await client.close()
asyncio.run(main())
"""


def test_key_rotation_under_traffic_rejects_nothing_and_moves_no_role(lab):
    """A rotation with short (2 s) activation and overlap while the agents advertise: every
    agent follows it (its log names the new key), 0 heartbeats rejected, same owner, same
    epoch."""
    owner, first_epoch = single_owner(lab), epoch(lab)
    before = {n: metrics(lab, n) for n in GWS}
    out = lab.exec("etcd", [sys.executable, "-c", ROTATE])
    assert out.returncode == 0, out.stderr
    new_id, retires = out.stdout.split()

    def none_rejected() -> bool:
        return all(metrics(lab, n).get("auth", 0) == before[n].get("auth", 0) for n in GWS)
    for node in GWS:     # activation: 2 s after the rotation
        wait_for(lambda: f"heartbeat key {new_id} signs" in lab.log_tail(node, lines=400),
                 15, f"{node} signing with {new_id}", step=0.2)
    # then the previous key retires at the time the document says (the overlap, 2 s): only
    # the new key verifies from there. Nothing rejected from now until well past it.
    holds_for(none_rejected, max(0.0, float(retires) - time.time()) + 1.0,
              "no heartbeat rejected through the overlap and the retirement", step=0.1)
    assert single_owner(lab) == owner and epoch(lab) == first_epoch


def cut(lab, active: str) -> None:
    """The active loses etcd and its peers' heartbeats both ways (the attacker does not)."""
    lab.fault(active, "etcd-partition")
    peers = [IPS[n] for n in GWS if n != active]
    rules = {active: [f"ip protocol 112 ip saddr {ip} drop" for ip in peers]}
    for n in GWS:
        if n != active:
            rules[n] = [f"ip protocol 112 ip saddr {IPS[active]} drop"]
    for node, drops in rules.items():
        script = [f"table inet {CUT_TABLE} {{",
                  "  chain input { type filter hook input priority -300; policy accept; }", "}"]
        script += [f"add rule inet {CUT_TABLE} input {d}" for d in drops]
        lab.netns(node).run(["nft", "-f", "-"], input="\n".join(script) + "\n")


def heal(lab, active: str) -> None:
    for node in GWS:
        lab.netns(node).run(["nft", "delete", "table", "inet", CUT_TABLE], check=False)
    lab.fault(active, "heal")


FORGER = """\
import dataclasses, select, sys, time
from vipmgr.wire.codec import Encoder, decode
from vipmgr.wire.message import Frame, Role
from vipmgr.wire.transport import open_vrrp_socket
active, active_ip, src, key, seconds, *peers = sys.argv[1:]
nodes = [active, *peers]
sock = open_vrrp_socket("eth0")
# far above any real sender's sequence (they start at their wall clock in ns): an agent
# started after this process must not make the forgeries look like replays
encoder = Encoder(bytes.fromhex(key) if key != "-" else None, seq_start=1 << 62)
print("ready", flush=True)
sent, end = 0, time.monotonic() + float(seconds)
first = True
while time.monotonic() < end:
    if not select.select([sock], [], [], 0.1)[0]:
        continue
    frame = decode(sock.recv(2048))
    if not isinstance(frame, Frame) or frame.adverts[0].node != active:
        continue
    for peer in peers:     # "I hear you at your stamp": evidence for the active, every gateway
        echoes = [dataclasses.replace(a, node=peer, role=Role.STANDBY, priority=100,
                                      interval_ms=50, echo_node=active, echo_stamp=a.stamp,
                                      heard=tuple(n for n in nodes if n != peer))
                  for a in frame.adverts]
        for datagram in encoder.encode(echoes, src, active_ip):
            sock.sendto(datagram, (active_ip, 0))
            sent += 1
    if first:
        print("echoing", flush=True)
        first = False
print(sent)
"""


def forge_echoes(lab, active: str, key: bytes | None, seconds: float):
    """The attacker, a process on the internet node: it answers every advert of ``active``
    at once with echoes in its peers' names (signed with ``key``; None: unsigned)."""
    script = lab.workdir("internet") / "forge_echoes.py"
    script.write_text(FORGER)
    return lab.netns("internet").popen(
        [sys.executable, str(script), active, IPS[active], ATTACKER_IP,
         key.hex() if key else "-", str(seconds), *(n for n in GWS if n != active)],
        env=lab.env("internet"), stdout=subprocess.PIPE, text=True)


@dataclasses.dataclass
class EchoAttack:
    active: str
    dual: list[list[str]]       # samples with more than one node holding the VIP
    after: str | None           # the single owner at the end of the attack, if any
    sent: int
    auth: float                 # the cut active's auth rejects during the attack


def echo_attack(lab, key: bytes | None, seconds: float = 4.0) -> EchoAttack:
    """Cut the active from etcd and from its peers' heartbeats while the attacker feeds it
    echoes in its peers' names; sample who holds the VIP all along."""
    active = wait_for(lambda: single_owner(lab), 20, "one owner")
    before = metrics(lab, active).get("auth", 0)
    attacker = forge_echoes(lab, active, key, seconds + 0.5)
    dual = []
    try:
        assert attacker.stdout.readline().strip() == "ready"    # imports take a while
        # it answers the active's adverts before the cut (the line comes within the
        # attack's seconds: the forger exits after them, printing its count instead)
        assert attacker.stdout.readline().strip() == "echoing"
        cut(lab, active)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            now_serving = serving(lab)
            if len(now_serving) > 1:
                dual.append(now_serving)
            time.sleep(0.02)
        after = single_owner(lab)
        sent = int(attacker.communicate(timeout=10)[0].strip())
    finally:
        attacker.kill()
        auth = metrics(lab, active).get("auth", 0) - before
        heal(lab, active)
    wait_for(lambda: single_owner(lab), 20, "one owner after the heal")
    return EchoAttack(active, dual, after, sent, auth)


def test_forged_echoes_do_not_keep_an_etcd_cut_active_serving(lab):
    run = echo_attack(lab, ATTACKER_KEY)
    assert run.sent >= 20                    # ten adverts or more answered with forgeries
    assert run.dual == [], f"two owners: {run.dual[:5]}"
    assert run.after not in (None, run.active), "the cut active still serves"
    assert run.auth >= run.sent * 0.9        # counted (and ignored)


def test_control_believed_echoes_give_two_owners(lab):
    """The same attack against agents that accept unsigned heartbeats (a key file with
    requireAuth: false, the old migration mode): the cut active keeps serving on forged
    echoes while a standby takes over through etcd — the issue's two owners. This is what
    the test above would see without authentication."""
    key = "hex:" + secrets.token_hex(32) + "\n"
    for node in GWS:
        (lab.workdir(node) / "hb.keys").write_text(key)
    start_agents(lab, "authKeyFile: {workdir}/hb.keys\nrequireAuth: false\n")
    run = echo_attack(lab, None)
    assert len(run.dual) > 5, (run, lab.log_tail(run.active, lines=60))
