"""Bad input is rejected with the field path and the fix; good input round-trips."""


import pytest

from vipmgr.resources.errors import ValidationError
from vipmgr.resources.loader import load_documents, parse_documents

GW = """\
apiVersion: network.deckhouse.io/v1alpha1
kind: EgressGateway
metadata:
  name: {name}
spec:
  nodeSelector:
    node-role.deckhouse.io/egress: ""
  sourceIP:
{source}
"""
VIP = "    mode: VirtualIPAddress\n    virtualIPAddress:\n      ip: {ip}\n"
PRIMARY = "    mode: PrimaryIPFromEgressGatewayNodeInterface\n    primaryIPFromEgressGatewayNodeInterface:\n      interfaceName: {ifname}\n"
POLICY = """\
apiVersion: network.deckhouse.io/v1alpha1
kind: EgressGatewayPolicy
metadata:
  name: p
spec:
  destinationCIDRs: {cidrs}
  egressGatewayName: egress-gw
  selectors: {selectors}
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ValidationError) as exc:
        parse_documents(load_documents(text, "f.yaml"))
    return [str(p) for p in exc.value.problems]


def ok(text: str):
    return [o for _, o in parse_documents(load_documents(text, "f.yaml"))]


def gw(name="egress-gw", source=None):
    return GW.format(name=name, source=source or VIP.format(ip="192.0.2.100"))


def test_valid_gateway_parses():
    [g] = ok(gw())
    assert g.source_ip.virtual_ip == "192.0.2.100"


@pytest.mark.parametrize("snippet, path, hint", [
    (gw().replace("nodeSelector", "nodeSelecter"), "spec.nodeSelecter", "unknown field"),
    (gw().replace("v1alpha1", "v1"), "apiVersion", "network.deckhouse.io/v1alpha1"),
    (gw().replace("EgressGateway", "EgressGW"), "kind", "must be one of"),
    (gw(name="Egress_GW"), "metadata.name", "egress-gw"),
    (gw(source=VIP.format(ip="224.0.0.1")), "virtualIPAddress.ip", "multicast"),
    (gw(source=VIP.format(ip="192.0.2.100/32")), "virtualIPAddress.ip", "bare address"),
    (gw(source=VIP.format(ip="127.0.0.1")), "virtualIPAddress.ip", "loopback"),
    (gw(source=VIP.format(ip="not-an-ip")), "virtualIPAddress.ip", "not an IPv4"),
    (gw(source=PRIMARY.format(ifname="eth1/2")), "interfaceName", "'/'"),
    (gw(source=PRIMARY.format(ifname="averyveryverylongname")), "interfaceName", "15 bytes"),
    (gw(source="    mode: VirtualIPAddress\n"), "spec.sourceIP.virtualIPAddress", "is required"),
    (gw(source=VIP.format(ip="192.0.2.9") + "    primaryIPFromEgressGatewayNodeInterface:\n      interfaceName: eth1\n"),
     "spec.sourceIP.primaryIPFromEgressGatewayNodeInterface", "does not go with mode"),
    (gw(source="    mode: Floating\n"), "spec.sourceIP.mode", "must be"),
    (gw().replace('    node-role.deckhouse.io/egress: ""\n', "    {}\n").replace("nodeSelector:\n    {}", "nodeSelector: {}"),
     "spec.nodeSelector", "every node"),
    (POLICY.format(cidrs="[203.0.113.1/24]", selectors="[{podSelector: {matchLabels: {app: a}}}]"),
     "destinationCIDRs[0]", "203.0.113.0/24"),
    (POLICY.format(cidrs="[203.0.113.7]", selectors="[{podSelector: {matchLabels: {app: a}}}]"),
     "destinationCIDRs[0]", "203.0.113.7/32"),
    (POLICY.format(cidrs="['2001:db8::/32']", selectors="[{podSelector: {matchLabels: {app: a}}}]"),
     "destinationCIDRs[0]", "IPv6"),
    (POLICY.format(cidrs="[0.0.0.0/0]", selectors="[]"), "spec.selectors", "empty"),
    (POLICY.format(cidrs="[0.0.0.0/0]", selectors="[{podSelector: {}}]"),
     "selectors[0].podSelector", "every VM"),
    (POLICY.format(cidrs="[0.0.0.0/0]", selectors="[{podSelector: {matchExpressions: [{key: app, operator: Has}]}}]"),
     "matchExpressions[0].operator", "In, NotIn, Exists, DoesNotExist"),
])
def test_rejections_name_field_and_fix(snippet, path, hint):
    found = problems_of(snippet)
    assert any(path in p and hint in p for p in found), found


def test_problems_carry_file_and_line():
    text = gw(source=VIP.format(ip="224.0.0.1"))
    [p] = problems_of(text)
    line = text.splitlines().index("      ip: 224.0.0.1") + 1
    assert p.startswith(f"f.yaml:{line}: spec.sourceIP.virtualIPAddress.ip")


def test_yaml_syntax_error_names_line_and_column():
    [p] = problems_of("kind: EgressGateway\nmetadata: {name: [x\n")
    assert p.startswith("f.yaml:3:1") or p.startswith("f.yaml:2:")


def test_duplicate_key_is_an_error():
    found = problems_of(gw().replace("metadata:\n  name: egress-gw", "metadata:\n  name: egress-gw\n  name: other"))
    assert any("metadata.name" in p and "twice" in p for p in found)


def test_duplicate_names_in_one_file():
    found = problems_of(gw() + "---\n" + gw(source=VIP.format(ip="192.0.2.101")))
    assert any("appears twice" in p for p in found)


def test_two_gateways_same_vip():
    found = problems_of(gw(name="a") + "---\n" + gw(name="b"))
    assert any("already the virtual IP of gateway 'a'" in p for p in found)


def test_two_gateways_may_share_a_vrid():
    """A heartbeat carries every gateway of a node, each record named by its gateway
    (docs/wire.md): VRIDs need not differ, so hundreds of gateways fit one interface."""
    from vipmgr.resources.vrid import derived_vrid
    names = {}
    for i in range(2000):
        v = derived_vrid(f"gw-{i}")
        if v in names:
            a, b = names[v], f"gw-{i}"
            break
        names[v] = f"gw-{i}"
    text = gw(name=a, source=VIP.format(ip="192.0.2.1")) + "---\n" + gw(name=b, source=VIP.format(ip="192.0.2.2"))
    assert len(ok(text)) == 2


def test_failover_extension_and_timer_relations():
    text = gw() + "  failover:\n    onEtcdLoss: vrrp\n    preempt: true\n    preemptDelay: 2s\n    priorities: {gw-a: 200}\n"
    [g] = ok(text)
    assert g.failover.on_etcd_loss == "vrrp" and g.failover.preempt and g.failover.preempt_delay == 2.0
    assert g.failover.priorities == {"gw-a": 200}
    bad = gw() + "  failover:\n    timers:\n      deadmanTimeout: 5s\n"
    assert any("spec.failover.timers.deadmanTimeout" in p for p in problems_of(bad))
    bad = gw() + "  failover:\n    onEtcdLoss: panic\n"
    assert any("spec.failover.onEtcdLoss" in p and "'hold'" in p for p in problems_of(bad))
