"""What passes the schema but breaks the network: the first table of the issue, row by row."""

import pytest

from vipmgr.resources.crosscheck import check_objects
from vipmgr.resources.errors import Problems
from vipmgr.resources.loader import load_documents, parse_documents, where_in
from vipmgr.resources.models import parse_manifest

INVENTORY = """\
apiVersion: vipmgr.io/v1alpha1
kind: Node
metadata: {name: gw-a, labels: {node-role.deckhouse.io/egress: ""}}
spec:
  internalIP: 198.51.100.11
  addresses: {eth0: 198.51.100.11, eth1: 192.0.2.11}
  subnets: {eth0: 198.51.100.0/24, eth1: 192.0.2.0/24}
  routers: [192.0.2.1]
---
apiVersion: vipmgr.io/v1alpha1
kind: Node
metadata: {name: gw-b, labels: {node-role.deckhouse.io/egress: ""}}
spec:
  internalIP: 198.51.100.12
  addresses: {eth0: 198.51.100.12, eth1: 192.0.2.12}
  subnets: {eth0: 198.51.100.0/24, eth1: 192.0.2.0/24}
---
apiVersion: vipmgr.io/v1alpha1
kind: Node
metadata: {name: worker-a}
spec: {internalIP: 198.51.100.21}
---
apiVersion: vipmgr.io/v1alpha1
kind: VirtualMachine
metadata: {name: vm-backend, labels: {app: backend}}
spec: {nodeName: worker-a, addresses: [198.18.1.2]}
"""

GW = """\
apiVersion: network.deckhouse.io/v1alpha1
kind: EgressGateway
metadata: {{name: {name}}}
spec:
  nodeSelector: {{node-role.deckhouse.io/egress: ""}}
  sourceIP:
    mode: VirtualIPAddress
    virtualIPAddress: {{ip: {ip}}}
"""
PRIMARY_GW = """\
apiVersion: network.deckhouse.io/v1alpha1
kind: EgressGateway
metadata: {name: egress-gw}
spec:
  nodeSelector: {node-role.deckhouse.io/egress: ""}
  sourceIP:
    mode: PrimaryIPFromEgressGatewayNodeInterface
    primaryIPFromEgressGatewayNodeInterface: {interfaceName: eth9}
"""
POLICY = """\
apiVersion: network.deckhouse.io/v1alpha1
kind: EgressGatewayPolicy
metadata: {{name: {name}}}
spec:
  destinationCIDRs: [{cidr}]
  egressGatewayName: {gw}
  selectors: [{{podSelector: {{matchLabels: {{app: {app}}}}}}}]
"""


def objects(text: str, source: str = "f.yaml"):
    return parse_documents(load_documents(text, source))


def check(new_text: str, stored_text: str = INVENTORY, reserved=None):
    """Findings for applying ``new_text`` (file new.yaml) onto a store holding ``stored_text``."""
    stored = [parse_manifest(d.data, Problems()) for d in load_documents(stored_text, "s.yaml")]
    new = objects(new_text, "new.yaml")
    found = check_objects([o for _, o in new], stored, where_in(new), reserved)
    return [str(p) for p in found.errors], [str(p) for p in found.warnings]


def gw(ip: str, name: str = "egress-gw") -> str:
    return GW.format(name=name, ip=ip)


@pytest.mark.parametrize("ip, hint", [
    ("192.0.2.11", "is the address of Node gw-a on eth1 (stored)"),   # gw-a's own address
    ("192.0.2.1", "is a router of Node gw-a (stored)"),                # every gateway's default route
    ("198.18.1.2", "is an address of VirtualMachine default/vm-backend (stored)"),
    ("192.0.2.0", "is the network address of 192.0.2.0/24"),
    ("192.0.2.255", "is the broadcast address of 192.0.2.0/24"),
    ("203.0.113.50", "is in no subnet of the gateway's nodes (192.0.2.0/24, 198.51.100.0/24)"),
])
def test_vip_that_is_someone_elses_address_is_an_error(ip, hint):
    errors, _ = check(gw(ip))
    assert any(e.startswith("new.yaml:8: spec.sourceIP.virtualIPAddress.ip") and hint in e
               for e in errors), errors
    assert any("e.g. 192.0.2.254 is free" in e for e in errors), errors  # a concrete fix


def test_vip_that_is_etcds_address_is_an_error():
    from vipmgr.cli.resources import etcd_addresses
    from vipmgr.store.client import EtcdSettings
    reserved = etcd_addresses(EtcdSettings.from_options("http://192.0.2.2:2379,etcd.example:2379"))
    assert reserved == {"192.0.2.2": "the address of etcd (http://192.0.2.2:2379)"}
    errors, _ = check(gw("192.0.2.2"), reserved=reserved)
    assert any("192.0.2.2 is the address of etcd" in e for e in errors), errors


def test_a_free_vip_in_the_subnet_passes_without_warnings():
    errors, warnings = check(gw("192.0.2.100") + "---\n"
                             + POLICY.format(name="p", cidr="0.0.0.0/0", gw="egress-gw", app="backend"))
    assert errors == [] and warnings == []


def test_node_taking_a_stored_vip_is_a_warning():
    """The gateway is what must change; an agent registering its node is never refused."""
    stored = INVENTORY + "---\n" + gw("192.0.2.100")
    node = INVENTORY.split("---\n")[2].replace("198.51.100.21", "192.0.2.100")
    errors, warnings = check(node, stored)
    assert errors == []
    assert any("spec.internalIP" in w and "virtual IP of gateway 'egress-gw' (stored)" in w
               for w in warnings), warnings


def test_unrelated_apply_is_not_blamed_for_stored_conflicts():
    stored = INVENTORY + "---\n" + gw("192.0.2.11")  # stored before the checks existed
    vm = INVENTORY.split("---\n")[3].replace("vm-backend", "vm-2").replace("198.18.1.2", "198.18.1.3")
    assert check(vm, stored) == ([], [])


def test_vm_selected_by_two_gateways_for_overlapping_destinations_is_an_error():
    stored = INVENTORY + "---\n" + gw("192.0.2.100", "gw-one") + "---\n" + gw("192.0.2.101", "gw-two") \
        + "---\n" + POLICY.format(name="p-one", cidr="0.0.0.0/0", gw="gw-one", app="backend")
    errors, _ = check(POLICY.format(name="p-two", cidr="203.0.113.0/24", gw="gw-two", app="backend"),
                      stored)
    [e] = errors
    assert e.startswith("new.yaml:") and "spec.selectors" in e
    assert "default/vm-backend" in e and "'p-one' (gateway gw-one)" in e and "'p-two' (gateway gw-two)" in e
    assert "0.0.0.0/0 and 203.0.113.0/24" in e
    # disjoint destinations, or two policies of one gateway, are fine
    assert check(POLICY.format(name="p-two", cidr="203.0.113.0/24", gw="gw-two", app="backend"),
                 stored.replace("0.0.0.0/0", "198.51.100.0/24"))[0] == []
    assert check(POLICY.format(name="p-two", cidr="203.0.113.0/24", gw="gw-one", app="backend"),
                 stored)[0] == []


def test_vm_relabelled_into_two_gateways_is_the_error():
    stored = INVENTORY + "---\n" + gw("192.0.2.100", "gw-one") + "---\n" + gw("192.0.2.101", "gw-two") \
        + "---\n" + POLICY.format(name="p-one", cidr="0.0.0.0/0", gw="gw-one", app="backend") \
        + "---\n" + POLICY.format(name="p-two", cidr="0.0.0.0/0", gw="gw-two", app="db")
    vm = INVENTORY.split("---\n")[3].replace("{app: backend}", "{app: backend}").replace(
        "metadata: {name: vm-backend, labels: {app: backend}}",
        "metadata: {name: vm-new, labels: {app: db}}").replace("198.18.1.2", "198.18.1.9")
    assert check(vm, stored)[0] == []
    stored = stored.replace("app: db", "tier: db").replace("{app: db}", "{tier: db}")
    vm2 = vm.replace("{app: db}", "{app: backend, tier: db}")
    [e] = check(vm2, stored)[0]
    assert "metadata.labels" in e and "VirtualMachine default/vm-new" in e and "'p-one'" in e


@pytest.mark.parametrize("text, path, hint", [
    (POLICY.format(name="p", cidr="0.0.0.0/0", gw="egress-gx", app="backend"),
     "spec.egressGatewayName", "gateway 'egress-gx' does not exist"),
    (POLICY.format(name="p", cidr="0.0.0.0/0", gw="egress-gw", app="backnd"),
     "spec.selectors", "select no VirtualMachine"),
    (gw("192.0.2.100").replace("node-role.deckhouse.io/egress", "node-role/egres"),
     "spec.nodeSelector", "matches no Node (node-role/egres=)"),
    (INVENTORY.split("---\n")[3].replace("vm-backend", "vm-2").replace("198.18.1.2", "198.18.1.3")
     .replace("worker-a", "worker-z"), "spec.nodeName", "Node 'worker-z' does not exist"),
    (INVENTORY.split("---\n")[3].replace("vm-backend", "vm-2"),
     "spec.addresses[0]", "198.18.1.2 is also an address of VirtualMachine default/vm-backend (stored)"),
    (INVENTORY.split("---\n")[2].replace("worker-a", "worker-b").replace("198.51.100.21", "198.51.100.11"),
     "spec.internalIP", "198.51.100.11 is also the address of Node gw-a on eth0 (stored)"),
])
def test_references_and_duplicates_are_warnings(text, path, hint):
    errors, warnings = check(text + ("---\n" + gw("192.0.2.100") if "Policy" in text else ""))
    assert errors == []
    assert any(path in w and hint in w and w.startswith("new.yaml:") for w in warnings), warnings


def test_primary_ip_interface_no_node_has_is_an_error():
    errors, _ = check(PRIMARY_GW)
    [e] = errors
    assert e.startswith("new.yaml:8: spec.sourceIP.primaryIPFromEgressGatewayNodeInterface.interfaceName")
    assert "none of the gateway's nodes (gw-a, gw-b) has an IPv4 address on eth9" in e
    assert "eth0, eth1" in e
    assert check(PRIMARY_GW.replace("eth9", "eth1")) == ([], [])


def test_in_file_checks_need_no_store():
    """The same rules hold inside one file (parse_documents), errors only."""
    with pytest.raises(Exception) as exc:
        objects(INVENTORY + "---\n" + gw("192.0.2.11"))
    assert "is the address of Node gw-a on eth1 (f.yaml:6)" in str(exc.value)
