"""`vipmgr status` exit codes from the status agents publish (written here by hand)."""

import asyncio
import json
import time

import aetcd
import pytest

pytestmark = pytest.mark.etcd

SETUP = """\
apiVersion: network.deckhouse.io/v1alpha1
kind: EgressGateway
metadata: {name: egw}
spec:
  nodeSelector: {role: egress}
  sourceIP: {mode: VirtualIPAddress, virtualIPAddress: {ip: 192.0.2.100}}
---
apiVersion: vipmgr.io/v1alpha1
kind: Node
metadata: {name: gw-a, labels: {role: egress}}
spec: {}
---
apiVersion: vipmgr.io/v1alpha1
kind: Node
metadata: {name: gw-b, labels: {role: egress}}
spec: {}
"""


def publish(etcd_server, prefix, docs: dict[str, dict]):
    async def go():
        c = aetcd.Client(host=etcd_server.host, port=etcd_server.client_port)
        await c.connect()
        try:
            for key, value in docs.items():
                await c.put(f"{prefix}/{key}".encode(), json.dumps(value).encode())
        finally:
            await c.close()
    asyncio.run(go())


def node_status(name, ready=True):
    return {"node": name, "ready": ready, "datapath_ready": True, "updated": time.time(),
            "ready_reason": "" if ready else "probe 'uplink' failing"}


def member(name, role):
    return {"gateway": "egw", "node": name, "role": role, "epoch": 7 if role == "active" else 0,
            "since": time.time() - 3, "priority": 100, "updated": time.time(),
            "heard_peers": {"gw-b" if name == "gw-a" else "gw-a": time.time()}}


def test_exit_codes_follow_the_situation(vipmgr, etcd_server, etcd_prefix):
    vipmgr("apply", "-f", "-", input=SETUP)
    out = vipmgr("status", code=2).output
    assert "NO-ACTIVE" in out and "no active node" in out
    publish(etcd_server, etcd_prefix, {
        "status/nodes/gw-a": node_status("gw-a"), "status/nodes/gw-b": node_status("gw-b"),
        "status/gateways/egw/gw-a": member("gw-a", "active"),
        "status/gateways/egw/gw-b": member("gw-b", "standby"),
        "authority/egw": {"node": "gw-a", "lease": 1}})
    out = vipmgr("status", code=0).output
    assert "active: gw-a" in out and ", epoch " in out and "HEALTHY" in out
    publish(etcd_server, etcd_prefix, {"status/nodes/gw-b": node_status("gw-b", ready=False)})
    out = vipmgr("status", "egw", code=1).output
    assert "no eligible standby" in out and "probe 'uplink' failing" in out
    data = json.loads(vipmgr("status", "-o", "json", code=1).output)
    assert data["gateways"][0]["active"] == "gw-a"
    publish(etcd_server, etcd_prefix, {"status/gateways/egw/gw-b": member("gw-b", "active")})
    out = vipmgr("status", code=1).output
    assert "2 nodes report active" in out
    publish(etcd_server, etcd_prefix, {"status/gateways/egw/gw-a": {
        **member("gw-a", "active"), "updated": time.time() - 60}})
    out = vipmgr("status", code=2).output
    assert "gw-a holds the authority but does not report serving (stale)" in out
    vipmgr("status", "nope", code=1)
