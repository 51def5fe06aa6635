"""Checks across objects: what passes the schema but would break the network.

They run over the world as it will be after an apply (what is stored, with the
incoming objects replacing their stored versions) and blame only incoming
objects, so an apply is never refused for a conflict it does not touch.

Errors (the apply is refused):

- a virtual IP that is already someone's address: another gateway's VIP, a
  Node's internalIP or interface address, a VM's address, a router a Node
  routes through (``Node.spec.routers``), an address the caller reserves (the
  CLI passes the etcd endpoints it talks to), or the network or broadcast
  address of a subnet a Node reports (``Node.spec.subnets``);
- a virtual IP outside every subnet its member nodes report for the interface;
- a PrimaryIP gateway whose interface none of its member nodes has;
- two gateways with the same VRID on one interface;
- a VM selected by policies of two gateways for overlapping destinations. The
  dataplane marks such traffic once per policy and the last rule wins, so
  whenever the gateways are active on different nodes the VM is blackholed.
  Refused rather than resolved by a precedence: a precedence would have to be
  the same in the CLI, every agent and the dataplane (Antrea's documented
  answer is "selected randomly"); the user says which gateway the VM should use
  by narrowing a selector or a CIDR list (docs/store.md).

Warnings (printed, exit 0; ``--strict`` makes them errors): a policy naming a
missing gateway, selectors or a nodeSelector matching nothing, a VM on an
unknown node, an address used twice by VMs and nodes, a Node or VM taking the
address of a stored gateway's VIP (the gateway is what must change, and an
agent is never kept from registering its node).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from vipmgr.resources.errors import Problem
from vipmgr.resources.models import (
    MODE_PRIMARY,
    EgressGateway,
    EgressGatewayPolicy,
    Node,
    Resource,
    VirtualMachine,
)

VIP_PATH = "spec.sourceIP.virtualIPAddress.ip"
PRIMARY_IF_PATH = "spec.sourceIP.primaryIPFromEgressGatewayNodeInterface.interfaceName"
VIP_IF_PATH = "spec.sourceIP.virtualIPAddress.interfaceName"
EXAMPLES = 3  # names listed in a message before "and N more"

Where = Callable[[Resource, str], str]


@dataclass
class Findings:
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class _Use:
    """Something that uses an address: which object, which field, in words."""

    obj: Resource | None
    path: str
    what: str


def identity(obj: Resource) -> tuple[str, str]:
    return obj.KIND, obj.key_name


def _some(names: Sequence[str]) -> str:
    shown = ", ".join(names[:EXAMPLES])
    return shown + (f" and {len(names) - EXAMPLES:,} more" if len(names) > EXAMPLES else "")


class _Checker:
    def __init__(self, incoming: Sequence[Resource], stored: Iterable[Resource], where: Where,
                 reserved: Mapping[str, str]):
        self.mine = {identity(o) for o in incoming}
        kept = [o for o in stored if identity(o) not in self.mine]
        self.world = kept + list(incoming)
        self.where = where
        self.reserved = reserved
        self.out = Findings()
        self.gateways = [o for o in self.world if isinstance(o, EgressGateway)]
        self.policies = [o for o in self.world if isinstance(o, EgressGatewayPolicy)]
        self.nodes = [o for o in self.world if isinstance(o, Node)]
        self.vms = [o for o in self.world if isinstance(o, VirtualMachine)]

    def incoming(self, obj: Resource | None) -> bool:
        return obj is not None and identity(obj) in self.mine

    def at(self, obj: Resource | None, path: str) -> str:
        """Where another object is, for a message: its file line, or that it is stored."""
        if obj is None:
            return ""
        return f" ({self.where(obj, path)})" if self.incoming(obj) else " (stored)"

    def add(self, level: str, obj: Resource, path: str, message: str) -> None:
        target = self.out.errors if level == "error" else self.out.warnings
        target.append(Problem(path, message, self.where(obj, path)))

    # --- the address index ----------------------------------------------------------

    def address_uses(self) -> dict[str, list[_Use]]:
        uses: dict[str, list[_Use]] = {}
        for n in self.nodes:
            if n.internal_ip:
                uses.setdefault(n.internal_ip, []).append(
                    _Use(n, "spec.internalIP", f"the internal IP of Node {n.name}"))
            for ifname, addr in n.addresses.items():
                uses.setdefault(addr, []).append(
                    _Use(n, f"spec.addresses.{ifname}", f"the address of Node {n.name} on {ifname}"))
            for i, router in enumerate(n.routers):
                uses.setdefault(router, []).append(
                    _Use(n, f"spec.routers[{i}]", f"a router of Node {n.name}"))
        for vm in self.vms:
            for i, addr in enumerate(vm.addresses):
                uses.setdefault(addr, []).append(
                    _Use(vm, f"spec.addresses[{i}]", f"an address of VirtualMachine {vm.key_name}"))
        for addr, what in self.reserved.items():
            uses.setdefault(addr, []).append(_Use(None, "", what))
        return uses

    def members(self, gw: EgressGateway) -> list[Node]:
        return [n for n in self.nodes if gw.node_selector.matches(n.labels)]

    # --- virtual IPs ----------------------------------------------------------------

    def check_vips(self) -> None:
        uses = self.address_uses()
        owner: dict[str, EgressGateway] = {}
        for gw in self.gateways:
            vip = gw.source_ip.virtual_ip
            if vip is None:
                continue
            other = owner.setdefault(vip, gw)
            if other is not gw:
                blamed, first = (gw, other) if self.incoming(gw) else (other, gw)
                if self.incoming(blamed):
                    self.add("error", blamed, VIP_PATH,
                             f"{vip} is already the virtual IP of gateway {first.name!r}"
                             f"{self.at(first, VIP_PATH)}; each gateway needs its own"
                             + self.free_hint(blamed, uses))
            for use in uses.get(vip, []):
                if self.incoming(gw):
                    self.add("error", gw, VIP_PATH,
                             f"{vip} is {use.what}{self.at(use.obj, use.path)}; a virtual IP "
                             "must be an address nothing else uses" + self.free_hint(gw, uses))
                elif self.incoming(use.obj):  # a warning: an agent registering its node
                    self.add("warning", use.obj, use.path,
                             f"{vip} is the virtual IP of gateway {gw.name!r} (stored); "
                             "give the gateway another virtual IP first, or use another address")
            self.check_vip_subnet(gw, vip, uses)

    def gateway_subnets(self, gw: EgressGateway) -> list[tuple[Node, str, ipaddress.IPv4Network]]:
        """(member, interface, network) for every subnet the members report for the
        gateway's interface (any interface when the gateway names none)."""
        ifname = gw.source_ip.interface_name
        return [(n, name, ipaddress.IPv4Network(cidr)) for n in self.members(gw)
                for name, cidr in sorted(n.subnets.items()) if ifname in (None, name)]

    def check_vip_subnet(self, gw: EgressGateway, vip: str, uses: dict[str, list[_Use]]) -> None:
        addr = ipaddress.IPv4Address(vip)
        subnets = self.gateway_subnets(gw)
        for node, ifname, net in subnets:
            if addr in net and net.prefixlen <= 30 and addr in (net.network_address,
                                                                 net.broadcast_address):
                what = "network" if addr == net.network_address else "broadcast"
                if self.incoming(gw):
                    self.add("error", gw, VIP_PATH,
                             f"{vip} is the {what} address of {net} (subnet of Node {node.name} "
                             f"on {ifname}); use a host address" + self.free_hint(gw, uses))
                return
        if subnets and not any(addr in net for _, _, net in subnets) and self.incoming(gw):
            nets = sorted({str(net) for _, _, net in subnets})
            self.add("error", gw, VIP_PATH,
                     f"{vip} is in no subnet of the gateway's nodes ({_some(nets)}): no node "
                     "could answer ARP for it; use an address of "
                     + ("that subnet" if len(nets) == 1 else "one of them")
                     + self.free_hint(gw, uses))

    def free_hint(self, gw: EgressGateway, uses: Mapping[str, list[_Use]]) -> str:
        """', e.g. 192.0.2.254 is free': the highest unused host address of the subnet the
        VIP belongs in — its own, else one that is not a member's internal network."""
        vip = gw.source_ip.virtual_ip
        taken = set(uses) | {g.source_ip.virtual_ip for g in self.gateways}

        def rank(entry: tuple[Node, str, ipaddress.IPv4Network]) -> int:
            node, _, net = entry
            if vip is not None and ipaddress.IPv4Address(vip) in net:
                return 0
            internal = node.internal_ip and ipaddress.IPv4Address(node.internal_ip) in net
            return 2 if internal else 1

        for _, _, net in sorted(self.gateway_subnets(gw), key=rank):
            if net.prefixlen > 30:
                continue
            candidate = net.broadcast_address - 1
            for _ in range(256):
                if candidate <= net.network_address:
                    break
                if str(candidate) not in taken:
                    return f", e.g. {candidate} is free"
                candidate -= 1
        return ""

    # --- interfaces -----------------------------------------------------------------

    def check_interfaces(self) -> None:
        for gw in self.gateways:
            ifname = gw.source_ip.interface_name
            if not self.incoming(gw) or ifname is None:
                continue
            known = [n for n in self.members(gw) if n.addresses]
            lacking = [n.name for n in known if ifname not in n.addresses]
            path = PRIMARY_IF_PATH if gw.source_ip.mode == MODE_PRIMARY else VIP_IF_PATH
            if known and len(lacking) == len(known):
                have = sorted({name for n in known for name in n.addresses})
                self.add("error", gw, path,
                         f"none of the gateway's nodes ({_some(lacking)}) has an IPv4 address on "
                         f"{ifname}, so none could serve it; they have {', '.join(have)}: "
                         "name one of those")
            elif lacking:
                self.add("warning", gw, path,
                         f"nodes {_some(lacking)} have no IPv4 address on {ifname} and can never "
                         "serve this gateway; fix their interface or their labels")

    # --- policies -------------------------------------------------------------------

    def check_policies(self) -> None:
        gateways = {g.name for g in self.gateways}
        selected: dict[str, list[VirtualMachine]] = {p.name: [] for p in self.policies}
        for vm in self.vms:
            for p in self.policies:
                if p.selects(vm):
                    selected[p.name].append(vm)
        for p in self.policies:
            if not self.incoming(p):
                continue
            if p.egress_gateway_name not in gateways:
                self.add("warning", p, "spec.egressGatewayName",
                         f"gateway {p.egress_gateway_name!r} does not exist: the VMs this policy "
                         "selects are not steered until it does; check the name"
                         + (f" (known: {_some(sorted(gateways))})" if gateways else ""))
            if not selected[p.name]:
                self.add("warning", p, "spec.selectors",
                         "select no VirtualMachine; check the labels (and the "
                         "io.kubernetes.pod.namespace of the VMs)")
        steered = [p for p in self.policies if p.egress_gateway_name in gateways]
        for i, a in enumerate(steered):
            for b in steered[:i]:
                if a.egress_gateway_name != b.egress_gateway_name:
                    self.check_overlap(b, a, selected)

    def check_overlap(self, a: EgressGatewayPolicy, b: EgressGatewayPolicy,
                      selected: Mapping[str, list[VirtualMachine]]) -> None:
        nets_a = [ipaddress.IPv4Network(c) for c in a.destination_cidrs]
        nets_b = [ipaddress.IPv4Network(c) for c in b.destination_cidrs]
        overlap = next(((x, y) for x in nets_a for y in nets_b if x.overlaps(y)), None)
        if overlap is None:
            return
        in_b = {identity(v) for v in selected[b.name]}
        both = [v for v in selected[a.name] if identity(v) in in_b]
        if not both:
            return
        blamed = next((p for p in (b, a) if self.incoming(p)), None)
        vm = next((v for v in both if self.incoming(v)), None)
        names = [v.key_name for v in both]
        what = (f"selected by policy {a.name!r} (gateway {a.egress_gateway_name})"
                f"{self.at(a, 'spec')} and policy {b.name!r} (gateway {b.egress_gateway_name})"
                f"{self.at(b, 'spec')} for overlapping destinations {overlap[0]} and {overlap[1]}")
        if blamed is not None:
            self.add("error", blamed, "spec.selectors",
                     f"VirtualMachines {_some(names)} would be {what}; their traffic can leave by "
                     f"one gateway only: narrow the selectors or destinationCIDRs of {b.name!r} "
                     f"or {a.name!r}")
        elif vm is not None:
            self.add("error", vm, "metadata.labels",
                     f"VirtualMachine {vm.key_name} would be {what}; its traffic can leave by one "
                     f"gateway only: change its labels, or narrow the selectors of {a.name!r} or "
                     f"{b.name!r}")

    # --- nodes, VMs and their addresses -------------------------------------------------

    def check_references(self) -> None:
        nodes = {n.name for n in self.nodes}
        for gw in self.gateways:
            if self.incoming(gw) and not self.members(gw):
                self.add("warning", gw, "spec.nodeSelector",
                         f"matches no Node ({gw.node_selector}): the gateway has no member "
                         "until a node with these labels registers; check the labels")
        missing_by_node: dict[str, list[VirtualMachine]] = {}
        for vm in self.vms:
            if self.incoming(vm) and vm.node_name not in nodes:
                missing_by_node.setdefault(vm.node_name, []).append(vm)
        for node, vms in missing_by_node.items():
            self.add("warning", vms[0], "spec.nodeName",
                     f"Node {node!r} does not exist (VMs {_some([v.key_name for v in vms])}): "
                     "their traffic is not steered until it registers; check the name")

    def check_duplicate_addresses(self) -> None:
        for addr, uses in self.address_uses().items():
            holders = {identity(u.obj): u for u in uses
                       if u.obj is not None and not u.path.startswith("spec.routers")}
            if len(holders) < 2:
                continue
            listed = list(holders.values())
            for use in listed:
                if not self.incoming(use.obj):
                    continue
                others = [u for u in listed if u is not use]
                self.add("warning", use.obj, use.path,
                         f"{addr} is also {others[0].what}{self.at(others[0].obj, others[0].path)}"
                         + (f" and {len(others) - 1} more" if len(others) > 1 else "")
                         + ": replies can reach only one of them; give each its own address")
                break


def check_objects(incoming: Sequence[Resource], stored: Iterable[Resource] = (),
                  where: Where = lambda obj, path: "",
                  reserved: Mapping[str, str] | None = None) -> Findings:
    """Errors and warnings about ``incoming`` in the world ``stored`` + ``incoming``.

    ``where(obj, path)`` says where an incoming object's field is written (file:line);
    ``reserved`` maps addresses nothing may use as a VIP to what they are.
    """
    checker = _Checker(incoming, stored, where, reserved or {})
    checker.check_vips()
    checker.check_interfaces()
    checker.check_policies()
    checker.check_references()
    checker.check_duplicate_addresses()
    return checker.out
