"""``vipmgr lab``: containerlab topologies on bare network namespaces.

The same ``lab/*.clab.yml`` deploys with ``containerlab deploy -t`` where
Docker exists; here every node is a network namespace (``vl-<lab>-<node>``),
every bridge a namespace holding a Linux bridge, and nothing touches the
host's own interfaces. See docs/lab.md.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from vipmgr.lab import runtime
from vipmgr.lab.bench import (
    ARP_INTERVAL,
    BENCH_FAULTS,
    IMPLS,
    MAX_STREAM,
    READY_TIMEOUT,
    Vipmgr,
    run_failover,
    runs_agents,
    wait_ready,
)
from vipmgr.lab.chaos import chaos_command
from vipmgr.lab.demo import run_demo
from vipmgr.lab.netns import NetnsError
from vipmgr.lab.placement import run_placement, step_line
from vipmgr.lab.runtime import FAULTS, Lab, LabError
from vipmgr.lab.scale import run_scale
from vipmgr.lab.topology import Topology, TopologyError, default_topology_path, load

name_option = click.option("-n", "--name", envvar="VIPMGR_LAB", metavar="LAB",
                           help="lab name (default: the one lab that is up; $VIPMGR_LAB)")


def bench_options(command):
    """-t/--topo, --keep and --json, as every benchmark takes them."""
    for option in reversed((
            click.option("-t", "--topo", type=click.Path(exists=True, dir_okay=False),
                         help="topology file (default: lab/egress.clab.yml)"),
            click.option("--keep", is_flag=True, help="leave the lab up afterwards"),
            click.option("--json", "as_json", is_flag=True,
                         help="the report as JSON on stdout"))):
        command = option(command)
    return command


def _running_lab(name: str | None) -> Lab:
    """The lab a command acts on: ``name``, or the only lab that is up."""
    try:
        if name:
            return Lab.load(name)
        labs = runtime.running_labs()
        if not labs:
            raise click.ClickException("no lab is up: start one with 'vipmgr lab up'")
        if len(labs) > 1:
            raise click.ClickException(f"several labs are up ({', '.join(labs)}): pass --name")
        return Lab.load(labs[0])
    except LabError as exc:
        raise click.ClickException(str(exc)) from None


def _load(path: str | None, name: str | None) -> Topology:
    try:
        topo = load(path or default_topology_path())
        return topo.renamed(name) if name else topo
    except (TopologyError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def lab() -> None:
    """Network-namespace labs from containerlab topology files (lab/*.clab.yml)."""


@lab.command()
@click.option("-t", "--topo", type=click.Path(exists=True, dir_okay=False),
              help="topology file (default: lab/egress.clab.yml)")
@click.option("-n", "--name", envvar="VIPMGR_LAB", metavar="LAB",
              help="deploy under this lab name instead of the file's ($VIPMGR_LAB)")
@click.option("--timeout", type=float, default=runtime.UP_TIMEOUT, show_default=True,
              help="seconds until every healthcheck must pass")
@click.option("--no-wait", is_flag=True,
              help="do not wait for the agents to elect and serve (vipmgr status healthy)")
def up(topo: str | None, name: str | None, timeout: float, no_wait: bool) -> None:
    """Create the lab's namespaces, links and processes; wait until it is ready.

    With the seed topology that means etcd up, the seed manifests applied, an
    agent on every egress node and worker, and vm-backend egressing as the VIP.
    """
    topology = _load(topo, name)
    try:
        deployed = runtime.deploy(topology, timeout=timeout,
                                  progress=lambda msg: click.echo(f"  {msg}", err=True))
        if runs_agents(deployed) and not no_wait:
            click.echo(f"  waiting for the agents (at most {READY_TIMEOUT:g} s)", err=True)
            wait_ready(deployed)
    except (LabError, NetnsError) as exc:
        raise click.ClickException(str(exc)) from None
    st = deployed.state
    click.echo(f"lab {st.name} is up in {st.up_seconds:.1f} s: {len(st.nodes)} namespaces "
               f"{st.prefix}*, etcd {st.etcd_url or '(none)'}")
    click.echo(f"state {deployed.state_dir}, logs and workdirs {st.tmpdir}")
    click.echo("\nTry:")
    flag = "" if name is None else f" --name {st.name}"
    vms = [n.name for n in topology.nodes.values() if n.labels.get("vipmgr.io/role") == "vm"]
    for vm in vms:
        click.echo(f"  vipmgr lab curl{flag} {vm:<22} # the source IP the echo service sees")
    linux = [n.name for n in topology.nodes.values() if not n.is_bridge]
    click.echo(f"  vipmgr lab exec{flag} {linux[0]} -- ip -br addr")
    if runs_agents(deployed):
        click.echo(f"  vipmgr lab exec{flag} {linux[0]} -- vipmgr status")
        click.echo(f"  vipmgr lab agent{flag} stop|start NODE")
    click.echo(f"  vipmgr lab status{flag}")
    click.echo(f"  vipmgr lab fault{flag} NODE crash|freeze|linkdown|...|heal")
    click.echo(f"  vipmgr lab down{flag}")


@lab.command()
@name_option
@click.option("-t", "--topo", type=click.Path(dir_okay=False),
              help="take the lab name from this topology file")
@click.option("--all", "all_labs", is_flag=True, help="every lab that is up")
def down(name: str | None, topo: str | None, all_labs: bool) -> None:
    """Stop every process and remove every namespace, temp and state dir. Idempotent."""
    if all_labs:
        names = runtime.running_labs()
    elif name:
        names = [name]
    elif topo:
        names = [_load(topo, None).name]
    else:
        names = runtime.running_labs() or [_load(None, None).name]
        if len(names) > 1:
            raise click.ClickException(f"several labs are up ({', '.join(names)}): "
                                       "pass --name or --all")
    for lab_name in names:
        removed = runtime.destroy(lab_name)
        click.echo(f"lab {lab_name} is down ({len(removed)} namespaces removed)")


@lab.command()
@name_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status(name: str | None, as_json: bool) -> None:
    """Nodes, their main processes, faults and addresses."""
    info = _running_lab(name).status()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"lab {info['name']}  topology {info['topology']}  up in {info['up_seconds']} s")
    click.echo(f"etcd {info['etcd']}  state {info['state_dir']}  tmp {info['tmpdir']}")
    click.echo(f"{'NODE':<13}{'KIND':<8}{'PROCESS':<16}{'FAULTS':<21} ADDRESSES")
    for node, n in info["nodes"].items():
        proc = n["process"] if n["pid"] is None else f"{n['process']} {n['pid']}"
        if not n["present"]:
            proc = "NAMESPACE GONE"
        addrs = " ".join(f"{ifname}={','.join(c)}" for ifname, c in n["addresses"].items())
        click.echo(f"{node:<13}{n['kind']:<8}{proc:<16}{','.join(n['faults']) or '-':<21} {addrs}")


@lab.command("exec", context_settings={"ignore_unknown_options": True,
                                       "allow_interspersed_args": False})
@name_option
@click.argument("node")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_cmd(name: str | None, node: str, argv: tuple[str, ...]) -> None:
    """Run a command in NODE's namespace with the lab's VIPMGR_ETCD set.

    \b
    vipmgr lab exec gw-a -- ip -br addr
    vipmgr lab exec gw-a -- vipmgr status
    """
    deployed = _running_lab(name)
    try:
        ns = deployed.netns(node)
        env = deployed.env(node)
    except LabError as exc:
        raise click.ClickException(str(exc)) from None
    if argv[0] == "--":  # click keeps the separator once positional parsing has stopped
        argv = argv[1:]
    if not argv:
        raise click.UsageError("no command given after NODE")
    sys.stdout.flush()
    os.execvpe("ip", ns.argv(list(argv)), env)


@lab.command()
@name_option
@click.argument("vm")
@click.option("--dst", default="203.0.113.10", show_default=True, help="echo service address")
@click.option("--port", type=int, default=80, show_default=True)
@click.option("--timeout", type=float, default=2.0, show_default=True)
def curl(name: str | None, vm: str, dst: str, port: int, timeout: float) -> None:
    """Print the source address the echo service sees for a request from VM."""
    try:
        click.echo(_running_lab(name).curl(vm, dst, port, timeout))
    except LabError as exc:
        raise click.ClickException(str(exc)) from None


def _resolve_node(lab: Lab, node: str) -> str:
    """NODE as given, or for ``@GATEWAY`` the gateway's active node right now."""
    if not node.startswith("@"):
        return node
    active = Vipmgr.status(lab, node[1:]).get("active")
    if not active:
        raise click.ClickException(f"{node}: gateway {node[1:]!r} has no active node now "
                                   "(vipmgr status says who serves)")
    return active


@lab.command()
@name_option
@click.argument("node")
@click.argument("kind", type=click.Choice(FAULTS))
@click.option("--iface", default="eth1", show_default=True, help="interface for linkdown")
def fault(name: str | None, node: str, kind: str, iface: str) -> None:
    """Inject a fault into NODE (@GATEWAY: the gateway's active node), or heal its faults.

    \b
    crash                SIGKILL the node's main process (heal restarts it)
    freeze               SIGSTOP it (heal sends SIGCONT)
    linkdown             set --iface down
    heartbeat-partition  drop IP protocol 112 (VRRP) in and out of the node
    etcd-partition       drop traffic between the node and etcd
    heal                 undo every fault of the node
    """
    deployed = _running_lab(name)
    target = _resolve_node(deployed, node)
    try:
        deployed.fault(target, kind, iface)
    except (LabError, NetnsError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{target}{f' (active of {node[1:]})' if target != node else ''}: {kind}")


@lab.command()
@name_option
def heal(name: str | None) -> None:
    """Undo every fault of every node; crashed main processes start again."""
    deployed = _running_lab(name)
    faulty = [n for n, st in deployed.state.nodes.items()
              if st.faults or (st.cmd and deployed.process_state(n) == "exited")]
    try:
        for node in faulty:
            deployed.fault(node, "heal")
    except (LabError, NetnsError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"healed {', '.join(faulty) or 'nothing (no faults)'}")


@lab.command("agent")
@name_option
@click.argument("action", type=click.Choice(["stop", "start", "restart"]))
@click.argument("node")
def agent_cmd(name: str | None, action: str, node: str) -> None:
    """Stop (SIGTERM: a graceful handover), start or restart NODE's agent (@GATEWAY: its active).

    \b
    vipmgr lab agent stop gw-b          # gw-b hands its gateways over and exits
    vipmgr lab agent start gw-b         # the topology's agent command again
    vipmgr lab agent stop @egress-gw    # whichever node is active for egress-gw
    """
    deployed = _running_lab(name)
    node = _resolve_node(deployed, node)
    try:
        running = deployed.process_state(node) in ("running", "frozen")
        if action in ("stop", "restart"):
            if not running and action == "stop":
                raise LabError(f"{node}: no agent is running (start it: vipmgr lab agent start "
                               f"{node})")
            deployed.stop(node)
        if action in ("start", "restart"):
            if running and action == "start":
                raise LabError(f"{node}: the agent is already running "
                               f"(pid {deployed.node(node).pid})")
            pid = deployed.start(node)
            click.echo(f"{node}: agent started (pid {pid}, log {deployed.log_path(node)})")
        else:
            click.echo(f"{node}: agent stopped")
    except (LabError, NetnsError) as exc:
        raise click.ClickException(str(exc)) from None


@lab.group()
def bench() -> None:
    """Benchmarks, each on a lab of its own (deployed, then torn down)."""


@bench.command()
@click.option("--fault", type=click.Choice(BENCH_FAULTS), required=True,
              help="what happens to the active node (graceful: SIGTERM)")
@click.option("--trials", type=click.IntRange(1, 100), default=10, show_default=True)
@click.option("--impl", "impl_name", type=click.Choice(sorted(IMPLS)), default="vipmgr",
              show_default=True)
@click.option("--rate", type=click.FloatRange(10, 5000), default=1000.0, show_default=True,
              help="datagrams per second")
@click.option("--duration", type=click.FloatRange(1.5, MAX_STREAM), default=3.0,
              show_default=True, help="seconds of stream per trial (the fault hits at 1 s)")
@click.option("-n", "--name", help="lab name (default bench-<impl>)")
@bench_options
@click.option("--plot", type=click.Path(dir_okay=False, writable=True), metavar="FILE.svg",
              help="draw the median trial: arrivals by delivering node, outage, ARP owners")
@click.option("--tcp-flows", type=click.IntRange(0, 1000), default=0, show_default=True,
              help="also hold N long-lived TCP connections from vm-backend across each fault")
def failover(fault: str, trials: int, impl_name: str, rate: float, duration: float,
             name: str | None, topo: str | None, keep: bool, as_json: bool,
             plot: str | None, tcp_flows: int) -> None:
    """Outage, loss, wrong-source and dual-answer figures of a failover, over N trials.

    \b
    A UDP stream from vm-backend to the echo service (203.0.113.10:7), the
    fault on the active node one second in, an ARP prober asking who holds
    the VIP every 10 ms. keepalived runs with vipmgr's advert interval.
    """
    command = (f"vipmgr lab bench failover --fault {fault} --trials {trials} --impl {impl_name}"
               + (f" --rate {rate:g}" if rate != 1000 else "")
               + (f" --duration {duration:g}" if duration != 3.0 else "")
               + (f" --tcp-flows {tcp_flows}" if tcp_flows else ""))
    progress = (lambda msg: click.echo(msg, err=True))
    try:
        report = run_failover(impl_name, fault, trials, rate=rate, duration=duration, name=name,
                              topology=topo, keep=keep, say=progress, plot=plot,
                              tcp_flows=tcp_flows)
    except (LabError, NetnsError, TopologyError) as exc:
        raise click.ClickException(str(exc)) from None
    report["command"] = command
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    out = report["outage_ms"]
    click.echo(f"\n{command}")
    click.echo(f"{report['impl']}, fault {fault}, {report['trials']} trials, "
               f"{report['rate']:g} datagrams/s for {report['stream_seconds']:g} s, "
               f"advert interval {report['advert_interval_ms']} ms")
    click.echo(f"  outage ms      p50 {out['p50']:.0f}  p99 {out['p99']:.0f}  max {out['max']:.0f}"
               + (f"  ({report['not_recovered']} trials never recovered)"
                  if report["not_recovered"] else ""))
    click.echo(f"  lost           {report['lost']} of {report['sent']}")
    click.echo(f"  wrong source   {report['wrong_source']}")
    click.echo(f"  dual answer    {report['dual_answer']} ARP probes answered by two nodes "
               f"(one probe per {ARP_INTERVAL * 1000:g} ms)")
    click.echo(f"  MAC flip-backs {report['mac_flip_backs']}")
    if "tcp" in report:
        tcp = report["tcp"]
        click.echo(f"  tcp flows      survived min {tcp['survived_min']}/{tcp['flows']}, "
                   f"median {tcp['survived_p50']:g}; worst stall {tcp['worst_stall_ms_max']:.0f} ms")


@bench.command()
@click.option("--gateways", type=click.IntRange(4, 150), default=12, show_default=True,
              help="gateways in all (the seed's egress-gw and gw01..)")
@click.option("--hold-down", type=click.FloatRange(0.5, MAX_STREAM - 2.0), default=3.0,
              show_default=True, help="the agents' placementHoldDown, seconds")
@click.option("--trials", type=click.IntRange(0, 100), default=5, show_default=True,
              help="rebalance moves measured with the stream and the ARP prober")
@click.option("-n", "--name", help="lab name (default bench-placement)")
@bench_options
def placement(gateways: int, hold_down: float, trials: int, name: str | None,
              topo: str | None, keep: bool, as_json: bool) -> None:
    """The spread of many gateways over the egress nodes after each change, and the cost
    of a rebalance move (docs/placement.md).

    \b
    Steps: a batch of gateways added, three deleted and added one by one, a crash
    and recovery, a freeze and thaw, cordon/uncordon, the egress label taken off
    and put back. Each prints the active gateways per node once settled, when every
    gateway was served by an eligible node, when placement settled, and the moves.
    """
    progress = (lambda msg: click.echo(msg, err=True))
    try:
        report = run_placement(gateways, hold_down, trials, name=name, topology=topo,
                               keep=keep, say=progress)
    except (LabError, NetnsError, TopologyError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"\nvipmgr lab bench placement --gateways {gateways} --hold-down {hold_down:g}"
               f" --trials {trials}")
    click.echo(f"{gateways} gateways on {report['nodes']} nodes, hold-down {hold_down:g} s")
    for step in report["steps"]:
        click.echo(step_line(step))
    moves = report["rebalance"]
    if moves["trials"]:
        out = moves["outage_ms"]
        click.echo(f"  rebalance move ({moves['trials']} trials): outage ms p50 {out['p50']:.0f}"
                   f" p99 {out['p99']:.0f} max {out['max']:.0f}; wrong source "
                   f"{moves['wrong_source']}; dual answer {moves['dual_answer']}; lost "
                   f"{moves['lost']} of {moves['sent']}")


@bench.command()
@click.option("--gateways", type=click.IntRange(2, 151), default=100, show_default=True,
              help="gateways in all (the seed's egress-gw and gw01..)")
@click.option("--sample", type=click.FloatRange(2, 60), default=10.0, show_default=True,
              help="seconds of idle per measurement")
@click.option("--keepalived/--no-keepalived", default=True, show_default=True,
              help="also keepalived, one instance per gateway (if installed)")
@click.option("-n", "--name", help="lab name (default bench-scale)")
@bench_options
def scale(gateways: int, sample: float, keepalived: bool, name: str | None, topo: str | None,
          keep: bool, as_json: bool) -> None:
    """Agent cost and heartbeat datagrams at 1 and N gateways, and a crash of the node
    holding a third of them (docs/lab.md).

    \b
    Idle CPU (one core = 100 %) and RSS of every agent, protocol-112 datagrams per
    second on the public segment; then the seed gateway's node is crashed under the
    UDP stream while an ARP prober asks for up to 16 of its VIPs every 10 ms.
    keepalived runs afterwards on a lab of its own, one instance per gateway.
    """
    progress = (lambda msg: click.echo(msg, err=True))
    try:
        report = run_scale(gateways, name=name, topology=topo, keep=keep,
                           keepalived=keepalived, sample=sample, say=progress)
    except (LabError, NetnsError, TopologyError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"\nvipmgr lab bench scale --gateways {gateways} --sample {sample:g}")
    for impl in ("vipmgr", "keepalived"):
        if impl not in report:
            continue
        for key, count in (("one", 1), ("many", gateways)):
            usage = report[impl][key]
            cpu = "  ".join(f"{n} {v:.2f}%" for n, v in usage["cpu_pct"].items())
            rss = max(usage["rss_mb"].values())
            click.echo(f"{impl:<10} {count:>3} gateway(s): cpu {cpu}; rss max {rss:.0f} MB; "
                       f"heartbeats {usage['heartbeat_datagrams_per_s']:g} datagrams/s "
                       f"({usage['heartbeat_bytes_per_s']} B/s)")
    c = report["vipmgr"]["crash"]
    click.echo(f"crash of {c['victim']} holding {c['held']} gateways: {c['taken_over']} of "
               f"{c['sampled']} sampled active elsewhere, p50 {c['takeover_p50_ms']} ms, "
               f"p99 {c['takeover_p99_ms']} ms, max {c['takeover_max_ms']} ms; wrong source "
               f"{c['wrong_source']}; dual answers {c['dual_answer']}")


@lab.command()
@click.option("-t", "--topo", type=click.Path(exists=True, dir_okay=False),
              help="topology file (default: lab/egress.clab.yml)")
@click.option("-n", "--name", default="demo", show_default=True, help="lab name")
def demo(topo: str | None, name: str) -> None:
    """The seed's scenario end to end: VIP egress, a crash, the failover gap (make demo)."""
    try:
        ok = run_demo(click.echo, topo, name)
    except (LabError, NetnsError, TopologyError) as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(0 if ok else 1)


lab.add_command(chaos_command)  # vipmgr lab chaos: docs/chaos.md
