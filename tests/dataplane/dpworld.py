"""The dataplane test world: two gateways, a worker with two VMs, an external echo service.

::

    vm1 198.18.1.2 ─┐                      ┌─ ga eth0 198.51.100.11   ga eth1 192.0.2.11 ─┐
    vm2 198.18.2.2 ─┤ w  eth0 198.51.100.21 ┤ (bridge int)             (bridge ext)         ├ echo 192.0.2.50
                    │    eth1 198.18.0.21 ──┼─ gb eth0 198.51.100.12   gb eth1 192.0.2.12 ─┘  lo 203.0.113.10
                    └ (masquerade, bridge up) ─────────────────────────────────── echo 198.18.0.1

The worker's own uplink (eth1) masquerades whatever it forwards: that is where
unselected traffic goes, and where selected traffic must never go. The echo
service (vipmgr.lab.echo) logs the source of every UDP datagram it receives.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from vipmgr.dataplane.plan import NodePlan, build_node_plan
from vipmgr.lab.echo import read_udp_log
from vipmgr.lab.netns import Netns, NetnsLab
from vipmgr.resources.errors import Problems
from vipmgr.resources.models import parse_manifest

VIP = "192.0.2.100"
SERVICE = "203.0.113.10"
VM1, VM2 = "198.18.1.2", "198.18.2.2"
WORKER_UPLINK = "198.18.0.21"
GA_PRIMARY, GB_PRIMARY = "192.0.2.11", "192.0.2.12"
ECHO_PORT = 7


def resource(kind: str, name: str, spec: dict, labels: dict | None = None, **meta):
    api = "vipmgr.io/v1alpha1" if kind in ("Node", "VirtualMachine") \
        else "network.deckhouse.io/v1alpha1"
    problems = Problems()
    obj = parse_manifest({"apiVersion": api, "kind": kind,
                          "metadata": {"name": name, "labels": labels or {}, **meta},
                          "spec": spec}, problems)
    assert not problems, problems
    return obj


EGRESS = {"node-role.deckhouse.io/egress": ""}


def gateway(name: str = "egw", mode: str = "VirtualIPAddress", vip: str = VIP):
    src = ({"mode": mode, "virtualIPAddress": {"ip": vip, "interfaceName": "eth1"}}
           if mode == "VirtualIPAddress"
           else {"mode": mode, "primaryIPFromEgressGatewayNodeInterface": {"interfaceName": "eth1"}})
    return resource("EgressGateway", name, {"nodeSelector": EGRESS, "sourceIP": src})


def policy(name: str = "pol", gw: str = "egw", cidrs=("203.0.113.0/24",), app: str = "backend"):
    return resource("EgressGatewayPolicy", name, {
        "destinationCIDRs": list(cidrs), "egressGatewayName": gw,
        "selectors": [{"podSelector": {"matchLabels": {"app": app}}}]})


NODES = [
    resource("Node", "ga", {"internalIP": "198.51.100.11",
                            "addresses": {"eth0": "198.51.100.11", "eth1": GA_PRIMARY}}, EGRESS),
    resource("Node", "gb", {"internalIP": "198.51.100.12",
                            "addresses": {"eth0": "198.51.100.12", "eth1": GB_PRIMARY}}, EGRESS),
    resource("Node", "w", {"internalIP": "198.51.100.21",
                           "addresses": {"eth0": "198.51.100.21", "eth1": WORKER_UPLINK}}),
]
VMS = [
    resource("VirtualMachine", "vm1", {"nodeName": "w", "addresses": [VM1]}, {"app": "backend"},
             namespace="default"),
    resource("VirtualMachine", "vm2", {"nodeName": "w", "addresses": [VM2]}, {"app": "frontend"},
             namespace="default"),
]


def plan_for(node: str, active: dict[str, str | None], gateways=None, policies=None,
             vms=None) -> NodePlan:
    return build_node_plan(node, gateways or [gateway()], policies or [policy()],
                           VMS if vms is None else vms, NODES, active)


@dataclass
class World:
    lab: NetnsLab
    log: Path

    def __getitem__(self, short: str) -> Netns:
        return self.lab[short]

    def records(self) -> list:
        return read_udp_log(self.log) if self.log.exists() else []

    def udp(self, vm: str, seqs: range, timeout: float = 0.5) -> list[str]:
        """Send one datagram per seq from ``vm`` (one flow); the sources the echo reported."""
        script = (
            "import socket,sys\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(%r)\n"
            "s.bind(('0.0.0.0', 40000))\n"
            "for q in range(%d,%d):\n"
            "    s.sendto(str(q).encode(), (%r, %d))\n"
            "    try: print(s.recv(100).decode().split()[1])\n"
            "    except socket.timeout: print('-')\n"
        ) % (timeout, seqs.start, seqs.stop, SERVICE, ECHO_PORT)
        out = self.lab[vm].run([sys.executable, "-c", script], timeout=30).stdout
        return out.split()

    def neigh_mac(self, ns: str, ip: str) -> str | None:
        out = self.lab[ns].ip("neigh", "show", ip).stdout.split()
        return out[out.index("lladdr") + 1] if "lladdr" in out else None

    def mac(self, ns: str, ifname: str) -> str:
        return self.lab[ns].run(["cat", f"/sys/class/net/{ifname}/address"]).stdout.strip()


def _sysctls(ns: Netns, forward: bool) -> None:
    ns.sh(f"echo {int(forward)} > /proc/sys/net/ipv4/ip_forward; "
          "for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > $f; done")


@pytest.fixture
def world(netns_lab: NetnsLab, tmp_path: Path) -> World:
    lab = netns_lab
    for br in ("int", "ext", "up"):
        lab.add_bridge(br)
    for short in ("w", "ga", "gb", "echo", "vm1", "vm2"):
        lab.add(short)
    lab.link("w", "eth0", "int", "w0")
    lab.link("w", "eth1", "up", "w1")
    lab.link("echo", "eth1", "up", "e1")
    lab.link("echo", "eth0", "ext", "e0")
    for g, n in (("ga", 11), ("gb", 12)):
        lab.link(g, "eth0", "int", f"{g}0")
        lab.link(g, "eth1", "ext", f"{g}1")
        lab[g].set_addr("eth0", f"198.51.100.{n}/24")
        lab[g].set_addr("eth1", f"192.0.2.{n}/24")
        lab[g].ip("route", "add", "203.0.113.0/24", "via", "192.0.2.50")
    for i, vm in ((1, "vm1"), (2, "vm2")):
        lab.link("w", f"v{i}", vm, "eth0")
        lab["w"].set_addr(f"v{i}", f"198.18.{i}.1/24")
        lab[vm].set_addr("eth0", f"198.18.{i}.2/24")
        lab[vm].ip("route", "add", "default", "via", f"198.18.{i}.1")
    w = lab["w"]
    w.set_addr("eth0", "198.51.100.21/24")
    w.set_addr("eth1", f"{WORKER_UPLINK}/24")
    w.ip("route", "add", "default", "via", "198.18.0.1")
    w.run(["nft", "-f", "-"], input="table ip labnat {\n chain post {\n"
          "  type nat hook postrouting priority srcnat; oifname \"eth1\" masquerade\n }\n}\n")
    echo = lab["echo"]
    echo.set_addr("eth0", "192.0.2.50/24")
    echo.set_addr("eth1", "198.18.0.1/24")
    echo.set_addr("lo", f"{SERVICE}/32")
    for short, fwd in (("w", True), ("ga", True), ("gb", True), ("echo", False)):
        _sysctls(lab[short], fwd)
    # settle the fresh bridges (a first ARP may be lost while ports come up) before any test
    pings = [subprocess.Popen(lab[a].argv(["ping", "-c1", "-W3", dst]), stdout=subprocess.DEVNULL)
             for a, dst in (("ga", "192.0.2.50"), ("gb", "192.0.2.50"), ("w", "198.51.100.11"),
                            ("w", "198.51.100.12"), ("w", "198.18.0.1"), ("vm1", "198.18.1.1"),
                            ("vm2", "198.18.2.1"), ("ga", "198.51.100.21"),
                            ("gb", "198.51.100.21"))]
    for p in pings:
        p.wait(10)
    log = tmp_path / "echo-udp.log"
    echo.popen([sys.executable, "-m", "vipmgr.lab.echo", "serve", "--http-port", "8080",
                "--udp-port", str(ECHO_PORT), "--udp-log", str(log)])
    deadline = time.monotonic() + 10
    while "0.0.0.0:7 " not in echo.run(["ss", "-lun"]).stdout + " ":
        assert time.monotonic() < deadline, "echo service did not start"
        time.sleep(0.05)
    return World(lab, log)


def arp_answered(ns: Netns, ifname: str, ip: str, timeout: float = 0.3) -> str | None:
    """Send one ARP request for ``ip`` from ``ns``; the MAC that answered, or None."""
    from scapy.layers.l2 import ARP, Ether

    from vipmgr.dataplane.kernel import NetnsThread

    def probe() -> str | None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)) as sock:
            sock.bind((ifname, 0x0806))
            mac = ":".join(f"{b:02x}" for b in sock.getsockname()[4][:6])
            sock.send(bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
                            / ARP(op=1, hwsrc=mac, psrc="192.0.2.50", pdst=ip)))
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    frame = sock.recv(100)
                except socket.timeout:
                    break
                arp = Ether(frame).getlayer(ARP)
                if arp is not None and arp.op == 2 and arp.psrc == ip:
                    return arp.hwsrc
        return None

    thread = NetnsThread(ns.name, "arp-probe")
    try:
        return thread.call(probe)
    finally:
        thread.close()
