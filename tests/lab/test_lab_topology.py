"""The lab's topology files: containerlab-valid, parsed as containerlab merges them, safe addresses."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

import pytest
import yaml

from vipmgr.lab.topology import TopologyError, default_topology_path, load, parse

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO.parent / "shared" / "containerlab" / "clab.schema.json"
SEED_MANIFESTS = REPO.parent / "shared" / "seed" / "manifests"
TOPOLOGIES = sorted((REPO / "lab").glob("*.clab.yml"))
ALLOWED = [ipaddress.ip_network(n) for n in
           ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "198.18.0.0/15", "127.0.0.0/8")]
GATEWAYS = ("gw-a", "gw-b", "gw-c")


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema not installed (test dep)")
    if not SCHEMA.is_file():
        pytest.skip(f"containerlab schema not found at {SCHEMA} (../shared is absent)")
    schema = json.loads(SCHEMA.read_text())
    return jsonschema.Draft7Validator(schema)


def test_there_is_a_default_topology():
    assert default_topology_path() in TOPOLOGIES


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.name)
def test_topologies_are_valid_containerlab_files(validator, path):
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert not errors


def test_schema_check_rejects_what_containerlab_rejects(validator):
    """The validator is live: an empty label value (which containerlab refuses) fails it."""
    bad = yaml.safe_load(default_topology_path().read_text())
    bad["topology"]["nodes"]["gw-a"]["labels"] = {"node-role.deckhouse.io/egress": ""}
    assert list(validator.iter_errors(bad))


def test_default_topology_is_the_seed_scenario():
    topo = load(default_topology_path())
    assert topo.name == "egress"
    bridges = {n.name for n in topo.nodes.values() if n.is_bridge}
    assert bridges == {"internal", "public", "uplink"}
    for gw in GATEWAYS:
        node = topo.nodes[gw]
        assert node.labels["vipmgr.io/role"] == "egress"       # from the group
        assert node.sysctls["net.ipv4.ip_forward"] == "1"       # from kinds.linux
        assert node.env["VIPMGR_ETCD"] == "http://198.51.100.2:2379"  # from defaults
        assert ("ip", "route", "add", "default", "via", "192.0.2.1", "dev", "eth1") in node.exec
    assert topo.nodes["vm-backend"].labels["app"] == "backend"
    assert topo.nodes["vm-backend"].labels["vipmgr.io/vm-namespace"] == "default"
    assert topo.nodes["vm-frontend"].labels["app"] == "frontend"
    assert topo.nodes["etcd"].cmd[0] == "etcd" and topo.nodes["etcd"].healthcheck
    links = {(str(l.a), str(l.b)) for l in topo.links}
    assert ("gw-a:eth1", "public:gw-a-eth1") in links
    assert ("worker-a:eth2", "vm-frontend:eth0") in links
    order = topo.start_order()
    assert all(order.index("etcd") < order.index(gw) for gw in GATEWAYS)


def test_topology_addresses_stay_in_documentation_ranges():
    for path in TOPOLOGIES:
        text = path.read_text()
        found = re.findall(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])", text)
        assert found
        for addr in found:
            ip = ipaddress.ip_address(addr)
            assert ip.is_unspecified or any(ip in net for net in ALLOWED), (path.name, addr)


def _topo(nodes, links=(), **top):
    return {"name": "t", "topology": {"nodes": nodes, "links": [{"endpoints": list(l)} for l in links],
                                      **top}}


def test_merge_order_defaults_kinds_groups_node():
    topo = parse(_topo(
        {"n": {"kind": "linux", "group": "g", "env": {"D": "node"}, "labels": {"n": "1"}}},
        defaults={"env": {"A": "defaults", "B": "defaults", "C": "defaults", "D": "defaults"},
                  "cmd": "from-defaults"},
        kinds={"linux": {"env": {"B": "kinds", "C": "kinds", "D": "kinds"}, "cmd": "from-kinds"}},
        groups={"g": {"env": {"C": "group", "D": "group"}, "labels": {"g": "1"}}}))
    node = topo.nodes["n"]
    assert dict(node.env) == {"A": "defaults", "B": "kinds", "C": "group", "D": "node"}
    assert dict(node.labels) == {"g": "1", "n": "1"}
    assert node.cmd == ("from-kinds",)


def test_with_cmds_replaces_or_removes_main_processes():
    topo = load(default_topology_path())
    changed = topo.with_cmds({"gw-a": "sleep 600", "internet": None})
    assert changed.nodes["gw-a"].cmd == ("sleep", "600")
    assert changed.nodes["internet"].cmd == ()
    assert topo.nodes["gw-a"].cmd[:4] == ("vipmgr", "agent", "--node", "gw-a")  # untouched
    with pytest.raises(TopologyError, match="no node"):
        topo.with_cmds({"gw-z": "x"})


def test_the_seed_topology_runs_the_scenario_itself():
    """Agents are the egress nodes' and workers' main processes; etcd's healthy-stage hook
    applies the seed manifests, which exist relative to the topology file."""
    topo = load(default_topology_path())
    for node in (*GATEWAYS, "worker-a", "worker-b"):
        assert topo.nodes[node].cmd[:4] == ("vipmgr", "agent", "--node", node)
        assert topo.nodes[node].wait_for[0].node == "etcd"
    (hook,) = topo.nodes["etcd"].stage_exec
    assert hook.stage == "healthy" and hook.argv[:2] == ("vipmgr", "apply")
    files = [hook.argv[i + 1] for i, a in enumerate(hook.argv) if a == "-f"]
    assert files and all((default_topology_path().parent / f).is_file() for f in files)
    assert not topo.without_stage_exec().nodes["etcd"].stage_exec


def test_stage_exec_forms():
    new = _topo({"a": {"kind": "linux", "healthcheck": {"test": ["CMD", "true"]}, "stages": {
        "healthy": {"exec": [{"command": "echo hi", "phase": "on-enter"}]}}}})
    old = _topo({"a": {"kind": "linux", "healthcheck": {"test": ["CMD", "true"]}, "stages": {
        "healthy": {"exec": {"on-enter": ["echo hi"]}}}}})
    assert parse(new).nodes["a"].stage_exec == parse(old).nodes["a"].stage_exec
    assert parse(new).nodes["a"].stage_exec[0].argv == ("echo", "hi")


@pytest.mark.parametrize("data, message", [
    (_topo({"a": {"kind": "linux", "healthcheck": {"test": ["CMD", "true"]}, "stages": {
        "healthy": {"exec": [{"command": "x", "phase": "on-enter", "target": "host"}]}}}}),
     "target: container"),
    (_topo({"a": {"kind": "linux", "healthcheck": {"test": ["CMD", "true"]}, "stages": {
        "create": {"exec": [{"command": "x", "phase": "on-enter"}]}}}}), "only stage healthy"),
    (_topo({"a": {"kind": "linux", "stages": {
        "healthy": {"exec": [{"command": "x", "phase": "on-enter"}]}}}}), "never becomes healthy"),
    (_topo({"r": {"kind": "nokia_srlinux"}}), "not supported"),
    (_topo({"a": {"kind": "linux"}}, [("a:eth0", "b:eth0")]), "unknown node"),
    (_topo({"a": {"kind": "linux"}, "b": {"kind": "linux"}},
           [("a:eth0", "b:eth0"), ("a:eth0", "b:eth1")]), "used by two links"),
    (_topo({"a": {"kind": "linux"}, "b": {"kind": "linux"}},
           [("a:eth0", "b:an-interface-name-too-long")]), "1-15 characters"),
    (_topo({"a": {"kind": "linux"}, "b": {"kind": "linux"}}, [("a:eth0", "beth0")]), "node:interface"),
    (_topo({"a": {"kind": "linux", "stages": {"create": {"wait-for": [{"node": "b"}]}}},
            "b": {"kind": "linux", "stages": {"create": {"wait-for": [{"node": "a"}]}}}}), "cycle"),
    (_topo({"a": {"kind": "linux", "stages": {"create": {"wait-for": [
        {"node": "b", "stage": "healthy"}]}}}, "b": {"kind": "linux"}}), "no healthcheck"),
    (_topo({"br": {"kind": "bridge", "cmd": "sleep 1"}}), "a bridge has no cmd"),
    (_topo({"a": {"kind": "linux", "cmd": "unbalanced 'quote"}}), "cmd"),
    ({"name": "t"}, "needs 'name' and 'topology'"),
    ({"name": "bad name", "topology": {"nodes": {"a": {"kind": "linux"}}}}, "lab name"),
])
def test_bad_topologies_are_refused_with_a_reason(data, message):
    with pytest.raises(TopologyError, match=message):
        parse(data)


def test_seed_manifests_are_verbatim_but_for_the_lab_vip():
    if not SEED_MANIFESTS.is_dir():
        pytest.skip(f"seed manifests not found at {SEED_MANIFESTS}")
    ours = REPO / "lab" / "manifests"
    for seed in SEED_MANIFESTS.glob("*.yaml"):
        expected = seed.read_text().replace("172.18.18.242", "192.0.2.100")
        assert (ours / seed.name).read_text() == expected, seed.name


def test_lab_manifests_are_accepted_by_the_resource_loader():
    """Each file on its own: the two EgressGateway files are alternatives with one name."""
    loader = pytest.importorskip("vipmgr.resources.loader")
    kinds: dict[str, set[str]] = {}
    for path in sorted((REPO / "lab" / "manifests").glob("*.yaml")):
        docs = loader.load_documents(path.read_text(), str(path))
        for _doc, obj in loader.parse_documents(docs):
            kinds.setdefault(type(obj).__name__, set()).add(obj.name)
    assert kinds["Node"] == {*GATEWAYS, "worker-a", "worker-b"}
    assert kinds["VirtualMachine"] == {"vm-backend", "vm-frontend"}
    assert kinds["EgressGateway"] == {"egress-gw"}
    assert kinds["EgressGatewayPolicy"] == {"egress-gw-policy"}
