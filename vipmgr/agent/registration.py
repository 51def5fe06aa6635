"""The agent registers its own Node: addresses from the kernel, labels from config.

Labels from the config file seed a new Node; afterwards labels set with
``vipmgr label`` win (the agent only adds keys that are missing), so an
operator's ``label node gw-c node-role…-`` is never undone by a restart.
Addresses and the internal IP are the agent's to keep current.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Mapping

from pyroute2 import IPRoute

from vipmgr.agent.config import AgentConfig
from vipmgr.resources.errors import Problems
from vipmgr.resources.models import KIND_BY_KIND, VIPMGR_API, Node, parse_manifest
from vipmgr.store.resources import NotFoundError, ResourceStore


def primary_interfaces() -> dict[str, ipaddress.IPv4Interface]:
    """Each interface's primary IPv4 address (with its prefix) in this network namespace.

    The primary is the first address the kernel lists that is not flagged
    secondary and is not a /32 added next to a wider one (that is how a VIP
    sits on an interface), so a held VIP never becomes the node's address.
    """
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        by_if: dict[str, list[tuple[int, str]]] = {}
        for addr in ipr.get_addr(family=2):
            name = names.get(addr["index"])
            if name is None or name == "lo" or addr["flags"] & 0x01:  # IFA_F_SECONDARY
                continue
            by_if.setdefault(name, []).append(
                ipaddress.IPv4Interface(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}"))
    out = {}
    for name, addrs in by_if.items():
        wide = [a for a in addrs if a.network.prefixlen < 32]
        out[name] = (wide or addrs)[0]
    return out


def routers() -> list[str]:
    """The IPv4 next hops of this namespace's routes (default and others), deduplicated:
    apply refuses a VIP that is one of them (the router would lose its own address)."""
    with IPRoute() as ipr:
        hops = {r.get_attr("RTA_GATEWAY") for r in ipr.get_routes(family=2)}
    return sorted(h for h in hops if h)


def node_manifest(config: AgentConfig, interfaces: Mapping[str, ipaddress.IPv4Interface],
                  next_hops: list[str]) -> dict[str, Any]:
    """The Node as the kernel shows it: addresses, the subnets they are in and the routers
    (what apply checks a VIP against), the internal IP from ``internalInterface``."""
    addresses = {name: str(iface.ip) for name, iface in sorted(interfaces.items())}
    spec: dict[str, Any] = {"addresses": addresses}
    subnets = {name: str(iface.network) for name, iface in sorted(interfaces.items())
               if iface.network.prefixlen < 32}
    if subnets:
        spec["subnets"] = subnets
    if next_hops:
        spec["routers"] = list(next_hops)
    if config.internal_interface in addresses:
        spec["internalIP"] = addresses[config.internal_interface]
    meta: dict[str, Any] = {"name": config.node}
    if config.labels:
        meta["labels"] = dict(config.labels)
    return {"apiVersion": VIPMGR_API, "kind": "Node", "metadata": meta, "spec": spec}


async def register_node(store: ResourceStore, config: AgentConfig,
                        interfaces: Mapping[str, ipaddress.IPv4Interface],
                        next_hops: list[str]) -> str:
    """Create the Node, or refresh what the kernel says and add missing config labels."""
    info = KIND_BY_KIND["Node"]
    desired = node_manifest(config, interfaces, next_hops)
    try:
        await store.get(info, config.node)
    except NotFoundError:
        problems = Problems()
        obj = parse_manifest(desired, problems)
        problems.raise_if_any()
        assert isinstance(obj, Node)
        outcomes = await store.apply([obj])
        return outcomes[0].result

    def mutate(manifest: dict[str, Any]) -> str:
        labels = manifest.setdefault("metadata", {}).setdefault("labels", {})
        for key, value in config.labels.items():
            labels.setdefault(key, value)
        spec = manifest.setdefault("spec", {})
        for field in ("addresses", "subnets", "routers", "internalIP"):
            if field in desired["spec"]:
                spec[field] = desired["spec"][field]
            elif field != "internalIP":
                spec.pop(field, None)
        return "registered"

    return (await store.update(info, config.node, mutate)).result
