"""Real traffic through the test world: SNAT, fail-closed, GARP, targeted conntrack, dead-man."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dpworld import (EGRESS, GA_PRIMARY, NODES, SERVICE, VIP, VM1, VM2, VMS, WORKER_UPLINK,
                     arp_answered, gateway, plan_for, policy, resource)

from vipmgr.config.timers import Timers
from vipmgr.dataplane.plan import GarpSettings, build_node_plan
from vipmgr.dataplane.reconcile import Dataplane

pytestmark = pytest.mark.netns
LONG = 60.0  # dead-man timeout for tests that are not about the dead-man


def counter(ns, name: str) -> int:
    out = ns.run(["nft", "list", "counter", "inet", "vipmgr", name]).stdout.split()
    return int(out[out.index("packets") + 1])


def test_snat_then_fail_closed_never_a_wrong_source(world):
    with Dataplane(world["ga"].name, LONG) as ga, Dataplane(world["gb"].name, LONG) as gb, \
            Dataplane(world["w"].name, LONG) as w:
        ga.reconcile(plan_for("ga", {"egw": "ga"}), arm=True)
        gb.reconcile(plan_for("gb", {"egw": "ga"}))
        w.reconcile(plan_for("w", {"egw": "ga"}))
        assert world.udp("vm1", range(1000, 1005)) == [VIP] * 5
        assert world.udp("vm2", range(5000, 5003)) == [WORKER_UPLINK] * 3, "unselected: untouched"

        # a stale worker still steers to ga, which has stepped down: ga's gate drops it
        ga.reconcile(plan_for("ga", {"egw": None}))
        assert world.udp("vm1", range(1100, 1103), timeout=0.2) == ["-"] * 3
        assert counter(world["ga"], "g-egw-fenced") >= 3

        # nobody active: the worker drops selected traffic itself and counts it
        w.reconcile(plan_for("w", {"egw": None}))
        assert world.udp("vm1", range(1200, 1205), timeout=0.2) == ["-"] * 5
        assert counter(world["w"], "g-egw-failclosed") >= 5
        assert w.drops_nowait().result(5)[("egw", "failclosed")] == counter(world["w"],
                                                                            "g-egw-failclosed")
        assert ga.drops_nowait().result(5)[("egw", "fenced")] >= 3
        assert world.udp("vm2", range(5100, 5103)) == [WORKER_UPLINK] * 3

        # and back
        gb.reconcile(plan_for("gb", {"egw": "gb"}), arm=True)
        w.reconcile(plan_for("w", {"egw": "gb"}))
        assert world.udp("vm1", range(1300, 1303)) == [VIP] * 3

    selected = [r for r in world.records() if 1000 <= r.seq < 2000]
    assert {r.source for r in selected} == {VIP}, "a selected packet left with a wrong source"
    assert {r.seq for r in selected} == set(range(1000, 1005)) | set(range(1300, 1303))


def test_selected_traffic_routed_past_the_gateway_interface_is_dropped_not_leaked(world):
    # egress on ga's internal eth0, while ga's route to the service leaves by eth1: without the
    # guard, vm1's datagrams would reach the echo with vm1's own address
    gws = [resource("EgressGateway", "egw", {
        "nodeSelector": EGRESS, "sourceIP": {
            "mode": "PrimaryIPFromEgressGatewayNodeInterface",
            "primaryIPFromEgressGatewayNodeInterface": {"interfaceName": "eth0"}}})]
    with Dataplane(world["ga"].name, LONG) as ga, Dataplane(world["w"].name, LONG) as w:
        ga.reconcile(plan_for("ga", {"egw": "ga"}, gateways=gws), arm=True)
        w.reconcile(plan_for("w", {"egw": "ga"}, gateways=gws))
        assert world.udp("vm1", range(2000, 2004), timeout=0.2) == ["-"] * 4
        assert counter(world["ga"], "g-egw-misrouted") == 4
        assert ga.drops_nowait().result(5) == {("egw", "fenced"): 0, ("egw", "misrouted"): 4}
        assert world.udp("vm2", range(5000, 5002)) == [WORKER_UPLINK] * 2, "unselected: untouched"
        # the same route, with the egress on the interface it uses: SNATed
        ga.reconcile(plan_for("ga", {"egw": "ga"}, gateways=[gateway()]), arm=True)
        assert world.udp("vm1", range(2100, 2102)) == [VIP] * 2
    assert not [r for r in world.records() if 2000 <= r.seq < 2100], "a misrouted packet leaked"


def test_vm_on_the_active_node_is_snated_and_answered(world):
    lab, ga_ns = world.lab, world["ga"]
    lab.add("vm3")
    lab.link("ga", "v3", "vm3", "eth0")
    ga_ns.set_addr("v3", "198.18.3.1/24")
    lab["vm3"].set_addr("eth0", "198.18.3.2/24")
    lab["vm3"].ip("route", "add", "default", "via", "198.18.3.1")
    vm3 = resource("VirtualMachine", "vm3", {"nodeName": "ga", "addresses": ["198.18.3.2"]},
                   {"app": "backend"}, namespace="default")
    with Dataplane(ga_ns.name, LONG) as ga:
        ga.reconcile(plan_for("ga", {"egw": "ga"}, vms=[*VMS, vm3]), arm=True)
        assert world.udp("vm3", range(3000, 3003)) == [VIP] * 3
        ga.reconcile(plan_for("ga", {"egw": "gb"}, vms=[*VMS, vm3]))
        assert world.udp("vm3", range(3100, 3102), timeout=0.2) == ["-"] * 2, "standby: gated"
    assert {r.source for r in world.records() if 3000 <= r.seq < 4000} == {VIP}


def test_in_cluster_destinations_are_left_alone_even_for_a_policy_of_everything(world):
    # policy for 0.0.0.0/0 and nobody active: vm1 cannot leave the cluster, but still
    # reaches vm2 (another VM, a cluster address) directly
    everything = [policy(cidrs=("0.0.0.0/0",))]
    with Dataplane(world["w"].name, LONG) as w:
        w.reconcile(plan_for("w", {"egw": None}, policies=everything))
        assert world.udp("vm1", range(4000, 4002), timeout=0.2) == ["-"] * 2
        dropped = counter(world["w"], "g-egw-failclosed")
        assert dropped >= 2
        ping = world["vm1"].run(["ping", "-c", "2", "-i", "0.2", "-W", "1", VM2], check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert counter(world["w"], "g-egw-failclosed") == dropped


def test_a_vip_given_up_during_its_garp_burst_is_not_announced_any_more(world):
    """A rebalance right after a take: the rest of the burst must not point the segment
    back at a node that no longer holds the VIP (seen in the scale bench: announcements
    0.1-0.5 s after the release)."""
    slow = GarpSettings(count=20, interval=0.05)  # a 1 s burst
    with Dataplane(world["gb"].name, LONG) as gb:
        take = gb.reconcile(build_node_plan("gb", [gateway()], [policy()], VMS, NODES,
                                            {"egw": "gb"}, garp=slow), arm=True)
        time.sleep(0.12)
        gb.reconcile(plan_for("gb", {"egw": "ga"}))
        [sent] = take.wait_announcements()
    assert (sent.ip, sent.mac) == (VIP, world.mac("gb", "eth1"))
    assert 2 <= sent.frames_sent <= 2 * 5, sent  # the first rounds only, not all 20


def test_garp_moves_the_neighbours_arp_cache(world):
    echo = world["echo"]
    mac_a, mac_b = world.mac("ga", "eth1"), world.mac("gb", "eth1")
    with Dataplane(world["ga"].name, LONG) as ga, Dataplane(world["gb"].name, LONG) as gb, \
            Dataplane(world["w"].name, LONG) as w:
        ga.reconcile(plan_for("ga", {"egw": "ga"}), arm=True).wait_announcements()
        w.reconcile(plan_for("w", {"egw": "ga"}))
        assert world.udp("vm1", range(1, 3)) == [VIP] * 2  # echo resolves the VIP to reply
        assert world.neigh_mac("echo", VIP) == mac_a

        ga.reconcile(plan_for("ga", {"egw": "gb"}))
        report = gb.reconcile(plan_for("gb", {"egw": "gb"}), arm=True)
        sent = report.wait_announcements()
        assert [(a.ip, a.mac) for a in sent] == [(VIP, mac_b)]
        deadline = time.monotonic() + 2
        while world.neigh_mac("echo", VIP) != mac_b and time.monotonic() < deadline:
            time.sleep(0.02)
        assert world.neigh_mac("echo", VIP) == mac_b, echo.ip("neigh").stdout
        w.reconcile(plan_for("w", {"egw": "gb"}))
        assert world.udp("vm1", range(10, 12)) == [VIP] * 2
        assert [a.mac for f in gb.announce() for a in f.result(5)] == [mac_b]


def entries(ns) -> set[tuple[str, str, str]]:
    out = set()
    for line in ns.run(["conntrack", "-L", "-p", "udp"], check=False).stdout.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f and
                      f.split("=")[0] in ("src", "dst"))
        srcs = [f.split("=")[1] for f in line.split() if f.startswith("src=")]
        dsts = [f.split("=")[1] for f in line.split() if f.startswith("dst=")]
        if fields:
            out.add((srcs[0], dsts[0], dsts[1]))
    return out


def test_failover_flushes_only_that_gateways_flows(world):
    gws = [gateway(mode="PrimaryIPFromEgressGatewayNodeInterface")]
    ga_ns, gb_ns = world["ga"], world["gb"]
    with Dataplane(ga_ns.name, LONG) as ga, Dataplane(gb_ns.name, LONG) as gb, \
            Dataplane(world["w"].name, LONG) as w:
        ga.reconcile(plan_for("ga", {"egw": "ga"}, gateways=gws), arm=True)
        gb.reconcile(plan_for("gb", {"egw": "ga"}, gateways=gws))
        w.reconcile(plan_for("w", {"egw": "ga"}, gateways=gws))
        assert world.udp("vm1", range(1, 3)) == [GA_PRIMARY] * 2
        # ga's own flow from the very address it SNATs to: not NATed, must survive
        ga_ns.run([sys.executable, "-c", "import socket; s=socket.socket(2,2); "
                   f"s.sendto(b'7', ('{SERVICE}', 7)); s.settimeout(1); s.recv(99)"])
        # gb: a stale entry of the selected flow, and one of an unselected VM
        for src, sport in ((VM1, 40000), (VM2, 40000)):
            gb_ns.run(["conntrack", "-I", "-p", "udp", "-s", src, "-d", SERVICE, "--sport",
                       str(sport), "--dport", "7", "--timeout", "120"])
        own = (GA_PRIMARY, SERVICE, GA_PRIMARY)
        natted = (VM1, SERVICE, GA_PRIMARY)
        assert {own, natted} <= entries(ga_ns)

        report = ga.reconcile(plan_for("ga", {"egw": "gb"}, gateways=gws))
        # ga is still a member (its gate drops the flow): the leave waits for a pause
        assert report.conntrack_deleted == {} and report.deferred_flush is not None
        assert report.deferred_flush.result(5) == {("egw", "leave"): 1}
        assert own in entries(ga_ns) and natted not in entries(ga_ns)
        report = gb.reconcile(plan_for("gb", {"egw": "gb"}, gateways=gws), arm=True)
        assert report.conntrack_deleted == {("egw", "take"): 1}
        assert entries(gb_ns) == {(VM2, SERVICE, VM2)}
        w.reconcile(plan_for("w", {"egw": "gb"}, gateways=gws))
        assert world.udp("vm1", range(3, 5)) == ["192.0.2.12"] * 2


def test_deferred_leave_flush_is_dropped_by_a_retake_and_run_at_once_by_a_departure(world):
    """The leave flush of a gateway the node still gates waits in the background; taking
    the gateway back before it ran keeps the entries (they are live flows again), and
    ceasing to be a member runs it inside that reconcile (no gate drops them any more)."""
    gws = [gateway()]  # VirtualIPAddress: a take keeps the entries SNATed to the VIP
    ga_ns = world["ga"]
    natted = (VM1, SERVICE, VIP)
    with Dataplane(ga_ns.name, LONG) as ga, Dataplane(world["w"].name, LONG) as w:
        ga.reconcile(plan_for("ga", {"egw": "ga"}, gateways=gws), arm=True)
        w.reconcile(plan_for("w", {"egw": "ga"}, gateways=gws))
        assert world.udp("vm1", range(1, 3)) == [VIP] * 2
        assert natted in entries(ga_ns)

        left = ga.reconcile(plan_for("ga", {"egw": "gb"}, gateways=gws))
        back = ga.reconcile(plan_for("ga", {"egw": "ga"}, gateways=gws), arm=True)
        assert left.deferred_flush.result(5) == {}
        assert back.conntrack_deleted.get(("egw", "leave"), 0) == 0
        assert natted in entries(ga_ns), "a re-take lost its flows to a stale leave flush"
        assert world.udp("vm1", range(3, 5)) == [VIP] * 2

        ga.reconcile(plan_for("ga", {"egw": "gb"}, gateways=gws))
        gone = ga.reconcile(plan_for("ga", {}, gateways=[gateway("other")]))
        assert gone.conntrack_deleted == {("egw", "leave"): 1}
        assert natted not in entries(ga_ns)


def test_deadman_frozen_holder_stops_snat_and_arp(world, tmp_path: Path):
    timers = Timers()
    plan_file = tmp_path / "plan.pickle"
    plan_file.write_bytes(pickle.dumps(plan_for("ga", {"egw": "ga"})))
    holder = world["ga"].popen([sys.executable, str(Path(__file__).with_name("holder.py")),
                                str(plan_file), str(timers.advert_interval)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert holder.stdout.readline().strip() == "ready"
    with Dataplane(world["w"].name, LONG) as w:
        w.reconcile(plan_for("w", {"egw": "ga"}))
        mac_a = world.mac("ga", "eth1")
        assert world.udp("vm1", range(1, 3)) == [VIP] * 2
        assert arp_answered(world["echo"], "eth0", VIP) == mac_a

        sender = world["vm1"].popen([sys.executable, "-c",
                                     "import socket,time\ns=socket.socket(2,2)\n"
                                     "for q in range(100000, 100300):\n"
                                     f"    s.sendto(str(q).encode(), ('{SERVICE}', 7)); "
                                     "time.sleep(0.005)"])
        time.sleep(0.3)
        os.kill(holder.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        time.sleep(timers.deadman_timeout)
        assert arp_answered(world["echo"], "eth0", VIP) is None, \
            "a frozen holder's kernel still answers ARP for the VIP"
        sender.wait(10)
        late = [r for r in world.records() if r.seq >= 100000]
        assert late and max(r.arrival for r in late) - frozen_at > -0.05, "sender never got through"
        last = max(r.arrival for r in late) - frozen_at
        # arrival is stamped by the echo process when it reads the socket: allow its latency
        assert last <= timers.deadman_timeout + 0.03, \
            f"SNAT went on {last * 1000:.0f} ms after the freeze"
        assert counter(world["ga"], "g-egw-fenced") > 0
        print(f"dead-man: last SNATed datagram {last * 1000:.1f} ms after SIGSTOP "
              f"(deadmanTimeout {timers.deadman_timeout * 1000:.0f} ms)")

        os.kill(holder.pid, signal.SIGCONT)
        time.sleep(0.1)
        assert arp_answered(world["echo"], "eth0", VIP) == mac_a, "resumed holder re-arms"


def test_newly_steered_vm_loses_its_masqueraded_flows_one_dump_per_burst(world):
    w_ns = world["w"]
    with Dataplane(world["ga"].name, LONG) as ga, Dataplane(w_ns.name, LONG) as w:
        ga.reconcile(plan_for("ga", {"egw": "ga"}), arm=True)
        w.reconcile(plan_for("w", {"egw": "ga"}, policies=[policy(app="nobody")]))
        assert world.udp("vm1", range(1, 3)) == [WORKER_UPLINK] * 2, "not selected yet"
        assert (VM1, SERVICE, WORKER_UPLINK) in entries(w_ns)
        # selected: the masqueraded flow is dropped at once and deleted in the background;
        # a second change in the same burst is served by the same dump
        first = w.reconcile(plan_for("w", {"egw": "ga"}))
        second = w.reconcile(plan_for("w", {"egw": "ga"}, policies=[
            policy(), policy("pol2", app="frontend")]))
        assert first.deferred_flush is second.deferred_flush is not None
        assert first.deferred_flush.result(5) == {("egw", "steer"): 1}
        assert (VM1, SERVICE, WORKER_UPLINK) not in entries(w_ns)
        assert world.udp("vm1", range(3, 5)) == [VIP] * 2
