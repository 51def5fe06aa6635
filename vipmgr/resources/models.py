"""The four resource kinds, parsed from manifests into typed, validated objects.

Each object keeps the manifest it came from (``manifest``), so what a user
applies is what ``get -o yaml`` returns; the typed fields are derived from it.
Parsing never stops at the first problem: every problem is collected with its
field path so one round of fixes is enough.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

from vipmgr.config.durations import parse_duration
from vipmgr.config.errors import ConfigError
from vipmgr.config.timers import Timers
from vipmgr.resources.errors import Problems
from vipmgr.resources.net import (
    dns1123_label_problem,
    dns1123_subdomain_problem,
    ifname_problem,
    ipv4_cidr_problem,
    unicast_ipv4_problem,
)
from vipmgr.resources.selectors import LabelSelector, check_labels
from vipmgr.resources.vrid import VRID_MAX, VRID_MIN, effective_vrid

DECKHOUSE_API = "network.deckhouse.io/v1alpha1"
VIPMGR_API = "vipmgr.io/v1alpha1"

MODE_PRIMARY = "PrimaryIPFromEgressGatewayNodeInterface"
MODE_VIP = "VirtualIPAddress"
MODES = (MODE_PRIMARY, MODE_VIP)
MODE_SUBOBJECT = {MODE_PRIMARY: "primaryIPFromEgressGatewayNodeInterface",
                  MODE_VIP: "virtualIPAddress"}

ON_ETCD_LOSS = ("hold", "vrrp")
NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
DEFAULT_NAMESPACE = "default"


def _unknown_fields(data: Mapping[str, Any], allowed: tuple[str, ...], path: str,
                    problems: Problems) -> None:
    for key in data:
        if key not in allowed:
            problems.add(f"{path}.{key}" if path else str(key),
                         f"unknown field; allowed here: {', '.join(allowed)}")


def _mapping(data: Any, path: str, problems: Problems, what: str) -> Mapping[str, Any]:
    if data is None:
        problems.add(path, f"is required: {what}")
        return {}
    if not isinstance(data, Mapping):
        problems.add(path, f"must be a mapping: {what}")
        return {}
    return data


def _checked_list(raw: Any, path: str, check: Callable[[object], str | None],
                  problems: Problems, required: str) -> list[str]:
    """A required, non-empty list whose items pass ``check``, each listed once."""
    out: list[str] = []
    if not isinstance(raw, list) or not raw:
        problems.add(path, required)
        return out
    for i, item in enumerate(raw):
        why = check(item)
        if why:
            problems.add(f"{path}[{i}]", why)
        elif item in out:
            problems.add(f"{path}[{i}]", f"{item} is listed twice; remove one")
        else:
            out.append(item)
    return out


def _per_interface(raw: Any, path: str, check: Callable[[object], str | None], what: str,
                   problems: Problems) -> dict[str, str]:
    """An optional {interface: value} mapping whose values pass ``check``."""
    if not raw:
        return {}
    if not isinstance(raw, Mapping):
        problems.add(path, f"must map interface names to {what}")
        return {}
    out: dict[str, str] = {}
    for ifname, value in raw.items():
        why = ifname_problem(ifname) or check(value)
        if why:
            problems.add(f"{path}.{ifname}", why)
        else:
            out[ifname] = value
    return out


@dataclass(frozen=True)
class ObjectMeta:
    name: str
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    resource_version: int | None = None


@dataclass(frozen=True)
class Resource:
    """Common shape: kind metadata, typed fields, and the manifest it came from."""

    KIND: ClassVar[str] = ""
    API_VERSION: ClassVar[str] = ""
    NAMESPACED: ClassVar[bool] = False

    meta: ObjectMeta
    manifest: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def namespace(self) -> str | None:
        return self.meta.namespace

    @property
    def labels(self) -> Mapping[str, str]:
        return self.meta.labels

    @property
    def key_name(self) -> str:
        """The object's identity within its kind: ``name`` or ``namespace/name``."""
        return f"{self.meta.namespace}/{self.meta.name}" if self.NAMESPACED else self.meta.name

    def to_manifest(self, with_version: bool = True) -> dict[str, Any]:
        out = copy.deepcopy(dict(self.manifest))
        if with_version and self.meta.resource_version is not None:
            out.setdefault("metadata", {})["resourceVersion"] = str(self.meta.resource_version)
        return out

    @classmethod
    def parse_spec(cls, meta: ObjectMeta, spec: Mapping[str, Any], manifest: Mapping[str, Any],
                   problems: Problems) -> "Resource":
        raise NotImplementedError


# --- EgressGateway -----------------------------------------------------------------


@dataclass(frozen=True)
class SourceIP:
    mode: str
    interface_name: str | None = None  # primary mode: required; VIP mode: optional override
    virtual_ip: str | None = None


@dataclass(frozen=True)
class Failover:
    """vipmgr's extension ``spec.failover``: every field optional, safe defaults."""

    on_etcd_loss: str = "hold"
    preempt: bool = False
    preempt_delay: float = 0.0
    vrid: int | None = None
    priorities: Mapping[str, int] = field(default_factory=dict)
    timers: Timers = field(default_factory=Timers)
    rebalance: bool = True   # back to the placement's first choice (docs/placement.md)

    @property
    def rebalances(self) -> bool:
        """Explicit ``priorities`` opt a gateway out of placement, rebalance included:
        its order is the user's, and taking the role back is ``preempt``'s business."""
        return self.rebalance and not self.priorities


FAILOVER_FIELDS = ("onEtcdLoss", "preempt", "preemptDelay", "vrid", "priorities", "timers",
                   "rebalance")


def _parse_failover(data: Any, path: str, problems: Problems) -> Failover:
    if data is None:
        return Failover()
    data = _mapping(data, path, problems, "failover settings")
    _unknown_fields(data, FAILOVER_FIELDS, path, problems)
    on_loss = data.get("onEtcdLoss", "hold")
    if on_loss not in ON_ETCD_LOSS:
        problems.add(f"{path}.onEtcdLoss", f"must be 'hold' (default) or 'vrrp', not {on_loss!r}")
        on_loss = "hold"
    preempt = data.get("preempt", False)
    if not isinstance(preempt, bool):
        problems.add(f"{path}.preempt", "must be true or false")
        preempt = False
    rebalance = data.get("rebalance", True)
    if not isinstance(rebalance, bool):
        problems.add(f"{path}.rebalance", "must be true (default: move back to the placement's "
                     "first choice) or false (stay where it is)")
        rebalance = True
    delay = 0.0
    if "preemptDelay" in data:
        try:
            delay = parse_duration(data["preemptDelay"], f"{path}.preemptDelay")
        except ConfigError as exc:
            for p, msg in exc.problems:
                problems.add(p, msg)
    vrid = data.get("vrid")
    if vrid is not None and (isinstance(vrid, bool) or not isinstance(vrid, int)
                             or not VRID_MIN <= vrid <= VRID_MAX):
        problems.add(f"{path}.vrid", f"must be an integer from {VRID_MIN} to {VRID_MAX}")
        vrid = None
    priorities: dict[str, int] = {}
    raw_prio = data.get("priorities") or {}
    if not isinstance(raw_prio, Mapping):
        problems.add(f"{path}.priorities", "must map node names to priorities 1-254")
        raw_prio = {}
    for node, prio in raw_prio.items():
        why = dns1123_subdomain_problem(node)
        if why:
            problems.add(f"{path}.priorities.{node}", why)
        elif isinstance(prio, bool) or not isinstance(prio, int) or not 1 <= prio <= 254:
            problems.add(f"{path}.priorities.{node}",
                         "must be an integer from 1 to 254 (higher wins; 255 is reserved by VRRP)")
        else:
            priorities[node] = prio
    timers = Timers()
    if data.get("timers") is not None:
        try:
            timers = Timers.from_mapping(data["timers"], f"{path}.timers")
        except ConfigError as exc:
            for p, msg in exc.problems:
                problems.add(p, msg)
        else:
            for p, msg in timers.problems(f"{path}.timers", written=list(data["timers"])):
                problems.add(p, msg)
    return Failover(on_loss, preempt, delay, vrid, priorities, timers, rebalance)


def _parse_source_ip(data: Any, path: str, problems: Problems) -> SourceIP:
    data = _mapping(data, path, problems, f"mode plus {' or '.join(MODE_SUBOBJECT.values())}")
    _unknown_fields(data, ("mode", *MODE_SUBOBJECT.values()), path, problems)
    mode = data.get("mode")
    if mode not in MODES:
        problems.add(f"{path}.mode", f"must be {MODE_PRIMARY} or {MODE_VIP}, not {mode!r}")
        return SourceIP(mode=str(mode))
    sub_name = MODE_SUBOBJECT[mode]
    for other_mode, other in MODE_SUBOBJECT.items():
        if other_mode != mode and other in data:
            problems.add(f"{path}.{other}", f"does not go with mode {mode}; remove it "
                         f"(or set mode: {other_mode})")
    sub = data.get(sub_name)
    if not isinstance(sub, Mapping):
        problems.add(f"{path}.{sub_name}", f"is required with mode {mode}"
                     + (": interfaceName, e.g. eth1" if mode == MODE_PRIMARY
                        else ": ip, e.g. 192.0.2.100"))
        return SourceIP(mode=mode)
    sub_path = f"{path}.{sub_name}"
    if mode == MODE_PRIMARY:
        _unknown_fields(sub, ("interfaceName",), sub_path, problems)
        ifname = sub.get("interfaceName")
        why = ifname_problem(ifname)
        if why:
            problems.add(f"{sub_path}.interfaceName", why)
        return SourceIP(mode, interface_name=ifname if not why else None)
    _unknown_fields(sub, ("ip", "interfaceName"), sub_path, problems)
    vip = sub.get("ip")
    why = unicast_ipv4_problem(vip) if vip is not None else "is required: the virtual IPv4 address"
    if why:
        problems.add(f"{sub_path}.ip", why)
    ifname = sub.get("interfaceName")
    if ifname is not None:
        why_if = ifname_problem(ifname)
        if why_if:
            problems.add(f"{sub_path}.interfaceName", why_if)
            ifname = None
    return SourceIP(mode, interface_name=ifname, virtual_ip=vip if not why else None)


@dataclass(frozen=True)
class EgressGateway(Resource):
    KIND: ClassVar[str] = "EgressGateway"
    API_VERSION: ClassVar[str] = DECKHOUSE_API

    node_selector: LabelSelector = field(default_factory=LabelSelector)
    source_ip: SourceIP = field(default_factory=lambda: SourceIP(MODE_PRIMARY))
    failover: Failover = field(default_factory=Failover)

    @property
    def vrid(self) -> int:
        return effective_vrid(self.name, self.failover.vrid)

    @property
    def egress_description(self) -> str:
        """What ``get -o wide`` shows: the VIP, or the interface whose primary IP is used."""
        if self.source_ip.mode == MODE_VIP:
            return str(self.source_ip.virtual_ip)
        return f"primary IP of {self.source_ip.interface_name}"

    @classmethod
    def parse_spec(cls, meta, spec, manifest, problems):
        _unknown_fields(spec, ("nodeSelector", "sourceIP", "failover"), "spec", problems)
        if "nodeSelector" not in spec:
            problems.add("spec.nodeSelector", "is required: the labels of the egress nodes, "
                         "e.g. node-role.deckhouse.io/egress: \"\"")
        selector = LabelSelector.parse_from_labels(spec.get("nodeSelector"), "spec.nodeSelector",
                                                   problems)
        if "nodeSelector" in spec and selector.empty and not problems:
            problems.add("spec.nodeSelector", "is empty and would select every node; "
                         "name the egress nodes' label, e.g. node-role.deckhouse.io/egress: \"\"")
        source_ip = _parse_source_ip(spec.get("sourceIP"), "spec.sourceIP", problems)
        failover = _parse_failover(spec.get("failover"), "spec.failover", problems)
        return cls(meta, manifest, selector, source_ip, failover)


# --- EgressGatewayPolicy -----------------------------------------------------------


@dataclass(frozen=True)
class EgressGatewayPolicy(Resource):
    KIND: ClassVar[str] = "EgressGatewayPolicy"
    API_VERSION: ClassVar[str] = DECKHOUSE_API

    destination_cidrs: tuple[str, ...] = ()
    egress_gateway_name: str = ""
    selectors: tuple[LabelSelector, ...] = ()

    def selects(self, vm: "VirtualMachine") -> bool:
        """Whether the policy applies to ``vm`` (namespace matched as a pseudo-label)."""
        labels = vm.selector_labels
        return any(sel.matches(labels) for sel in self.selectors)

    @classmethod
    def parse_spec(cls, meta, spec, manifest, problems):
        _unknown_fields(spec, ("destinationCIDRs", "egressGatewayName", "selectors"), "spec",
                        problems)
        out_cidrs = _checked_list(spec.get("destinationCIDRs"), "spec.destinationCIDRs",
                                  ipv4_cidr_problem, problems,
                                  "is required: a non-empty list of IPv4 CIDRs, e.g. "
                                  "[203.0.113.0/24] (0.0.0.0/0 for everything)")
        gw = spec.get("egressGatewayName")
        why = dns1123_subdomain_problem(gw)
        if why:
            problems.add("spec.egressGatewayName", why)
        raw_sel = spec.get("selectors")
        selectors: list[LabelSelector] = []
        if not isinstance(raw_sel, list) or not raw_sel:
            problems.add("spec.selectors", "is required and must not be empty: an empty list would "
                         "select no VM by accident; add - podSelector: {matchLabels: {app: backend}}")
        else:
            for i, item in enumerate(raw_sel):
                path = f"spec.selectors[{i}]"
                item = _mapping(item, path, problems, "podSelector: {matchLabels: …}")
                _unknown_fields(item, ("podSelector",), path, problems)
                sel = LabelSelector.parse_obj(item.get("podSelector"), f"{path}.podSelector", problems)
                if sel.empty:
                    problems.add(f"{path}.podSelector", "is empty and would select every VM; add "
                                 "matchLabels or matchExpressions")
                else:
                    selectors.append(sel)
        return cls(meta, manifest, tuple(out_cidrs), gw or "", tuple(selectors))


# --- Node and VirtualMachine -------------------------------------------------------


@dataclass(frozen=True)
class Node(Resource):
    """An egress or worker node: labels, addresses, and the cordon flag.

    ``subnets`` (interface -> the network of its address) and ``routers`` (the next
    hops the node routes through, e.g. its default gateway) are optional facts about
    the node's network; apply checks virtual IPs against them (docs/store.md).
    """

    KIND: ClassVar[str] = "Node"
    API_VERSION: ClassVar[str] = VIPMGR_API

    unschedulable: bool = False
    internal_ip: str | None = None
    addresses: Mapping[str, str] = field(default_factory=dict)  # interface -> IPv4
    subnets: Mapping[str, str] = field(default_factory=dict)  # interface -> IPv4 CIDR
    routers: tuple[str, ...] = ()

    @classmethod
    def parse_spec(cls, meta, spec, manifest, problems):
        _unknown_fields(spec, ("unschedulable", "internalIP", "addresses", "subnets", "routers"),
                        "spec", problems)
        unsched = spec.get("unschedulable", False)
        if not isinstance(unsched, bool):
            problems.add("spec.unschedulable", "must be true or false (vipmgr cordon sets it)")
            unsched = False
        internal = spec.get("internalIP")
        if internal is not None:
            why = unicast_ipv4_problem(internal)
            if why:
                problems.add("spec.internalIP", why)
                internal = None
        addresses = _per_interface(spec.get("addresses"), "spec.addresses", unicast_ipv4_problem,
                                   "IPv4 addresses, e.g. {eth1: 192.0.2.11}", problems)
        subnets = _per_interface(spec.get("subnets"), "spec.subnets", ipv4_cidr_problem,
                                 "the network of their address, e.g. {eth1: 192.0.2.0/24}",
                                 problems)
        routers: list[str] = []
        if spec.get("routers") not in (None, []):
            routers = _checked_list(spec["routers"], "spec.routers", unicast_ipv4_problem,
                                    problems, "must be a list of the node's next hops, "
                                    "e.g. [192.0.2.1]")
        return cls(meta, manifest, unsched, internal, addresses, subnets, tuple(routers))


@dataclass(frozen=True)
class VirtualMachine(Resource):
    """A workload: where it runs and which IPv4 addresses it sends from."""

    KIND: ClassVar[str] = "VirtualMachine"
    API_VERSION: ClassVar[str] = VIPMGR_API
    NAMESPACED: ClassVar[bool] = True

    node_name: str = ""
    addresses: tuple[str, ...] = ()

    @property
    def selector_labels(self) -> dict[str, str]:
        """Labels as policy selectors see them: own labels plus the namespace pseudo-label."""
        return {**self.labels, NAMESPACE_LABEL: self.namespace or DEFAULT_NAMESPACE}

    @classmethod
    def parse_spec(cls, meta, spec, manifest, problems):
        _unknown_fields(spec, ("nodeName", "addresses"), "spec", problems)
        node = spec.get("nodeName")
        why = dns1123_subdomain_problem(node)
        if why:
            problems.add("spec.nodeName", why)
        addresses = _checked_list(spec.get("addresses"), "spec.addresses", unicast_ipv4_problem,
                                  problems, "is required: the VM's IPv4 addresses, e.g. [198.18.1.2]")
        return cls(meta, manifest, node or "", tuple(addresses))


# --- kinds registry and manifest parsing -------------------------------------------


@dataclass(frozen=True)
class KindInfo:
    cls: type[Resource]
    plural: str
    singular: str
    short: tuple[str, ...]

    @property
    def kind(self) -> str:
        return self.cls.KIND


KINDS: tuple[KindInfo, ...] = (
    KindInfo(EgressGateway, "egressgateways", "egressgateway", ("egw",)),
    KindInfo(EgressGatewayPolicy, "egressgatewaypolicies", "egressgatewaypolicy", ("egwp",)),
    KindInfo(Node, "nodes", "node", ("no",)),
    KindInfo(VirtualMachine, "virtualmachines", "virtualmachine", ("vm", "vms", "vmi")),
)
KIND_BY_NAME: dict[str, KindInfo] = {}
for _info in KINDS:
    for _alias in (_info.plural, _info.singular, *_info.short, _info.kind.lower()):
        KIND_BY_NAME[_alias] = _info
KIND_BY_KIND = {info.kind: info for info in KINDS}


def resolve_kind(name: str) -> KindInfo:
    """``egw``, ``egressgateways``, ``EgressGateway`` … → the kind; ValueError lists valid names."""
    info = KIND_BY_NAME.get(name.lower())
    if info is None:
        valid = ", ".join(f"{i.plural} ({'/'.join((i.singular, *i.short))})" for i in KINDS)
        raise ValueError(f"unknown resource type {name!r}; known: {valid}")
    return info


def parse_manifest(doc: Any, problems: Problems,
                   resource_version: int | None = None) -> Resource | None:
    """One manifest (a YAML/JSON document) → a typed resource, or None with problems recorded."""
    if not isinstance(doc, Mapping):
        problems.add("<document>", "must be a mapping with apiVersion, kind, metadata and spec")
        return None
    kind = doc.get("kind")
    info = KIND_BY_KIND.get(kind) if isinstance(kind, str) else None
    if info is None:
        problems.add("kind", f"must be one of {', '.join(KIND_BY_KIND)}, not {kind!r}")
        return None
    cls = info.cls
    _unknown_fields(doc, ("apiVersion", "kind", "metadata", "spec"), "", problems)
    if doc.get("apiVersion") != cls.API_VERSION:
        problems.add("apiVersion", f"must be {cls.API_VERSION} for kind {kind}, "
                     f"not {doc.get('apiVersion')!r}")
    meta_raw = _mapping(doc.get("metadata"), "metadata", problems, "name (and labels)")
    allowed_meta = ("name", "labels", "resourceVersion", "annotations") + (
        ("namespace",) if cls.NAMESPACED else ())
    _unknown_fields(meta_raw, allowed_meta, "metadata", problems)
    name = meta_raw.get("name")
    why = dns1123_subdomain_problem(name)
    if why:
        problems.add("metadata.name", why)
    namespace = None
    if cls.NAMESPACED:
        namespace = meta_raw.get("namespace", DEFAULT_NAMESPACE)
        why = dns1123_label_problem(namespace)
        if why:
            problems.add("metadata.namespace", why)
    labels = check_labels(meta_raw.get("labels"), "metadata.labels", problems)
    rv = resource_version
    if rv is None and "resourceVersion" in meta_raw:
        try:
            rv = int(str(meta_raw["resourceVersion"]))
        except ValueError:
            problems.add("metadata.resourceVersion", "must be the number `get -o yaml` printed; "
                         "remove it to apply unconditionally")
    spec = _mapping(doc.get("spec"), "spec", problems, f"the {kind} spec")
    manifest = _normalized_manifest(doc, cls, namespace)
    meta = ObjectMeta(name if isinstance(name, str) else "", namespace, labels, rv)
    return cls.parse_spec(meta, spec, manifest, problems)


def _normalized_manifest(doc: Mapping[str, Any], cls: type[Resource],
                         namespace: str | None) -> dict[str, Any]:
    """The manifest as stored: resourceVersion stripped, namespace made explicit."""
    manifest = copy.deepcopy(dict(doc))
    raw_meta = manifest.get("metadata")
    meta = dict(raw_meta) if isinstance(raw_meta, Mapping) else {}
    meta.pop("resourceVersion", None)
    if cls.NAMESPACED:
        meta["namespace"] = namespace
    if not meta.get("labels"):
        meta.pop("labels", None)
    manifest["metadata"] = meta
    manifest.setdefault("spec", {})
    return manifest
