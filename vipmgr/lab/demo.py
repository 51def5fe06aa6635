"""``vipmgr lab demo`` (``make demo``): the seed's scenario, told step by step to a newcomer.

Lab up → seed manifests (VIP mode) → agents → who is active → what the echo
service sees from each VM → crash the active node while a 1 kHz stream runs →
the same VIP from the new node, and how long the gap was → lab down (always).
"""

from __future__ import annotations

from typing import Callable

from vipmgr.lab.bench import (
    ECHO_IP,
    GATEWAY_NAME,
    VIP,
    FailoverBench,
    Vipmgr,
    agent_available,
)
from vipmgr.lab.runtime import Lab, LabError, deploy, destroy
from vipmgr.lab.topology import default_topology_path, load

Say = Callable[[str], None]


class _Checks:
    """Prints each expectation with its outcome and remembers whether all held."""

    def __init__(self, say: Say) -> None:
        self.say, self.failed = say, 0

    def holds(self, what: str, ok: bool, detail: str) -> None:
        self.failed += not ok
        self.say(f"  {'ok  ' if ok else 'FAIL'} {what}: {detail}")

    def expect(self, what: str, got: str, want: str) -> None:
        self.holds(what, got == want, got if got == want else f"{got}   (expected {want})")


def _curl(lab: Lab, vm: str) -> str:
    try:
        return lab.curl(vm)
    except LabError as exc:
        return f"no answer ({exc})"


def run_demo(say: Say, topology: str | None = None, name: str = "demo") -> bool:
    """Run the demo on a lab of its own; True when every expectation held. Always tears down."""
    ok, why = agent_available()
    if not ok:
        raise LabError("the demo needs the vipmgr agent, and 'vipmgr agent --help' fails in this "
                       f"installation ({why}). Without it the lab still works: try "
                       "'vipmgr lab up' and 'vipmgr lab bench failover --impl keepalived'.")
    topo = load(topology or default_topology_path()).renamed(name)
    checks = _Checks(say)
    say(f"1. Bringing up lab '{name}': every node is a network namespace "
        f"({len(topo.nodes)} of them), nothing touches this host's own network.")
    lab = deploy(topo)
    try:
        say(f"   up in {lab.state.up_seconds:.1f} s: etcd, egress nodes gw-a/gw-b/gw-c, "
            "workers worker-a/worker-b, VMs vm-backend/vm-frontend, and an 'internet' "
            f"router whose echo service at {ECHO_IP} replies with the source IP it sees.")
        say("\n2. Applying the seed manifests (EgressGateway in VirtualIPAddress mode, "
            f"VIP {VIP}; a policy selecting app=backend) and starting the agents.")
        impl = Vipmgr()
        impl.start(lab, lambda msg: say(f"   {msg}"))
        say(lab.exec("etcd", ["vipmgr", "status"]).stdout.rstrip())

        say("\n3. What the outside world sees (curl to the echo service from each VM):")
        checks.expect("vm-backend  (selected by the policy) is seen as the VIP",
                      _curl(lab, "vm-backend"), VIP)
        uplink = lab.addresses("worker-a")["eth1"][0].split("/")[0]
        checks.expect("vm-frontend (not selected) is seen as its worker's own uplink",
                      _curl(lab, "vm-frontend"), uplink)

        bench = FailoverBench(lab, impl)
        active = impl.active(lab)
        say(f"\n4. Crashing the active node {active} (SIGKILL of its agent) while vm-backend "
            f"sends {bench.rate:g} datagrams a second for {bench.duration:g} s.")
        result = bench.trial(0, "crash")
        path = " -> ".join(result.served_by) or "nobody"
        say(f"   delivered through: {path}")
        say(f"   gap in the stream: {result.outage_ms:.0f} ms"
            f"{'' if result.recovered else ' (never recovered!)'}, lost {result.lost} of "
            f"{result.sent}, wrong source IP {result.wrong_source}, "
            f"two nodes answering ARP for the VIP: {result.dual_answer} times")

        say("\n5. After the failover:")
        new = impl.active(lab)
        checks.holds("another node is active", new not in (None, active),
                     f"{active} -> {new}")
        checks.expect(f"vm-backend is still seen as the VIP (now via {new})",
                      _curl(lab, "vm-backend"), VIP)
        checks.holds("no datagram left with another source IP", result.wrong_source == 0,
                     f"{result.wrong_source} did")
        say(lab.exec("etcd", ["vipmgr", "status", GATEWAY_NAME]).stdout.rstrip())
    finally:
        destroy(name)
        say(f"\n6. Lab '{name}' is down: namespaces, processes and temp files removed.")
    say("All good." if not checks.failed else f"{checks.failed} expectation(s) failed.")
    return not checks.failed
