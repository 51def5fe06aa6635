"""kubectl-like commands against a real etcd."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.etcd

SEED = Path(__file__).resolve().parents[3] / "shared" / "seed" / "manifests"

NODES = """\
apiVersion: vipmgr.io/v1alpha1
kind: Node
metadata: {name: gw-a, labels: {node-role.deckhouse.io/egress: ""}}
spec: {internalIP: 198.51.100.11, addresses: {eth1: 192.0.2.11}}
---
apiVersion: vipmgr.io/v1alpha1
kind: Node
metadata: {name: worker-a}
spec: {internalIP: 198.51.100.21}
---
apiVersion: vipmgr.io/v1alpha1
kind: VirtualMachine
metadata: {name: vm-backend, namespace: default, labels: {app: backend}}
spec: {nodeName: worker-a, addresses: [198.18.1.2]}
"""


def seed(name: str) -> str:
    path = SEED / name
    if not path.exists():
        pytest.skip(f"seed manifest {path} missing")
    return str(path)


def test_seed_manifests_apply_and_round_trip(vipmgr):
    out = vipmgr("apply", "-f", seed("egressgateway-primary-ip.yaml")).output
    assert "egressgateway/egress-gw created" in out
    assert "unchanged" in vipmgr("apply", "-f", seed("egressgateway-primary-ip.yaml")).output
    stored = yaml.safe_load(vipmgr("get", "egw", "egress-gw", "-o", "yaml").output)
    original = yaml.safe_load(Path(seed("egressgateway-primary-ip.yaml")).read_text())
    assert stored["spec"] == original["spec"]
    assert int(stored["metadata"]["resourceVersion"]) > 0
    wide = vipmgr("get", "egw", "-o", "wide").output
    assert "PrimaryIPFromEgressGatewayNodeInterface" in wide and "eth1" in wide
    out = vipmgr("apply", "-f", seed("egressgateway-virtual-ip.yaml")).output
    assert "configured" in out
    assert "172.18.18.242" in vipmgr("get", "egressgateways", "-o", "wide").output
    vipmgr("apply", "-f", seed("egressgatewaypolicy.yaml"))
    assert "egress-gw-policy" in vipmgr("get", "egwp").output
    desc = vipmgr("describe", "egw", "egress-gw").output
    assert "Policies:         egress-gw-policy" in desc and "Events: <none>" in desc


def test_invalid_second_document_stores_nothing(vipmgr, tmp_path):
    bad = tmp_path / "two.yaml"
    good = Path(seed("egressgateway-virtual-ip.yaml")).read_text()
    bad.write_text(good + "---\n" + NODES.replace("198.18.1.2", "198.18.1.2/24"))
    res = vipmgr("apply", "-f", str(bad), code=1)
    assert "spec.addresses[0]" in res.output and "nothing was changed" in res.output
    assert "No egressgateways found" in vipmgr("get", "egw").output
    assert vipmgr("get", "nodes", "-o", "name").output == ""


def test_label_selector_and_label_command(vipmgr, tmp_path):
    f = tmp_path / "n.yaml"
    f.write_text(NODES)
    vipmgr("apply", "-f", str(f))
    assert vipmgr("get", "nodes", "-l", "node-role.deckhouse.io/egress", "-o", "name").output.split() == ["node/gw-a"]
    assert vipmgr("get", "nodes", "-l", "!node-role.deckhouse.io/egress", "-o", "name").output.split() == ["node/worker-a"]
    vipmgr("label", "node", "worker-a", "node-role.deckhouse.io/egress=")
    assert len(vipmgr("get", "no", "-l", "node-role.deckhouse.io/egress", "-o", "name").output.split()) == 2
    vipmgr("label", "vm", "vm-backend", "app=frontend", code=1)  # needs --overwrite
    vipmgr("label", "vm", "vm-backend", "app=frontend", "--overwrite")
    assert "app=frontend" in vipmgr("get", "vm", "-o", "wide").output
    vipmgr("label", "vm", "vm-backend", "app-")
    assert "<none>" in vipmgr("get", "vm", "-o", "wide").output
    vipmgr("label", "egw", "x", "a=b", code=1)


def test_cordon_uncordon_and_describe(vipmgr, tmp_path):
    f = tmp_path / "n.yaml"
    f.write_text(NODES)
    vipmgr("apply", "-f", str(f))
    assert vipmgr("cordon", "gw-a").output.strip() == "node/gw-a cordoned"
    assert vipmgr("cordon", "gw-a").output.strip() == "node/gw-a already cordoned"
    assert "SchedulingDisabled" in vipmgr("get", "nodes").output
    desc = vipmgr("describe", "node", "gw-a").output
    assert "cordoned:       True" in desc
    assert vipmgr("uncordon", "gw-a").output.strip() == "node/gw-a uncordoned"
    assert vipmgr("uncordon", "gw-a").output.strip() == "node/gw-a already uncordoned"
    assert "SchedulingDisabled" not in vipmgr("get", "nodes").output
    vipmgr("cordon", "nope", code=1)


def test_get_nodes_wide_shows_each_criterion(vipmgr, tmp_path):
    f = tmp_path / "n.yaml"
    f.write_text(NODES)
    vipmgr("apply", "-f", str(f), "-f", seed("egressgateway-primary-ip.yaml"))
    wide = vipmgr("get", "nodes", "-o", "wide").output
    header = wide.splitlines()[0]
    for col in ("EGRESS-GATEWAYS", "READY", "CORDONED", "DATAPATH", "ELIGIBLE", "REASON"):
        assert col in header
    gw_row = next(line for line in wide.splitlines() if line.startswith("gw-a"))
    assert "egress-gw" in gw_row and "no agent status" in gw_row
    worker_row = next(line for line in wide.splitlines() if line.startswith("worker-a"))
    assert "no EgressGateway selects" in worker_row


def test_delete_by_file_and_by_name(vipmgr, tmp_path):
    f = tmp_path / "n.yaml"
    f.write_text(NODES)
    vipmgr("apply", "-f", str(f))
    assert "virtualmachine/default/vm-backend deleted" in vipmgr("delete", "vm", "vm-backend").output
    assert "not found" in vipmgr("delete", "vm", "vm-backend", code=1).output
    out = vipmgr("delete", "-f", str(f), code=1).output
    assert "node/gw-a deleted" in out


def test_pinned_resource_version_conflict(vipmgr, tmp_path):
    f = tmp_path / "n.yaml"
    f.write_text(NODES)
    vipmgr("apply", "-f", str(f))
    manifest = yaml.safe_load(vipmgr("get", "node", "gw-a", "-o", "yaml").output)
    vipmgr("label", "node", "gw-a", "zone=a")
    manifest["spec"]["internalIP"] = "198.51.100.99"
    g = tmp_path / "g.yaml"
    g.write_text(yaml.safe_dump(manifest))
    res = vipmgr("apply", "-f", str(g), code=1)
    assert "was changed" in res.output


def test_apply_from_stdin_and_json_output(vipmgr):
    vipmgr("apply", "-f", "-", input=NODES)
    data = json.loads(vipmgr("get", "nodes", "-o", "json").output)
    assert [i["metadata"]["name"] for i in data["items"]] == ["gw-a", "worker-a"]


def test_unknown_kind_lists_known_ones(vipmgr):
    res = vipmgr("get", "pods", code=1)
    assert "egressgateways (egressgateway/egw)" in res.output


def test_unreachable_etcd_one_line_exit_3():
    proc = subprocess.run([sys.executable, "-m", "vipmgr.cli", "get", "egw", "--etcd",
                           "http://127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "127.0.0.1:1" in proc.stderr and "Traceback" not in proc.stderr
