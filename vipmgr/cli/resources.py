"""kubectl-like resource commands: apply, get, describe, delete, label, cordon, uncordon."""

from __future__ import annotations

import ipaddress
import sys
import time
from typing import Any

import click

from vipmgr.cli.common import (
    dump,
    etcd_options,
    fail,
    print_problems,
    print_table,
    run_with_store,
    settings_from,
    store_command,
)
from vipmgr.resources.errors import ValidationError
from vipmgr.resources.loader import LoadedDoc, load_documents, parse_documents, where_in
from vipmgr.resources.models import (
    KIND_BY_KIND,
    MODE_PRIMARY,
    EgressGateway,
    EgressGatewayPolicy,
    KindInfo,
    Node,
    Resource,
    VirtualMachine,
    resolve_kind,
)
from vipmgr.resources.selectors import label_key_problem, label_value_problem, parse_selector_string
from vipmgr.resources.status import GatewayMemberStatus, NodeStatus
from vipmgr.resources.textinput import InputError, read_text_file
from vipmgr.store.authority import read_holders
from vipmgr.store.client import EtcdSettings, parse_endpoint
from vipmgr.store.resources import DEFAULT_MAX_TXN_OPS, ResourceStore

NODE_STATUS_STALE_S = 5.0


def _load_files(files: tuple[str, ...], across: bool = True) -> list[tuple[LoadedDoc, Resource]]:
    """Every document of every file, validated; on any problem: all of them, and exit 1."""
    docs = []
    try:
        for path in files:
            text, source = read_text_file(path)
            docs.extend(load_documents(text, source))
        return parse_documents(docs, across=across)
    except InputError as exc:
        click.echo(f"error: {exc}", err=True)
    except ValidationError as exc:
        print_problems(exc.problems, "error")
    click.echo("nothing was changed", err=True)
    sys.exit(1)


def _kind(name: str) -> KindInfo:
    try:
        return resolve_kind(name)
    except ValueError as exc:
        fail(str(exc))
        raise


# --- apply / delete ------------------------------------------------------------------


def _txn_ops_option(fn):
    return click.option("--max-txn-ops", type=click.IntRange(2, None), default=DEFAULT_MAX_TXN_OPS,
                        show_default=True, help="operations per etcd transaction: etcd's "
                        "--max-txn-ops; larger inputs are written in several")(fn)


def etcd_addresses(settings: EtcdSettings) -> dict[str, str]:
    """The IPv4 literals among the etcd endpoints: no virtual IP may take them."""
    out = {}
    for endpoint in settings.endpoints:
        host, _ = parse_endpoint(endpoint)
        try:
            out[str(ipaddress.IPv4Address(host))] = f"the address of etcd ({endpoint})"
        except ValueError:
            continue
    return out


class ProgressLine:
    """"wrote 1,280/10,000 objects" on stderr every tenth of a long write."""

    def __init__(self, verb: str):
        self.verb = verb
        self.shown = 0

    def __call__(self, done: int, total: int) -> None:
        step = max(1, total // 10)
        if done == total and self.shown == 0:
            return  # one transaction: nothing to report
        if done - self.shown >= step or done == total:
            self.shown = done
            click.echo(f"{self.verb} {done:,}/{total:,} objects", err=True)


@click.command("apply")
@click.option("-f", "--filename", "files", multiple=True, required=True,
              help="manifest file (YAML or JSON, several documents allowed); - reads stdin")
@click.option("--dry-run", is_flag=True, help="validate against the store and report, change nothing")
@click.option("--strict", is_flag=True, help="refuse the apply on warnings too")
@_txn_ops_option
@etcd_options
def apply_cmd(files: tuple[str, ...], dry_run: bool, strict: bool, max_txn_ops: int,
              **etcd: Any) -> None:
    """Create or update resources from files: all of them, or none.

    Files are checked before etcd is contacted; then every object is checked against
    the store (addresses, references, overlapping policies). Warnings are printed and
    the apply goes on, unless --strict.
    """
    settings = settings_from(etcd)
    parsed = _load_files(files)
    objects = [obj for _, obj in parsed]
    suffix = " (dry run)" if dry_run else ""

    async def body(store: ResourceStore) -> None:
        outcomes = await store.apply(
            objects, dry_run, strict=strict, where=where_in(parsed),
            reserved=etcd_addresses(settings), max_txn_ops=max_txn_ops,
            progress=ProgressLine("wrote"), warn=lambda ws: print_problems(ws, "warning"))
        for outcome in outcomes:
            click.echo(f"{outcome}{suffix}")

    run_with_store(settings, body)


@click.command("delete")
@click.option("-f", "--filename", "files", multiple=True, help="delete what these files define")
@click.argument("kind", required=False)
@click.argument("names", nargs=-1)
@click.option("-l", "--selector", help="delete every KIND object matching, e.g. app=backend")
@click.option("--all", "everything", is_flag=True, help="delete every KIND object")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-A", "--all-namespaces", is_flag=True, help="with -l/--all: VMs of every namespace")
@_txn_ops_option
@store_command
async def delete_cmd(store: ResourceStore, files: tuple[str, ...], kind: str | None,
                     names: tuple[str, ...], selector: str | None, everything: bool,
                     namespace: str, all_namespaces: bool, max_txn_ops: int) -> int:
    """Delete resources: -f FILE…, KIND NAME…, KIND -l SELECTOR or KIND --all."""
    ways = [bool(files), bool(names), selector is not None, everything]
    if sum(ways) != 1 or (files and kind):
        fail("say what to delete in one way: -f FILE…, KIND NAME…, KIND -l SELECTOR "
             "or KIND --all")
    if files:
        targets = [(KIND_BY_KIND[o.KIND], o.key_name) for _, o in _load_files(files, across=False)]
    elif not kind:
        fail("-l and --all need a KIND, e.g. vipmgr delete vm -l app=backend")
    elif names:
        info = _kind(kind)
        targets = [(info, f"{namespace}/{n}" if info.cls.NAMESPACED else n) for n in names]
    else:
        info = _kind(kind)
        try:
            sel = parse_selector_string(selector) if selector is not None else None
        except ValueError as exc:
            fail(str(exc))
        ns = namespace if info.cls.NAMESPACED and not all_namespaces else None
        targets = await store.select(info, sel, ns)
        if not targets:
            click.echo(f"No {info.plural} found.", err=True)
            return 0
    missing = 0
    for outcome in await store.delete(targets, max_txn_ops=max_txn_ops,
                                      progress=ProgressLine("deleted")):
        click.echo(str(outcome))
        missing += outcome.result == "not found"
    return 1 if missing else 0


# --- get / describe -------------------------------------------------------------------


def _age(since: float, now: float) -> str:
    secs = max(0, int(now - since))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


class StatusView:
    """Agent-published status joined to resources and etcd authority, for tables.

    A status document older than NODE_STATUS_STALE_S is not trusted (its agent
    is frozen or gone; the lease will drop it soon): such a member shows as
    ``stale``. Who is active comes from the authority key, not from claims.
    """

    def __init__(self, nodes: dict[str, Any], members: dict[str, dict[str, Any]], now: float,
                 holders: dict[str, tuple[str, int]] | None = None):
        """``members``: gateway -> node -> status document (ResourceStore.gateway_statuses);
        ``holders``: gateway -> (node, epoch) (store.authority.read_holders)."""
        self.now = now
        self.nodes = {k: NodeStatus.from_dict(v) for k, v in nodes.items()}
        self.holders = holders or {}  # gateway -> (node, epoch)
        self.members: dict[str, dict[str, GatewayMemberStatus]] = {}
        for gw, docs in members.items():
            for node, value in docs.items():
                member = GatewayMemberStatus.from_dict(value)
                if now - member.updated > NODE_STATUS_STALE_S:
                    member.role = "stale"
                self.members.setdefault(gw, {})[node] = member

    @classmethod
    async def read(cls, store: ResourceStore) -> "StatusView":
        """An unreadable value raises CorruptObjectError naming its key (one error line)."""
        holders = await read_holders(store.client, store.layout.prefix)
        return cls(await store.list_json(store.layout.node_status_prefix),
                   await store.gateway_statuses(), time.time(), holders)

    def node_status(self, name: str) -> NodeStatus | None:
        st = self.nodes.get(name)
        if st is None or self.now - st.updated > NODE_STATUS_STALE_S:
            return None
        return st

    def active_of(self, gateway: str) -> GatewayMemberStatus | None:
        """The authority holder's status (None when nobody holds it or it has no status)."""
        holder = self.holders.get(gateway, (None, 0))[0]
        return self.members.get(gateway, {}).get(holder) if holder else None


def node_criteria(node: Node, gateways: list[EgressGateway], view: StatusView) -> dict[str, Any]:
    """The seed's four checks in one row: selected, Ready, not cordoned, datapath ready."""
    st = view.node_status(node.name)
    selected_by = [g.name for g in gateways if g.node_selector.matches(node.labels)]
    ready = st.ready if st else None
    datapath = st.datapath_ready if st else None
    reasons = []
    if not selected_by:
        reasons.append("no EgressGateway selects its labels")
    if st is None:
        reasons.append("no agent status (agent not running?)")
    else:
        if not st.ready:
            reasons.append(st.ready_reason or "not Ready")
        if not st.datapath_ready:
            reasons.append(st.datapath_reason or "datapath not ready")
    if node.unschedulable:
        reasons.append("cordoned")
    eligible = bool(selected_by) and bool(ready) and bool(datapath) and not node.unschedulable
    return {"selected_by": selected_by, "ready": ready, "cordoned": node.unschedulable,
            "datapath_ready": datapath, "eligible": eligible, "reasons": reasons}


def _yn(value: bool | None) -> str:
    return "Unknown" if value is None else ("True" if value else "False")


def _rows(info: KindInfo, objs: list[Resource], wide: bool, view: StatusView,
          context: dict[str, list[Resource]]) -> tuple[list[str], list[list[Any]]]:
    if info.cls is EgressGateway:
        headers = ["NAME", "MODE", "EGRESS-IP/INTERFACE", "ACTIVE"]
        if wide:
            headers += ["NODE-SELECTOR", "VRID", "ON-ETCD-LOSS", "PREEMPT"]
        rows = []
        for g in objs:
            assert isinstance(g, EgressGateway)
            active = view.active_of(g.name)
            active_txt = view.holders.get(g.name, ("<none>", 0))[0]
            egress = (g.source_ip.interface_name if g.source_ip.mode == MODE_PRIMARY
                      else g.source_ip.virtual_ip)
            if g.source_ip.mode == MODE_PRIMARY and active and active.egress_ip:
                egress = f"{g.source_ip.interface_name} ({active.egress_ip})"
            row = [g.name, g.source_ip.mode, egress, active_txt]
            if wide:
                row += [str(g.node_selector), g.vrid, g.failover.on_etcd_loss,
                        str(g.failover.preempt).lower()]
            rows.append(row)
        return headers, rows
    if info.cls is EgressGatewayPolicy:
        vms = context["vms"]
        headers = ["NAME", "GATEWAY", "DESTINATIONS", "SELECTED-VMS"]
        if wide:
            headers += ["SELECTORS"]
        rows = []
        for p in objs:
            assert isinstance(p, EgressGatewayPolicy)
            selected = [v for v in vms if isinstance(v, VirtualMachine) and p.selects(v)]
            row = [p.name, p.egress_gateway_name, ",".join(p.destination_cidrs), len(selected)]
            if wide:
                row.append(" | ".join(str(s) for s in p.selectors))
            rows.append(row)
        return headers, rows
    if info.cls is Node:
        gws = [g for g in context["gateways"] if isinstance(g, EgressGateway)]
        headers = ["NAME", "STATUS", "INTERNAL-IP"]
        if wide:
            headers += ["EGRESS-GATEWAYS", "READY", "CORDONED", "DATAPATH", "ELIGIBLE", "REASON"]
        rows = []
        for n in objs:
            assert isinstance(n, Node)
            c = node_criteria(n, gws, view)
            status = {True: "Ready", False: "NotReady", None: "Unknown"}[c["ready"]]
            if n.unschedulable:
                status += ",SchedulingDisabled"
            row = [n.name, status, n.internal_ip or "<none>"]
            if wide:
                row += [",".join(c["selected_by"]) or "<none>", _yn(c["ready"]),
                        _yn(c["cordoned"]), _yn(c["datapath_ready"]),
                        _yn(c["eligible"]), "; ".join(c["reasons"]) or "-"]
            rows.append(row)
        return headers, rows
    headers = ["NAMESPACE", "NAME", "NODE", "ADDRESSES"]
    if wide:
        headers += ["LABELS", "POLICIES"]
    rows = []
    policies = [p for p in context["policies"] if isinstance(p, EgressGatewayPolicy)]
    for v in objs:
        assert isinstance(v, VirtualMachine)
        row = [v.namespace, v.name, v.node_name, ",".join(v.addresses)]
        if wide:
            row += [",".join(f"{k}={val}" for k, val in sorted(v.labels.items())) or "<none>",
                    ",".join(p.name for p in policies if p.selects(v)) or "<none>"]
        rows.append(row)
    return headers, rows


@click.command("get")
@click.argument("kind")
@click.argument("names", nargs=-1)
@click.option("-l", "--selector", help="label selector, e.g. app=backend,tier!=db")
@click.option("-o", "--output", type=click.Choice(["wide", "yaml", "json", "name"]))
@click.option("-n", "--namespace", default=None, help="namespace of VirtualMachines")
@click.option("-A", "--all-namespaces", is_flag=True, help="VirtualMachines of every namespace")
@store_command
async def get_cmd(store: ResourceStore, kind: str, names: tuple[str, ...], selector: str | None,
                  output: str | None, namespace: str | None, all_namespaces: bool) -> int:
    """List resources (KIND: egw, egwp, nodes, vm, or their long names)."""
    info = _kind(kind)
    try:
        sel = parse_selector_string(selector) if selector else None
    except ValueError as exc:
        fail(str(exc))
    everything = await store.list_all()
    objs = [o for o in everything if o.KIND == info.kind]
    if info.cls.NAMESPACED and not all_namespaces:
        objs = [o for o in objs if o.namespace == (namespace or "default")]
    if names:
        found = {o.name: o for o in objs}
        missing = [n for n in names if n not in found]
        for n in missing:
            click.echo(f'error: {info.singular} "{n}" not found', err=True)
        objs = [found[n] for n in names if n in found]
        if missing and not objs:
            return 1
    if sel is not None:
        objs = [o for o in objs if sel.matches(o.labels)]
    objs.sort(key=lambda o: o.key_name)
    if output in ("yaml", "json"):
        if len(names) == 1 and objs:
            dump(objs[0].to_manifest(), output)
        else:
            dump({"apiVersion": "v1", "kind": "List",
                  "items": [o.to_manifest() for o in objs]}, output)
        return 0
    if output == "name":
        for o in objs:
            click.echo(f"{info.singular}/{o.name}")
        return 0
    if not objs:
        click.echo(f"No {info.plural} found.", err=True)
        return 0
    view = await StatusView.read(store)
    context = {"vms": [o for o in everything if o.KIND == "VirtualMachine"],
               "gateways": [o for o in everything if o.KIND == "EgressGateway"],
               "policies": [o for o in everything if o.KIND == "EgressGatewayPolicy"]}
    headers, rows = _rows(info, objs, output == "wide", view, context)
    print_table(headers, rows)
    return 0


@click.command("describe")
@click.argument("kind")
@click.argument("name")
@click.option("-n", "--namespace", default="default", show_default=True)
@store_command
async def describe_cmd(store: ResourceStore, kind: str, name: str, namespace: str) -> None:
    """Show one resource in detail, with what it selects and what agents report."""
    info = _kind(kind)
    obj = await store.get(info, f"{namespace}/{name}" if info.cls.NAMESPACED else name)
    everything = await store.list_all()
    view = await StatusView.read(store)
    lines = [f"Name:             {obj.name}"]
    if obj.namespace:
        lines.append(f"Namespace:        {obj.namespace}")
    lines.append(f"Kind:             {obj.KIND}")
    labels = ", ".join(f"{k}={v}" for k, v in sorted(obj.labels.items())) or "<none>"
    lines.append(f"Labels:           {labels}")
    lines.append(f"ResourceVersion:  {obj.meta.resource_version}")
    nodes = [o for o in everything if isinstance(o, Node)]
    vms = [o for o in everything if isinstance(o, VirtualMachine)]
    gateways = [o for o in everything if isinstance(o, EgressGateway)]
    if isinstance(obj, EgressGateway):
        lines += [f"Mode:             {obj.source_ip.mode}",
                  f"Egress:           {obj.egress_description}",
                  f"Node selector:    {obj.node_selector}",
                  f"VRID:             {obj.vrid}",
                  f"On etcd loss:     {obj.failover.on_etcd_loss}",
                  f"Preempt:          {str(obj.failover.preempt).lower()}"
                  + (f" (delay {obj.failover.preempt_delay:g}s)" if obj.failover.preempt else ""),
                  "Members:"]
        members = view.members.get(obj.name, {})
        for n in nodes:
            if not obj.node_selector.matches(n.labels):
                continue
            m = members.get(n.name)
            c = node_criteria(n, gateways, view)
            role = m.role if m else "no agent"
            why = "eligible" if c["eligible"] else "; ".join(c["reasons"])
            lines.append(f"  {n.name:<20} {role:<11} {why}")
        policies = [p for p in everything if isinstance(p, EgressGatewayPolicy)
                    and p.egress_gateway_name == obj.name]
        lines.append(f"Policies:         {', '.join(p.name for p in policies) or '<none>'}")
        from vipmgr.cli.events import describe_events  # its history module loads only here
        lines.append(await describe_events(store, obj.name))
    elif isinstance(obj, EgressGatewayPolicy):
        selected = [v for v in vms if obj.selects(v)]
        lines += [f"Gateway:          {obj.egress_gateway_name}"
                  + ("" if any(g.name == obj.egress_gateway_name for g in gateways)
                     else "  (not found: traffic is dropped until it exists)"),
                  f"Destinations:     {', '.join(obj.destination_cidrs)}",
                  f"Selectors:        {' | '.join(str(s) for s in obj.selectors)}",
                  f"Selected VMs:     {len(selected)}"]
        lines += [f"  {v.namespace}/{v.name} on {v.node_name}: {', '.join(v.addresses)}"
                  for v in selected]
    elif isinstance(obj, Node):
        c = node_criteria(obj, gateways, view)
        lines += [f"Internal IP:      {obj.internal_ip or '<none>'}",
                  f"Addresses:        {', '.join(f'{k}={v}' for k, v in obj.addresses.items()) or '<none>'}",
                  "Eligibility:",
                  f"  selected by:    {', '.join(c['selected_by']) or '<no gateway>'}",
                  f"  Ready:          {_yn(c['ready'])}",
                  f"  cordoned:       {_yn(c['cordoned'])}",
                  f"  datapath ready: {_yn(c['datapath_ready'])}",
                  f"  eligible:       {_yn(c['eligible'])}"
                  + (f"  ({'; '.join(c['reasons'])})" if c["reasons"] else "")]
    elif isinstance(obj, VirtualMachine):
        policies = [p for p in everything if isinstance(p, EgressGatewayPolicy) and p.selects(obj)]
        lines += [f"Node:             {obj.node_name}",
                  f"Addresses:        {', '.join(obj.addresses)}",
                  f"Policies:         {', '.join(p.name for p in policies) or '<none>'}"]
    click.echo("\n".join(lines))


# --- label / cordon -------------------------------------------------------------------


def _label_changes(changes: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    sets: dict[str, str] = {}
    removes: list[str] = []
    for change in changes:
        if change.endswith("-") and "=" not in change:
            key = change[:-1]
            why = label_key_problem(key)
            if why:
                fail(f"{change}: {why}")
            removes.append(key)
            continue
        key, eq, value = change.partition("=")
        if not eq:
            fail(f"{change!r}: write key=value to set a label, or key- to remove it")
        why = label_key_problem(key) or label_value_problem(value)
        if why:
            fail(f"{change}: {why}")
        sets[key] = value
    return sets, removes


@click.command("label")
@click.argument("kind")
@click.argument("name")
@click.argument("changes", nargs=-1, required=True)
@click.option("--overwrite", is_flag=True, help="allow changing a label that has a value")
@click.option("-n", "--namespace", default="default", show_default=True)
@store_command
async def label_cmd(store: ResourceStore, kind: str, name: str, changes: tuple[str, ...],
                    overwrite: bool, namespace: str) -> None:
    """Set (k=v) or remove (k-) labels on a node or a VM, like kubectl label."""
    info = _kind(kind)
    if info.cls not in (Node, VirtualMachine):
        fail(f"labels are changed on nodes and vms; change {info.plural} with apply -f")
    sets, removes = _label_changes(changes)

    def mutate(manifest: dict[str, Any]) -> str:
        labels = manifest.setdefault("metadata", {}).setdefault("labels", {})
        for key, value in sets.items():
            if key in labels and labels[key] != value and not overwrite:
                raise click.ClickException(
                    f"'{key}' already has a value ({labels[key]}), and --overwrite is false")
            labels[key] = value
        for key in removes:
            labels.pop(key, None)
        return "labeled"

    key_name = f"{namespace}/{name}" if info.cls.NAMESPACED else name
    click.echo(str(await store.update(info, key_name, mutate,
                                      warn=lambda ws: print_problems(ws, "warning"))))


def _set_cordon(value: bool):
    verb = "cordoned" if value else "uncordoned"

    async def command(store: ResourceStore, node: str) -> None:
        def mutate(manifest: dict[str, Any]) -> str:
            manifest.setdefault("spec", {})["unschedulable"] = value
            return verb

        click.echo(str(await store.update(KIND_BY_KIND["Node"], node, mutate,
                                          unchanged=f"already {verb}")))

    command.__name__ = verb
    command.__doc__ = ("Mark NODE ineligible: it releases every gateway it is active for."
                       if value else "Make NODE eligible again.")
    return command


cordon_cmd = click.command("cordon")(click.argument("node")(store_command(_set_cordon(True))))
uncordon_cmd = click.command("uncordon")(click.argument("node")(store_command(_set_cordon(False))))
