"""The agent's self-check splits what it finds: node-wide problems make the node ineligible
for every gateway, one gateway's problems (its interface, its address, its VIP) for that
gateway alone. Pure functions over a kernel reading: no root needed."""

from __future__ import annotations

import ipaddress

from vipmgr.agent.selfcheck import KernelCheck, gateway_problems, node_problems
from vipmgr.resources.errors import Problems
from vipmgr.resources.loader import parse_manifest

EGRESS = {"node-role.deckhouse.io/egress": ""}
IFACES = {"eth0": ipaddress.IPv4Interface("198.51.100.11/24"),
          "eth1": ipaddress.IPv4Interface("192.0.2.11/24")}


def obj(kind: str, name: str, spec: dict, labels: dict | None = None):
    api = "vipmgr.io/v1alpha1" if kind == "Node" else "network.deckhouse.io/v1alpha1"
    problems = Problems()
    out = parse_manifest({"apiVersion": api, "kind": kind,
                          "metadata": {"name": name, "labels": labels or {}}, "spec": spec},
                         problems)
    assert not problems, problems
    return out


NODE = obj("Node", "gw-a", {"internalIP": "198.51.100.11",
                            "addresses": {"eth0": "198.51.100.11", "eth1": "192.0.2.11"}}, EGRESS)


def vip(name: str, ip: str, interface: str | None = "eth1"):
    sub = {"ip": ip} | ({"interfaceName": interface} if interface else {})
    return obj("EgressGateway", name, {"nodeSelector": EGRESS, "sourceIP": {
        "mode": "VirtualIPAddress", "virtualIPAddress": sub}})


def primary(name: str, interface: str):
    return obj("EgressGateway", name, {"nodeSelector": EGRESS, "sourceIP": {
        "mode": "PrimaryIPFromEgressGatewayNodeInterface",
        "primaryIPFromEgressGatewayNodeInterface": {"interfaceName": interface}}})


def test_a_gateway_on_a_missing_interface_is_that_gateways_problem_only():
    """Issue 13: one PrimaryIP gateway naming eth9 made every node release every gateway."""
    kernel = KernelCheck({"eth9": "interface eth9 does not exist"})
    bad, good = primary("bad", "eth9"), vip("good", "192.0.2.100")
    assert node_problems(kernel, "eth0") == []
    assert gateway_problems(good, NODE, IFACES, kernel) == []
    assert gateway_problems(bad, NODE, IFACES, kernel) == ["node gw-a has no IPv4 address on eth9"]


def test_a_link_problem_of_the_gateway_interface_stays_with_its_gateways():
    kernel = KernelCheck({"eth1": "interface eth1 has no carrier"})
    assert node_problems(kernel, "eth0") == []
    assert gateway_problems(vip("g", "192.0.2.100"), NODE, IFACES, kernel) == \
        ["interface eth1 has no carrier"]
    assert gateway_problems(primary("p", "eth0"), NODE, IFACES, kernel) == []


def test_node_wide_problems():
    kernel = KernelCheck({"eth0": "interface eth0 is down"}, default_route=False)
    assert node_problems(kernel, "eth0") == ["interface eth0 is down",
                                             "no default (egress) route"]


def test_a_vip_outside_its_interfaces_subnet_is_named_with_the_fix():
    """Issue 15: a VIP in no member's subnet gave no active node ever and an empty NOTE."""
    [why] = gateway_problems(vip("g", "203.0.113.50"), NODE, IFACES, KernelCheck())
    assert "203.0.113.50 is outside eth1's subnet 192.0.2.0/24" in why
    assert "interfaceName" in why


def test_a_vip_whose_subnet_no_interface_has():
    [why] = gateway_problems(vip("g", "203.0.113.50", interface=None), NODE, IFACES,
                             KernelCheck())
    assert why == ("node gw-a has no interface in the subnet of 203.0.113.50; "
                   "set virtualIPAddress.interfaceName")
