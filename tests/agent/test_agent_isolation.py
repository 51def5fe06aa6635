"""Isolation (DESIGN: "a problem of one gateway never moves another"), with real agents.

Issue 13: an EgressGateway in PrimaryIP mode naming an interface no node has
(`eth9`) was accepted, and within 30 ms every node released every gateway.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vipmgr.lab.runtime import deploy, destroy
from vipmgr.lab.topology import default_topology_path, load
from waiting import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.slow]

LAB = "iso"
GWS = ("gw-a", "gw-b", "gw-c")
MANIFESTS = Path(__file__).resolve().parents[2] / "lab" / "manifests"
BAD = """\
apiVersion: network.deckhouse.io/v1alpha1
kind: EgressGateway
metadata: {name: egw-bad}
spec:
  nodeSelector: {node-role.deckhouse.io/egress: ""}
  sourceIP:
    mode: PrimaryIPFromEgressGatewayNodeInterface
    primaryIPFromEgressGatewayNodeInterface: {interfaceName: eth9}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    destroy(LAB)
    lab = deploy(load(default_topology_path()).renamed(LAB))
    try:
        out = lab.exec("etcd", ["vipmgr", "apply", "-f", str(MANIFESTS / "lab-inventory.yaml"),
                                "-f", str(MANIFESTS / "egressgateway-virtual-ip.yaml")])
        assert out.returncode == 0, out.stderr
        for node in GWS:
            if lab.process_state(node) != "running":  # the topology's cmd may run it already
                lab.start(node, ["vipmgr", "agent", "--node", node])
        wait_for(lambda: gateways(lab).get("egress-gw", {}).get("active"), 20,
                 "an active node for egress-gw")
        yield lab
    finally:
        destroy(LAB)


def gateways(lab) -> dict[str, dict]:
    out = lab.exec("etcd", ["vipmgr", "status", "-o", "json"])
    if not out.stdout.strip().startswith("{"):
        return {}
    return {g["name"]: g for g in json.loads(out.stdout).get("gateways", [])}


# `vipmgr apply` refuses such a gateway now (no member has eth9): write it the way a hand
# edit or an older client would, straight into the store, for the agents to cope with
STORE_PUT = """
import asyncio, sys, yaml
from vipmgr.resources.errors import Problems
from vipmgr.resources.loader import parse_manifest
from vipmgr.resources.models import KIND_BY_KIND
from vipmgr.store.client import EtcdSettings, connect
from vipmgr.store.resources import KeyLayout, encode
obj = parse_manifest(yaml.safe_load(open(sys.argv[1])), Problems())
async def main():
    settings = EtcdSettings.from_options()
    client = await connect(settings)
    key = KeyLayout(settings.prefix).resource_key(KIND_BY_KIND[obj.KIND], obj.name)
    await client.put(key.encode(), encode(obj))
    await client.close()
asyncio.run(main())
"""


def test_a_gateway_on_a_missing_interface_moves_no_other_gateway(lab, tmp_path):
    before = gateways(lab)["egress-gw"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    out = lab.exec("etcd", ["python3", "-c", STORE_PUT, str(bad)])
    assert out.returncode == 0, out.stderr

    def bad_reported():
        members = gateways(lab).get("egw-bad", {}).get("members", [])
        return len(members) == 3 and all("eth9" in m["why_not"] and not m["eligible"]
                                         for m in members)

    # by the time every member says why it cannot serve egw-bad, each agent has run the
    # self-check that sees eth9 missing: the bug released egress-gw at that moment
    wait_for(bad_reported, 10, "every member of egw-bad ineligible, naming eth9")
    after = gateways(lab)["egress-gw"]
    assert (after["active"], after["epoch"]) == (before["active"], before["epoch"])
    assert all(m["eligible"] and not m["why_not"] for m in after["members"]), after["members"]
    assert after["health"] == "healthy", after
