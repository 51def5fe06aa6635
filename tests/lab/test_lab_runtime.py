"""The namespace runtime on real namespaces: the seed topology up, echo, faults, teardown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from vipmgr.lab.bench import seed_network
from vipmgr.lab.echo import read_udp_log
from vipmgr.lab.netns import list_namespaces
from vipmgr.lab.runtime import Lab, LabError, deploy, destroy, state_root
from vipmgr.lab.topology import parse
from waiting import wait_for

pytestmark = pytest.mark.netns

GATEWAYS = ("gw-a", "gw-b", "gw-c")
PLACEHOLDER = "sleep 600"  # stands in for `vipmgr agent --node …` until the agent exists
VIPMGR = str(Path(sys.executable).with_name("vipmgr"))


def unique_name(nodeid: str) -> str:
    return f"t{os.getpid() % 100000}-{zlib.crc32(nodeid.encode()) % 1000}"


def seed_topology(name: str):
    return seed_network(name).with_cmds({gw: PLACEHOLDER for gw in GATEWAYS})


def assert_gone(lab: Lab) -> None:
    st = lab.state
    assert not [ns for ns in list_namespaces() if ns.startswith(st.prefix)]
    assert not Path(st.tmpdir).exists()
    assert not (lab.root / st.name).exists()
    for node in st.nodes.values():
        if node.pid is not None:
            assert not Path(f"/proc/{node.pid}").exists() or _zombie(node.pid), node.name


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture(scope="module")
def egress_lab(request):
    """The seed topology, gateways running a placeholder main process; shared by the module."""
    name = unique_name(request.node.nodeid)
    destroy(name)
    lab = deploy(seed_topology(name))
    yield lab
    destroy(name)


@pytest.fixture
def lab_name(request):
    name = unique_name(request.node.nodeid)
    destroy(name)
    yield name
    destroy(name)


def test_lab_up_is_ready_quickly(egress_lab):
    print(f"\nlab up of the seed topology: {egress_lab.state.up_seconds:.2f} s")
    assert egress_lab.state.up_seconds < 15


def test_echo_sees_each_node_by_its_egress_address(egress_lab):
    assert egress_lab.curl("vm-frontend") == "198.18.0.21"  # worker-a's uplink, masqueraded
    assert egress_lab.curl("vm-backend") == "198.18.0.22"
    assert egress_lab.curl("vm-frontend", dst="203.0.113.20") == "198.18.0.21"
    for i, gw in enumerate(GATEWAYS):
        assert egress_lab.curl(gw) == f"192.0.2.{11 + i}"


def test_nodes_reach_etcd_at_the_labs_etcd_url(egress_lab):
    url = egress_lab.env("gw-b")["VIPMGR_ETCD"]
    assert url == "http://198.51.100.2:2379" == egress_lab.state.etcd_url
    for node in (*GATEWAYS, "worker-a", "worker-b"):
        out = egress_lab.exec(node, ["python3", "-m", "vipmgr.lab.echo", "get", f"{url}/health"])
        assert out.returncode == 0 and '"health":"true"' in out.stdout, (node, out.stderr)


def test_udp_datagrams_are_recorded_with_their_source(egress_lab):
    script = ("import socket\n"
              "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)\n"
              "for seq in range(5):\n"
              "    s.sendto(b'%d' % seq, ('203.0.113.10', 7)); print(s.recv(100).decode(), end='')\n")
    out = egress_lab.exec("vm-backend", ["python3", "-c", script], check=True)
    assert out.stdout.splitlines() == [f"{seq} 198.18.0.22" for seq in range(5)]
    records = read_udp_log(egress_lab.workdir("internet") / "echo-udp.log")
    assert [(r.seq, r.source) for r in records[-5:]] == [(seq, "198.18.0.22") for seq in range(5)]
    worker_mac = json.loads(egress_lab.netns("worker-b").ip("-j", "link", "show", "eth1").stdout)[0]
    l2 = read_udp_log(egress_lab.workdir("internet") / "echo-l2.log")
    assert [(r.seq, r.source, r.mac) for r in l2[-5:]] == [
        (seq, "198.18.0.22", worker_mac["address"]) for seq in range(5)]


def test_crash_kills_the_main_process_and_heal_restarts_it(egress_lab):
    old = egress_lab.node("gw-a").pid
    egress_lab.fault("gw-a", "crash")
    assert egress_lab.process_state("gw-a") == "exited"
    assert Lab.load(egress_lab.name).node("gw-a").faults == ["crash"]  # persisted for other shells
    egress_lab.fault("gw-a", "heal")
    assert egress_lab.process_state("gw-a") == "running"
    assert egress_lab.node("gw-a").pid != old
    assert egress_lab.node("gw-a").faults == []


def test_freeze_stops_the_process_and_heal_thaws_it(egress_lab):
    pid = egress_lab.node("gw-b").pid
    egress_lab.fault("gw-b", "freeze")
    assert egress_lab.process_state("gw-b") == "frozen"
    egress_lab.fault("gw-b", "heal")
    assert egress_lab.process_state("gw-b") == "running"
    assert egress_lab.node("gw-b").pid == pid


def test_stop_and_start_a_main_process_like_an_agent(egress_lab):
    try:
        egress_lab.start("worker-a", ["sh", "-c", "echo started $VIPMGR_ETCD; exec sleep 600"])
        assert egress_lab.process_state("worker-a") == "running"
        deadline = time.monotonic() + 5
        while "started" not in egress_lab.log_tail("worker-a") and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(LabError, match="still running"):
            egress_lab.start("worker-a")
        egress_lab.stop("worker-a")  # SIGTERM: the graceful path
        assert egress_lab.process_state("worker-a") == "exited"
        assert "started http://198.51.100.2:2379" in egress_lab.log_tail("worker-a")
    finally:  # back to the topology's "no main process" for the other tests of the module
        egress_lab.stop("worker-a")
        egress_lab.node("worker-a").cmd = []
        egress_lab.node("worker-a").pid = None
        egress_lab.save()


def test_faults_need_a_main_process(egress_lab):
    with pytest.raises(LabError, match="no running main process"):
        egress_lab.fault("worker-a", "crash")
    with pytest.raises(LabError, match="no node"):
        egress_lab.fault("gw-z", "crash")


def test_linkdown_cuts_the_public_side_until_heal(egress_lab):
    egress_lab.fault("gw-c", "linkdown")
    link = egress_lab.netns("gw-c").ip("-j", "link", "show", "eth1").stdout
    assert "NO-CARRIER" in link  # the cable is pulled; the interface itself stays up
    with pytest.raises(LabError):
        egress_lab.curl("gw-c", timeout=0.5)
    assert egress_lab.curl("gw-b") == "192.0.2.12"
    egress_lab.fault("gw-c", "heal")
    assert egress_lab.curl("gw-c") == "192.0.2.13"


def test_etcd_partition_cuts_only_that_node_from_etcd(egress_lab):
    health = ["python3", "-m", "vipmgr.lab.echo", "get", "http://198.51.100.2:2379/health",
              "--timeout", "0.5"]
    egress_lab.fault("gw-a", "etcd-partition")
    try:
        assert egress_lab.exec("gw-a", health).returncode != 0
        assert egress_lab.exec("gw-b", health).returncode == 0
        assert egress_lab.curl("gw-a") == "192.0.2.11"  # everything else still flows
    finally:
        egress_lab.fault("gw-a", "heal")
    assert egress_lab.exec("gw-a", health).returncode == 0


RAW_RECV = ("import socket, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112); s.settimeout(0.8)\n"
            "print('open', flush=True)\n"
            "try:\n    s.recv(100); print('got')\nexcept socket.timeout:\n    print('none')\n")
RAW_SEND = ("import socket, sys, time\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)\n"
            "for _ in range(10):\n"
            "    try:\n        s.sendto(b'x' * 20, (sys.argv[1], 0))\n"
            "    except PermissionError:\n        pass  # refused by our own output hook\n"
            "    time.sleep(0.03)\n")


def vrrp_gets_through(lab: Lab, src: str, dst: str, dst_ip: str) -> bool:
    """Send IP protocol 112 packets from ``src`` and report whether ``dst`` received one."""
    ns = lab.netns(dst)
    receiver = subprocess.Popen(ns.argv(["python3", "-c", RAW_RECV]), env=lab.env(dst),
                                stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout.readline().strip() == "open"
        lab.exec(src, ["python3", "-c", RAW_SEND, dst_ip], check=True)
        return receiver.communicate(timeout=5)[0].strip() == "got"
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()


def test_heartbeat_partition_drops_vrrp_both_ways_until_heal(egress_lab):
    assert vrrp_gets_through(egress_lab, "gw-b", "gw-a", "198.51.100.11")
    egress_lab.fault("gw-a", "heartbeat-partition")
    try:
        assert not vrrp_gets_through(egress_lab, "gw-b", "gw-a", "198.51.100.11")
        assert not vrrp_gets_through(egress_lab, "gw-a", "gw-b", "198.51.100.12")
        assert vrrp_gets_through(egress_lab, "gw-c", "gw-b", "198.51.100.12")
    finally:
        egress_lab.fault("gw-a", "heal")
    assert vrrp_gets_through(egress_lab, "gw-b", "gw-a", "198.51.100.11")


def test_status_reports_nodes_processes_and_addresses(egress_lab):
    info = egress_lab.status()
    assert info["etcd"] == "http://198.51.100.2:2379"
    assert info["nodes"]["etcd"]["process"] == "running"
    assert info["nodes"]["worker-a"]["process"] == "none"
    assert info["nodes"]["worker-a"]["addresses"] == {
        "eth0": ["198.51.100.21/24"], "eth1": ["198.18.0.21/24"], "eth2": ["198.18.1.1/30"]}
    assert all(n["present"] for n in info["nodes"].values())


def test_cli_status_exec_curl_against_a_running_lab(egress_lab):
    env = {**os.environ, "VIPMGR_LAB": egress_lab.name}
    run = lambda *argv: subprocess.run([VIPMGR, "lab", *argv], env=env, capture_output=True,
                                       text=True, timeout=30)
    status = json.loads(run("status", "--json").stdout)
    assert status["nodes"]["gw-a"]["netns"] == egress_lab.state.prefix + "gw-a"
    out = run("exec", "gw-a", "--", "sh", "-c", "echo $VIPMGR_ETCD; exit 3")
    assert (out.returncode, out.stdout) == (3, "http://198.51.100.2:2379\n")
    assert run("curl", "vm-frontend").stdout == "198.18.0.21\n"
    bad = run("curl", "no-such-vm")
    assert bad.returncode == 1 and "no node" in bad.stderr


def test_up_refuses_a_lab_that_is_already_up(egress_lab):
    with pytest.raises(LabError, match="already up"):
        deploy(seed_topology(egress_lab.name))


def test_cmd_env_workdir_exec_and_wait_for_order(lab_name):
    topo = parse({"name": lab_name, "topology": {
        "nodes": {
            "a": {"kind": "linux", "env": {"GREETING": "hello"},
                  "cmd": "sh -c 'echo $GREETING > env; sleep 0.3; touch ready; exec sleep 600'",
                  "healthcheck": {"test": ["CMD", "test", "-f", "ready"]},
                  "exec": ["ip addr add 198.51.100.1/24 dev eth0"]},
            "b": {"kind": "linux", "cmd": "sh -c 'ls ../a/ready > seen; exec sleep 600'",
                  "stages": {"create": {"wait-for": [{"node": "a", "stage": "healthy"}]}},
                  "exec": ["ip addr add 198.51.100.2/24 dev eth0"]},
        },
        "links": [{"endpoints": ["a:eth0", "b:eth0"]}]}})
    lab = deploy(topo)
    assert (lab.workdir("a") / "env").read_text() == "hello\n"
    seen = lab.workdir("b") / "seen"  # b has no healthcheck: up does not wait for its cmd's output
    text = wait_for(lambda: seen.exists() and seen.read_text(), 5, "b's cmd to write 'seen'")
    assert text == "../a/ready\n"  # b started after a was healthy
    assert lab.exec("b", ["ping", "-c", "1", "-W", "2", "198.51.100.1"]).returncode == 0
    destroy(lab_name)
    assert_gone(lab)


@pytest.mark.parametrize("node, why", [
    ({"kind": "linux", "exec": ["ip link set nonexistent up"]}, "exec"),
    ({"kind": "linux", "cmd": "false", "healthcheck": {"test": ["CMD", "false"]}},
     "main process exited"),
])
def test_a_failing_up_leaves_nothing_behind(lab_name, node, why):
    topo = parse({"name": lab_name, "topology": {"nodes": {"n": node, "br": {"kind": "bridge"}},
                                                 "links": [{"endpoints": ["n:eth0", "br:n-eth0"]}]}})
    tmp_before = {p.name for p in Path("/tmp").glob(f"vipmgr-lab-{lab_name}-*")}
    with pytest.raises(LabError, match=why):
        deploy(topo, timeout=3)
    assert not [ns for ns in list_namespaces() if ns.startswith(f"vl-{lab_name}-")]
    assert {p.name for p in Path("/tmp").glob(f"vipmgr-lab-{lab_name}-*")} == tmp_before
    assert not (state_root() / lab_name).exists()


def test_up_clears_leftover_namespaces_of_a_lost_lab(lab_name):
    stale = f"vl-{lab_name}-gw-a"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    lab = deploy(seed_topology(lab_name))
    assert lab.curl("gw-a") == "192.0.2.11"
    destroy(lab_name)
    assert stale not in list_namespaces()


def test_cli_up_and_down_from_other_processes_twice(lab_name):
    run = lambda *argv: subprocess.run([VIPMGR, "lab", *argv], capture_output=True, text=True,
                                       timeout=60)
    up = run("up", "--name", lab_name)
    assert up.returncode == 0, up.stderr
    assert f"lab {lab_name} is up" in up.stdout and "vipmgr lab curl" in up.stdout
    lab = Lab.load(lab_name)
    assert lab.process_state("etcd") == "running"
    for _ in range(2):
        down = run("down", "--name", lab_name)
        assert down.returncode == 0, down.stderr
        assert_gone(lab)
    assert "0 namespaces removed" in down.stdout


def test_the_topology_carries_selected_traffic_through_an_egress_node(egress_lab):
    """What the agents will program, done by hand: the lab's routes, rp_filter and ARP allow it.

    worker-b steers vm-backend's traffic to 203.0.113.10 (only) to gw-a; gw-a SNATs it to
    the VIP on eth1; replies come back through gw-a and worker-b.
    """
    worker, gw = egress_lab.netns("worker-b"), egress_lab.netns("gw-a")
    snat = ("table ip labtest {\n chain post {\n  type nat hook postrouting priority srcnat;\n"
            "  ip saddr 198.18.2.2 oifname eth1 snat to 192.0.2.100\n }\n}\n")
    try:
        worker.ip("rule", "add", "from", "198.18.2.2", "to", "203.0.113.10/32", "lookup", "100")
        worker.ip("route", "add", "default", "via", "198.51.100.11", "dev", "eth0", "table", "100")
        gw.ip("addr", "add", "192.0.2.100/32", "dev", "eth1")
        gw.run(["nft", "-f", "-"], input=snat)
        assert egress_lab.curl("vm-backend") == "192.0.2.100"
        assert egress_lab.curl("vm-backend", dst="203.0.113.20") == "198.18.0.22"  # not selected
        assert egress_lab.curl("vm-frontend") == "198.18.0.21"
    finally:
        worker.ip("rule", "del", "from", "198.18.2.2", "to", "203.0.113.10/32", "lookup", "100",
                  check=False)
        worker.ip("route", "flush", "table", "100", check=False)
        gw.ip("addr", "del", "192.0.2.100/32", "dev", "eth1", check=False)
        gw.run(["nft", "delete", "table", "ip", "labtest"], check=False)
    assert egress_lab.curl("vm-backend") == "198.18.0.22"
