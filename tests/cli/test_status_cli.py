"""`vipmgr status`, `switchover` and `events` from the records agents publish (written here
by hand): exit codes, the etcd-cut member, the history, the refusals."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aetcd
import pytest
import yaml

from vipmgr.cli.events import describe_events
from vipmgr.store import events as history
from vipmgr.store.client import EtcdSettings, connect
from vipmgr.store.events import GatewayEvent
from vipmgr.store.resources import KeyLayout, ResourceStore
from waiting import wait_for

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
            "since": time.time() - 3, "priority": 100, "updated": time.time(), "eligible": True,
            "heard_peers": {"gw-b" if name == "gw-a" else "gw-a": time.time()}}


def test_exit_codes_follow_the_situation(vipmgr, etcd_server, etcd_prefix):
    vipmgr("apply", "-f", "-", input=SETUP)
    out = vipmgr("status", code=4).output
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
    out = vipmgr("status", code=4).output
    assert "gw-a holds the authority but does not report serving (stale)" in out
    vipmgr("status", "nope", code=1)
    vipmgr("status", "--bogus", code=2)  # usage error: its own code


def with_store(etcd_server, prefix, body):
    async def go():
        client = await connect(EtcdSettings.from_options(etcd_server.url, prefix))
        try:
            return await body(ResourceStore(client, KeyLayout(prefix)))
        finally:
            await client.close()
    return asyncio.run(go())


def healthy_pair(etcd_server, prefix, active="gw-a", standby="gw-b"):
    publish(etcd_server, prefix, {
        f"status/nodes/{active}": node_status(active),
        f"status/nodes/{standby}": node_status(standby),
        f"status/gateways/egw/{active}": member(active, "active"),
        f"status/gateways/egw/{standby}": member(standby, "standby"),
        "authority/egw": {"node": active, "lease": 1}})


def test_yaml_output_is_the_json_document(vipmgr, etcd_server, etcd_prefix):
    vipmgr("apply", "-f", "-", input=SETUP)
    healthy_pair(etcd_server, etcd_prefix)
    as_yaml = yaml.safe_load(vipmgr("status", "-o", "yaml").output)
    as_json = json.loads(vipmgr("status", "-o", "json").output)
    assert as_yaml["gateways"][0]["active"] == as_json["gateways"][0]["active"] == "gw-a"


def test_a_member_cut_from_etcd_is_named_so_not_no_agent(vipmgr, etcd_server, etcd_prefix):
    """Issue 13 bug 4: gw-b's status record (lease-bound) is gone, but gw-a still hears its
    heartbeats: gw-b is alive and cut from etcd, not "no-agent (agent not running?)"."""
    vipmgr("apply", "-f", "-", input=SETUP)
    publish(etcd_server, etcd_prefix, {
        "status/nodes/gw-a": node_status("gw-a"),
        "status/gateways/egw/gw-a": member("gw-a", "active"),
        "authority/egw": {"node": "gw-a", "lease": 1}})
    out = vipmgr("status", code=1).output
    row = next(line for line in out.splitlines() if line.strip().startswith("gw-b"))
    assert "etcd-cut" in row and "cut from etcd: gw-a heard it" in row, out
    assert "agent not running" not in row
    assert "gw-b (heard by gw-a" in out and "alive but cut from etcd" in out
    data = json.loads(vipmgr("status", "-o", "json", code=1).output)
    assert {m["node"]: m["role"] for m in data["gateways"][0]["members"]}["gw-b"] == "etcd-cut"


def test_last_failover_comes_from_the_history(vipmgr, etcd_server, etcd_prefix):
    """A graceful handover (cordon of gw-b) names the old node and the cause."""
    vipmgr("apply", "-f", "-", input=SETUP)
    healthy_pair(etcd_server, etcd_prefix)
    event = GatewayEvent("egw", "gw-a", "failover", time.time(), "cordon", "acquiring", "active",
                         "epoch 9", 9, "gw-b", 31.5)
    with_store(etcd_server, etcd_prefix,
               lambda st: history.append(st.client, st.layout.prefix, event))
    out = vipmgr("status").output
    assert "last failover: gw-b -> gw-a, reason cordon, 31.5 ms" in out, out


def test_switchover_refuses_what_cannot_work(vipmgr, etcd_server, etcd_prefix):
    vipmgr("apply", "-f", "-", input=SETUP + """---
apiVersion: vipmgr.io/v1alpha1
kind: Node
metadata: {name: worker, labels: {role: worker}}
spec: {}
""")
    err = vipmgr("switchover", "egw", "--to", "gw-a", code=1).output
    assert "refused" in err and "no active node" in err
    healthy_pair(etcd_server, etcd_prefix)
    for target, why in (("gw-a", "gw-a is already the active node"),
                        ("gw-z", "no node 'gw-z'"),
                        ("worker", "not selected by egw's nodeSelector")):
        out = vipmgr("switchover", "egw", "--to", target, code=1).output
        assert why in out and out.count("\n") == 1, out  # one line, nothing requested
    publish(etcd_server, etcd_prefix, {"status/nodes/gw-b": node_status("gw-b", ready=False)})
    out = vipmgr("switchover", "egw", "--to", "gw-b", code=1).output
    assert "gw-b is not an eligible standby (probe 'uplink' failing)" in out
    out = vipmgr("switchover", "egw", code=1).output
    assert "no eligible standby" in out
    publish(etcd_server, etcd_prefix, {  # a problem of this gateway alone, from gw-b's agent
        "status/nodes/gw-b": node_status("gw-b"),
        "status/gateways/egw/gw-b": {**member("gw-b", "standby"), "eligible": False,
                                     "reasons": ["interface eth9 does not exist"]}})
    out = vipmgr("switchover", "egw", "--to", "gw-b", code=1).output
    assert "gw-b is not an eligible standby (interface eth9 does not exist)" in out
    vipmgr("switchover", "nope", code=1)
    keys = with_store(etcd_server, etcd_prefix,
                      lambda st: st.client.get_prefix(f"{etcd_prefix}/switchover/".encode()))
    assert not list(keys)  # nothing was requested
    refusals = vipmgr("events", "egw", "-o", "json").output
    assert [e["kind"] for e in json.loads(refusals)["events"]] == ["refusal"] * 7


def test_switchover_wait_times_out_with_its_own_code(vipmgr, etcd_server, etcd_prefix):
    vipmgr("apply", "-f", "-", input=SETUP)
    healthy_pair(etcd_server, etcd_prefix)
    result = vipmgr("switchover", "egw", "--to", "gw-b", "--wait", "--timeout", "0.5", code=5)
    assert "no handover within 0.5s: gw-a is active" in result.output


def test_events_history_is_bounded_and_rendered(vipmgr, etcd_server, etcd_prefix):
    async def body(st):
        for i in range(history.KEEP + 7):
            await history.append(st.client, st.layout.prefix, GatewayEvent(
                "egw", "gw-a", "role", 1000.0 + i, "silence", "standby", "challenging", f"n{i}"))
        await history.append(st.client, st.layout.prefix, GatewayEvent(
            "other", "gw-b", "failover", 2000.0, "cordon", "acquiring", "active", "", 3, "gw-c",
            12.0))
        return await history.history(st.client, st.layout.prefix, "egw"), \
            await describe_events(st, "egw", limit=3), await describe_events(st, "nope")
    kept, section, empty = with_store(etcd_server, etcd_prefix, body)
    assert len(kept) == history.KEEP and kept[-1].detail == f"n{history.KEEP + 6}"
    assert kept[0].detail == "n7"  # the oldest were trimmed
    assert section.startswith("Events:\n") and len(section.splitlines()) == 5  # title, header, 3
    assert "standby -> challenging" in section and empty == "Events: <none>"
    out = vipmgr("events").output
    assert "gw-c -> gw-b in 12 ms" in out and "cordon" in out
    data = yaml.safe_load(vipmgr("events", "other", "-o", "yaml").output)
    assert data["events"][0]["previous"] == "gw-c"


def test_watch_redraws_until_ctrl_c_and_events_watch_prints_new_ones(vipmgr, etcd_server,
                                                                      etcd_prefix, tmp_path):
    vipmgr("apply", "-f", "-", input=SETUP)
    healthy_pair(etcd_server, etcd_prefix)
    exe = str(Path(sys.executable).with_name("vipmgr"))
    env = dict(os.environ, VIPMGR_ETCD=etcd_server.url, VIPMGR_ETCD_PREFIX=etcd_prefix,
               PYTHONUNBUFFERED="1")
    outs = {name: tmp_path / f"{name}.out" for name in ("status", "events")}
    procs = {name: subprocess.Popen([exe, name, "--watch", "--interval", "0.2"], env=env,
                                    stdout=outs[name].open("w"), stderr=subprocess.PIPE,
                                    text=True) for name in outs}
    wait_for(lambda: outs["status"].read_text().count("Gateway egw: HEALTHY") >= 3, 20,
             "three status frames")
    wait_for(lambda: "No events." in outs["events"].read_text(), 20, "the first events frame")
    with_store(etcd_server, etcd_prefix, lambda st: history.append(
        st.client, st.layout.prefix, GatewayEvent("egw", "gw-b", "failover", time.time(),
                                                  "switchover", "acquiring", "active", "", 8,
                                                  "gw-a", 20.0)))
    wait_for(lambda: "gw-a -> gw-b in 20 ms" in outs["events"].read_text(), 10, "the new event")
    for name, proc in procs.items():
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0 and "Traceback" not in err, (name, err)
