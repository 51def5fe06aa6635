"""``vipmgr status`` (one view per gateway, VRRP/pacemaker style) and ``vipmgr switchover``.

Exit codes (the same in ``vipmgr --help`` and the README): status 0 every
gateway healthy, 1 degraded, 4 a gateway has no active node; switchover 0
requested (with ``--wait``: the new active serves), 1 refused, 5 ``--wait``
ran out of time (the old active still serves, or nobody does).
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import click

from vipmgr.cli.common import dump, fail, store_command
from vipmgr.cli.events import record_refusal
from vipmgr.cli.resources import StatusView, node_criteria
from vipmgr.core.placement import choices
from vipmgr.store import events as history_store
from vipmgr.store.events import GatewayEvent
from vipmgr.store.placement import read_records
from vipmgr.store.switchover import encode_switchover, switchover_key
from vipmgr.resources.models import (
    KIND_BY_KIND,
    EgressGateway,
    EgressGatewayPolicy,
    Node,
    VirtualMachine,
)
from vipmgr.resources.status import GatewayMemberStatus
from vipmgr.store.resources import ResourceStore

EXIT_OK, EXIT_DEGRADED, EXIT_NO_ACTIVE, EXIT_TIMEOUT = 0, 1, 4, 5
# A member with no status record whose peers heard its heartbeats this recently is alive
# but cut from etcd (its status is bound to a lease it could not keep), not "no agent".
HEARD_ALIVE_S = 3.0


@dataclass
class GatewayReport:
    """Everything ``status`` says about one gateway; also its -o json form."""

    name: str
    mode: str
    egress_ip: str
    interface: str
    active: str | None
    active_since: float | None
    epoch: int
    members: list[dict[str, Any]] = field(default_factory=list)
    last_failover: dict[str, Any] = field(default_factory=dict)
    policies: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    health: str = "healthy"  # healthy | degraded | no-active

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _heard_by(node: str, members: dict[str, GatewayMemberStatus], now: float
              ) -> tuple[str, float] | None:
    """The peer that heard ``node``'s heartbeats most recently, and how long ago."""
    ages = [(now - m.heard_peers[node], m.node) for m in members.values()
            if m.node != node and node in m.heard_peers]
    if not ages:
        return None
    age, peer = min(ages)
    return peer, age


def build_report(gw: EgressGateway, nodes: list[Node], vms: list[VirtualMachine],
                 policies: list[EgressGatewayPolicy], view: StatusView,
                 last_failover: GatewayEvent | None = None) -> GatewayReport:
    """``last_failover``: the newest failover in the gateway's history (it names the old
    node and the cause also for graceful handovers, which the members' records do not)."""
    members_status = view.members.get(gw.name, {})
    actives = [m for m in members_status.values() if m.role == "active"]
    holder, epoch = view.holders.get(gw.name, (None, 0))
    active = members_status.get(holder) if holder else None
    egress_ip = gw.source_ip.virtual_ip or (active.egress_ip if active else "") or ""
    interface = gw.source_ip.interface_name or (active.interface if active else "") or ""
    report = GatewayReport(gw.name, gw.source_ip.mode, egress_ip, interface, holder,
                           active.since if active else None, epoch)
    eligible_standbys = 0
    cut: list[str] = []
    for node in nodes:
        if not gw.node_selector.matches(node.labels):
            continue
        crit = node_criteria(node, [gw], view)
        m: GatewayMemberStatus | None = members_status.get(node.name)
        # the agent also knows problems of this gateway alone (its interface, the VIP's subnet)
        reasons = list(dict.fromkeys(crit["reasons"] + (m.reasons if m else [])))
        eligible = crit["eligible"] and (m.eligible if m else True)
        heard = (max(m.heard_peers.values()) if m and m.heard_peers else None)
        role, why_not = (m.role if m else "no-agent"), "; ".join(reasons)
        alive = _heard_by(node.name, members_status, view.now) if m is None else None
        if alive is not None and alive[1] < HEARD_ALIVE_S:
            role = "etcd-cut"
            why_not = "; ".join([f"cut from etcd: {alive[0]} heard it {alive[1]:.1f}s ago",
                                 *(r for r in reasons if not r.startswith("no agent"))])
            cut.append(f"{node.name} (heard by {alive[0]} {alive[1]:.1f}s ago)")
        report.members.append({
            "node": node.name, "role": role,
            "priority": m.priority if m else None, "eligible": eligible,
            "why_not": why_not,
            "last_heartbeat_age_s": round(view.now - heard, 3) if heard else None,
            "heartbeat_path_ok": m.heartbeat_path_ok if m else None,
            "etcd_ok": m.etcd_ok if m else (False if role == "etcd-cut" else None)})
        if m and m.role != "active" and eligible:
            eligible_standbys += 1
        if m and m.last_failover and (not report.last_failover
                                      or m.last_failover.get("at", 0)
                                      > report.last_failover.get("at", 0)):
            report.last_failover = dict(m.last_failover)
    if last_failover is not None and last_failover.at >= report.last_failover.get("at", 0) - 1:
        report.last_failover = {"from": last_failover.previous or None, "to": last_failover.node,
                                "reason": last_failover.reason,
                                "duration_ms": last_failover.duration_ms, "at": last_failover.at}
    for pol in policies:
        if pol.egress_gateway_name == gw.name:
            report.policies.append({"name": pol.name,
                                    "vms": sum(1 for v in vms if pol.selects(v)),
                                    "cidrs": len(pol.destination_cidrs)})
    if len(actives) > 1:
        report.problems.append(f"{len(actives)} nodes report active: "
                               f"{', '.join(m.node for m in actives)}")
    serving = holder is not None and active is not None and active.role == "active"
    if holder is None:
        report.problems.append("no active node: selected traffic is dropped (fail closed)")
    elif not serving:
        report.problems.append(f"{holder} holds the authority but does not report serving "
                               f"({active.role if active else 'no agent status'})")
    if holder and eligible_standbys == 0:
        report.problems.append("no eligible standby: the next failure is an outage")
    for name in cut:
        report.problems.append(f"{name}: alive but cut from etcd (its heartbeats arrive, its "
                               "status and lease do not)")
    for m in members_status.values():
        if not m.heartbeat_path_ok:
            report.problems.append(f"{m.node}: heartbeat path broken (etcd says the active is alive)")
        if not m.etcd_ok:
            report.problems.append(f"{m.node}: cannot reach etcd")
    report.health = ("no-active" if not serving else
                     "degraded" if report.problems else "healthy")
    return report


def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return "-"
    secs = now - ts
    return f"{secs:.1f}s ago" if secs < 120 else f"{int(secs // 60)}m ago"


def render(report: GatewayReport, now: float) -> str:
    lines = [f"Gateway {report.name}: {report.health.upper()}",
             f"  mode {report.mode}, egress IP {report.egress_ip or '-'}"
             + (f" on {report.interface}" if report.interface else ""),
             f"  active: {report.active or '<none>'}"
             + (f" since {_ago(report.active_since, now)}, epoch {report.epoch}"
                if report.active else "")]
    if report.last_failover:
        lf = report.last_failover
        moved = (f"{lf['from']} -> {lf.get('to')}" if lf.get("from")
                 else f"{lf.get('to')} took it")
        lines.append(f"  last failover: {moved}, reason {lf.get('reason', '?')}, "
                     f"{lf.get('duration_ms', '?')} ms, {_ago(lf.get('at'), now)}")
    lines.append("  NODE                 ROLE        PRIO  ELIGIBLE  LAST-HEARD  NOTE")
    for m in report.members:
        heard = f"{m['last_heartbeat_age_s']:.2f}s" if m["last_heartbeat_age_s"] is not None else "-"
        prio = "-" if m["priority"] is None else str(m["priority"])
        lines.append(f"  {m['node']:<20} {m['role']:<11} {prio:>4}  "
                     f"{'yes' if m['eligible'] else 'no':<8}  {heard:<10}  {m['why_not'] or ''}".rstrip())
    for p in report.policies:
        lines.append(f"  policy {p['name']}: {p['vms']} VMs, {p['cidrs']} CIDRs")
    for problem in report.problems:
        lines.append(f"  ! {problem}")
    return "\n".join(lines)


async def read_reports(store: ResourceStore, gateway: str | None) -> tuple[list[GatewayReport], float]:
    """Every gateway's report (or the one named), and the view's clock."""
    everything = await store.list_all()
    gws = [o for o in everything if isinstance(o, EgressGateway)]
    if gateway:
        gws = [g for g in gws if g.name == gateway]
        if not gws:
            fail(f"egressgateway {gateway!r} not found (vipmgr get egw lists them)")
    view = await StatusView.read(store)
    nodes = [o for o in everything if isinstance(o, Node)]
    vms = [o for o in everything if isinstance(o, VirtualMachine)]
    policies = [o for o in everything if isinstance(o, EgressGatewayPolicy)]
    failovers: dict[str, GatewayEvent] = {}
    for event in await history_store.history(store.client, store.layout.prefix, gateway):
        if event.kind == "failover":
            failovers[event.gateway] = event
    reports = [build_report(g, nodes, vms, policies, view, failovers.get(g.name))
               for g in sorted(gws, key=lambda g: g.name)]
    return reports, view.now


async def read_placement(store: ResourceStore) -> PlacementReport:
    everything = await store.list_all()
    view = await StatusView.read(store)
    eligible = set(await read_records(store.client, store.layout.placement_prefix))
    return build_placement([o for o in everything if isinstance(o, EgressGateway)],
                           [o for o in everything if isinstance(o, Node)], view, eligible)


@dataclass
class PlacementReport:
    """Each node's load against its fair share, and the moves placement still wants."""

    nodes: dict[str, dict[str, int]] = field(default_factory=dict)  # node -> active, share
    pending: list[dict[str, str | None]] = field(default_factory=list)  # gateway, from, to

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "pending": self.pending}


def build_placement(gws: list[EgressGateway], nodes: list[Node], view: StatusView,
                    eligible: set[str]) -> PlacementReport:
    """What the agents compute (agent/placement.py), from the store: the nodes whose
    eligibility record is there count."""
    members = {g.name: [n.name for n in nodes if g.node_selector.matches(n.labels)]
               for g in gws}
    picked = choices(members, {g.name: g.failover.priorities for g in gws}, eligible)
    report = PlacementReport()
    for node in sorted({n for ms in members.values() for n in ms}):
        report.nodes[node] = {
            "active": sum(1 for g in gws if view.holders.get(g.name, (None, 0))[0] == node),
            "share": sum(1 for c in picked.values() if c and c[0] == node)}
    for gw in sorted(gws, key=lambda g: g.name):
        first = picked.get(gw.name, ())
        holder = view.holders.get(gw.name, (None, 0))[0]
        if first and holder and holder != first[0] and gw.failover.rebalance \
                and not gw.failover.priorities:
            report.pending.append({"gateway": gw.name, "from": holder, "to": first[0]})
    return report


def render_placement(p: PlacementReport) -> str:
    lines = ["Placement: active / fair share per node"]
    lines += [f"  {node:<20} {v['active']} / {v['share']}"
              + ("  (over its share)" if v["active"] > v["share"] else "")
              for node, v in p.nodes.items()]
    lines += [f"  pending move: {m['gateway']} {m['from']} -> {m['to']} (after the hold-down)"
              for m in p.pending]
    return "\n".join(lines)


def exit_code(reports: list[GatewayReport]) -> int:
    if any(r.health == "no-active" for r in reports):
        return EXIT_NO_ACTIVE
    return EXIT_DEGRADED if any(r.health == "degraded" for r in reports) else EXIT_OK


def _show(reports: list[GatewayReport], now: float, output: str,
          placement: PlacementReport | None) -> None:
    if output != "text":
        dump({"gateways": [r.to_dict() for r in reports]}
             | ({"placement": placement.to_dict()} if placement else {}), output)
    elif not reports:
        click.echo("No egressgateways found.")
    else:
        click.echo("\n\n".join([render(r, now) for r in reports]
                                + ([render_placement(placement)] if placement else [])))


@click.command("status")
@click.argument("gateway", required=False)
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text")
@click.option("-w", "--watch", is_flag=True, help="redraw every --interval seconds (Ctrl-C stops)")
@click.option("--interval", type=click.FloatRange(0.2, 60), default=1.0, show_default=True)
@store_command
async def status(store: ResourceStore, gateway: str | None, output: str, watch: bool,
                 interval: float) -> int:
    """Per gateway: active node, standbys, last failover, policies; without GATEWAY also
    each node's load against its fair share and the moves placement still wants.

    \b
    Exit code: 0 all healthy, 1 degraded (e.g. no eligible standby),
    4 a gateway has no active node. With --watch: the code of the last view.
    """
    stop = asyncio.Event()
    if watch:
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
    async def placement() -> PlacementReport | None:  # the whole picture: without GATEWAY
        return None if gateway else await read_placement(store)

    reports, now = await read_reports(store, gateway)
    if not watch:
        _show(reports, now, output, await placement())
        return exit_code(reports)
    while True:
        if output == "text":
            click.echo("\x1b[H\x1b[2J", nl=False)  # home, clear: redraw in place
            click.echo(f"every {interval:g}s, {time.strftime('%H:%M:%S')}  (Ctrl-C stops)\n")
        _show(reports, now, output, await placement())
        try:
            await asyncio.wait_for(stop.wait(), interval)
            return exit_code(reports)
        except asyncio.TimeoutError:
            reports, now = await read_reports(store, gateway)


async def _refuse(store: ResourceStore, gateway: str, node: str, why: str) -> None:
    await record_refusal(store, gateway, node, "switchover", why)
    fail(f"switchover of {gateway} refused: {why}")


@click.command("switchover")
@click.argument("gateway")
@click.option("--to", "target", help="the node that should take over (default: best standby)")
@click.option("--wait", "wait", is_flag=True,
              help="return when the new active serves (exit 5 if it does not within --timeout)")
@click.option("--timeout", type=click.FloatRange(0.5, 600), default=10.0, show_default=True,
              help="seconds --wait waits")
@store_command
async def switchover(store: ResourceStore, gateway: str, target: str | None, wait: bool,
                     timeout: float) -> int:
    """Ask the active node of GATEWAY to hand over gracefully.

    \b
    Refused (exit 1, nothing requested): an unknown gateway or node, a node
    the nodeSelector does not select, an ineligible node, the current active,
    a gateway with no active node or no eligible standby.
    Exit code: 0 requested (--wait: the new active serves), 1 refused,
    5 --wait timed out (the old active still serves, or nobody does).
    """
    reports, _now = await read_reports(store, gateway)
    report = reports[0]
    if report.active is None:
        await _refuse(store, gateway, target or "", "it has no active node to hand over from")
    candidates = [m for m in report.members if m["node"] != report.active and m["eligible"]
                  and m["role"] == "standby"]
    if target:
        member = next((m for m in report.members if m["node"] == target), None)
        if member is None:
            known = {o.name for o in await store.list_all() if isinstance(o, Node)}
            why = (f"node {target!r} is not selected by {gateway}'s nodeSelector" if target in known
                   else f"no node {target!r} (members: "
                        f"{', '.join(m['node'] for m in report.members) or 'none'})")
            await _refuse(store, gateway, target, why)
        elif target == report.active:
            await _refuse(store, gateway, target, f"{target} is already the active node")
        elif not member["eligible"] or member["role"] != "standby":
            why = member["why_not"] or f"its role is {member['role']}"
            await _refuse(store, gateway, target, f"{target} is not an eligible standby ({why})")
    elif not candidates:
        await _refuse(store, gateway, "", "no eligible standby to take over")
    old = report.active
    await store.client.put(switchover_key(store.layout.prefix, gateway).encode(),
                           encode_switchover(target, time.time()))
    click.echo(f"switchover of {gateway} requested" + (f" to {target}" if target else "")
               + f" (active now {old})")
    if not wait:
        return EXIT_OK
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        (now_report,), _ = await read_reports(store, gateway)
        new = now_report.active
        if new and new != old and now_report.health != "no-active" \
                and (target is None or new == target):
            click.echo(f"{new} is active and serving {gateway}")
            return EXIT_OK
    (now_report,), _ = await read_reports(store, gateway)
    click.echo(f"error: no handover within {timeout:g}s: "
               + (f"{now_report.active} is active" if now_report.active else "no active node")
               + f" ({now_report.health})", err=True)
    return EXIT_TIMEOUT
