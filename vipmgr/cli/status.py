"""``vipmgr status`` (one view per gateway, VRRP/pacemaker style) and ``vipmgr switchover``."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import click

from vipmgr.cli.common import dump, fail, store_command
from vipmgr.cli.resources import StatusView, node_criteria
from vipmgr.resources.models import (
    KIND_BY_KIND,
    EgressGateway,
    EgressGatewayPolicy,
    Node,
    VirtualMachine,
)
from vipmgr.resources.status import GatewayMemberStatus
from vipmgr.store.resources import ResourceStore

EXIT_OK, EXIT_DEGRADED, EXIT_NO_ACTIVE = 0, 1, 2


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


def build_report(gw: EgressGateway, nodes: list[Node], vms: list[VirtualMachine],
                 policies: list[EgressGatewayPolicy], view: StatusView) -> GatewayReport:
    members_status = view.members.get(gw.name, {})
    actives = [m for m in members_status.values() if m.role == "active"]
    holder, epoch = view.holders.get(gw.name, (None, 0))
    active = members_status.get(holder) if holder else None
    egress_ip = gw.source_ip.virtual_ip or (active.egress_ip if active else "") or ""
    interface = gw.source_ip.interface_name or (active.interface if active else "") or ""
    report = GatewayReport(gw.name, gw.source_ip.mode, egress_ip, interface, holder,
                           active.since if active else None, epoch)
    eligible_standbys = 0
    for node in nodes:
        if not gw.node_selector.matches(node.labels):
            continue
        crit = node_criteria(node, [gw], view)
        m: GatewayMemberStatus | None = members_status.get(node.name)
        heard = (max(m.heard_peers.values()) if m and m.heard_peers else None)
        report.members.append({
            "node": node.name, "role": m.role if m else "no-agent",
            "priority": m.priority if m else None, "eligible": crit["eligible"],
            "why_not": "; ".join(crit["reasons"]),
            "last_heartbeat_age_s": round(view.now - heard, 3) if heard else None,
            "heartbeat_path_ok": m.heartbeat_path_ok if m else None,
            "etcd_ok": m.etcd_ok if m else None})
        if m and m.role != "active" and crit["eligible"]:
            eligible_standbys += 1
        if m and m.last_failover and (not report.last_failover
                                      or m.last_failover.get("at", 0)
                                      > report.last_failover.get("at", 0)):
            report.last_failover = dict(m.last_failover)
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


@click.command("status")
@click.argument("gateway", required=False)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@store_command
async def status(store: ResourceStore, gateway: str | None, output: str) -> int:
    """Per gateway: active node, standbys, last failover, policies.

    \b
    Exit code: 0 all healthy, 1 degraded (e.g. no eligible standby),
    2 a gateway has no active node.
    """
    everything = await store.list_all()
    gws = [o for o in everything if isinstance(o, EgressGateway)]
    if gateway:
        gws = [g for g in gws if g.name == gateway]
        if not gws:
            fail(f"egressgateway {gateway!r} not found")
    view = await StatusView.read(store)
    nodes = [o for o in everything if isinstance(o, Node)]
    vms = [o for o in everything if isinstance(o, VirtualMachine)]
    policies = [o for o in everything if isinstance(o, EgressGatewayPolicy)]
    reports = [build_report(g, nodes, vms, policies, view) for g in sorted(gws, key=lambda g: g.name)]
    if output == "json":
        dump({"gateways": [r.to_dict() for r in reports]}, "json")
    elif not reports:
        click.echo("No egressgateways found.")
    else:
        click.echo("\n\n".join(render(r, view.now) for r in reports))
    if any(r.health == "no-active" for r in reports):
        return EXIT_NO_ACTIVE
    return EXIT_DEGRADED if any(r.health == "degraded" for r in reports) else EXIT_OK


def switchover_key(prefix: str, gateway: str) -> str:
    return f"{prefix}/switchover/{gateway}"


@click.command("switchover")
@click.argument("gateway")
@click.option("--to", "target", help="the node that should take over (default: best standby)")
@store_command
async def switchover(store: ResourceStore, gateway: str, target: str | None) -> int:
    """Ask the active node of GATEWAY to hand over gracefully."""
    gw = await store.get(KIND_BY_KIND["EgressGateway"], gateway)
    assert isinstance(gw, EgressGateway)
    if target:
        node = await store.get(KIND_BY_KIND["Node"], target)
        if not gw.node_selector.matches(node.labels):
            fail(f"node {target!r} is not selected by {gateway}'s nodeSelector {gw.node_selector}")
    request = {"to": target, "requested": time.time()}
    await store.client.put(switchover_key(store.layout.prefix, gateway).encode(),
                           json.dumps(request).encode())
    click.echo(f"switchover of {gateway} requested" + (f" to {target}" if target else ""))
    return 0

