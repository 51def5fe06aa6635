"""The agent's inventory on its own thread: watch events one key at a time, revisions
against the full read, only gateway/node changes reach the loop. Plain asyncio, no root."""

from __future__ import annotations

import asyncio
import json

from vipmgr.agent.inventory import Change, Inventory
from vipmgr.dataplane.plan import GarpSettings

P = "/vipmgr/resources"
EGRESS = {"node-role.deckhouse.io/egress": ""}


def node(name, ip, labels=None):
    return json.dumps({"apiVersion": "vipmgr.io/v1alpha1", "kind": "Node",
                       "metadata": {"name": name, "labels": labels or {}},
                       "spec": {"internalIP": ip, "addresses": {"eth0": ip}}}).encode()


def gateway():
    return json.dumps({"apiVersion": "network.deckhouse.io/v1alpha1", "kind": "EgressGateway",
                       "metadata": {"name": "egw"},
                       "spec": {"nodeSelector": EGRESS, "sourceIP": {
                           "mode": "VirtualIPAddress",
                           "virtualIPAddress": {"ip": "192.0.2.100", "interfaceName": "eth1"}}}}
                      ).encode()


def policy():
    return json.dumps({"apiVersion": "network.deckhouse.io/v1alpha1",
                       "kind": "EgressGatewayPolicy", "metadata": {"name": "pol"},
                       "spec": {"destinationCIDRs": ["203.0.113.0/24"], "egressGatewayName": "egw",
                                "selectors": [{"podSelector": {"matchLabels": {"app": "b"}}}]}}
                      ).encode()


def vm(app, ip="198.18.1.2"):
    return json.dumps({"apiVersion": "vipmgr.io/v1alpha1", "kind": "VirtualMachine",
                       "metadata": {"name": "vm", "namespace": "default", "labels": {"app": app}},
                       "spec": {"nodeName": "w", "addresses": [ip]}}).encode()


FULL = [Change(f"{P}/nodes/ga", node("ga", "198.51.100.11", EGRESS), 2),
        Change(f"{P}/nodes/w", node("w", "198.51.100.21"), 3),
        Change(f"{P}/egressgateways/egw", gateway(), 4),
        Change(f"{P}/egressgatewaypolicies/pol", policy(), 5),
        Change(f"{P}/virtualmachines/default/vm", vm("b"), 6)]


def steered(plan) -> set[str]:
    return {ip for sp in plan.steering for sel in sp.selections for ip in sel.sources}


def test_events_apply_one_key_and_only_topology_reaches_the_loop():
    async def main():
        inv = Inventory("w")
        try:
            snap = await inv.load(FULL)
            assert set(snap.gateways) == {"egw"} and set(snap.nodes) == {"ga", "w"}
            plan = await inv.plan([], {"egw": "ga"}, {}, GarpSettings())
            assert steered(plan) == {"198.18.1.2"}
            # a VM relabelled out of the policy: no topology change, the plan follows
            assert await inv.apply([Change(f"{P}/virtualmachines/default/vm", vm("x"), 7)]) is None
            assert steered(await inv.plan([], {"egw": "ga"}, {}, GarpSettings())) == set()
            # an event the full read already covered (older revision) changes nothing
            assert await inv.apply([Change(f"{P}/virtualmachines/default/vm", vm("b"), 6)]) is None
            assert steered(await inv.plan([], {"egw": "ga"}, {}, GarpSettings())) == set()
            # a deleted node is a topology change
            snap = await inv.apply([Change(f"{P}/nodes/ga", None, 8)])
            assert snap is not None and set(snap.nodes) == {"w"}
            # a full read without the policy removes it; a corrupt value is skipped
            snap = await inv.load([c for c in FULL if "policies" not in c.key and "nodes/ga"
                                   not in c.key] + [Change(f"{P}/virtualmachines/default/bad",
                                                           b"{not json", 9)])
            plan = await inv.plan([], {"egw": "ga"}, {}, GarpSettings())
            assert plan.steering == () and set(snap.nodes) == {"w"}
        finally:
            inv.close()

    asyncio.run(main())


def test_the_plan_serves_what_the_node_serves_and_never_trusts_a_stale_holder():
    async def main():
        inv = Inventory("ga")
        try:
            await inv.load(FULL)
            served = await inv.plan(["egw"], {}, {}, GarpSettings())
            assert [g.name for g in served.active] == ["egw"]
            # etcd still names us, but we do not serve it: nobody is active here
            stale = await inv.plan([], {"egw": "ga"}, {}, GarpSettings())
            assert stale.active == ()
        finally:
            inv.close()

    asyncio.run(main())
