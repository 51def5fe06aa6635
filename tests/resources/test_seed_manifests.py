"""The user's manifests (../shared/seed/manifests) are accepted verbatim."""

from pathlib import Path

import pytest

from vipmgr.resources.loader import load_documents, parse_documents
from vipmgr.resources.models import MODE_PRIMARY, MODE_VIP, EgressGateway, EgressGatewayPolicy, VirtualMachine
from vipmgr.resources.errors import Problems
from vipmgr.resources.models import parse_manifest

SEED = Path(__file__).resolve().parents[3] / "shared" / "seed" / "manifests"


def seed_files():
    if not SEED.is_dir():
        pytest.skip(f"seed manifests not found at {SEED}")
    return sorted(SEED.glob("*.yaml"))


def load(path: Path):
    return parse_documents(load_documents(path.read_text(), str(path)))


def test_every_seed_manifest_parses():
    files = seed_files()
    assert len(files) == 3
    for path in files:
        [(_, obj)] = load(path)
        assert obj.name in ("egress-gw", "egress-gw-policy")


def test_primary_ip_gateway_fields():
    [(_, gw)] = load(SEED / "egressgateway-primary-ip.yaml") if SEED.is_dir() else pytest.skip("no seed")
    assert isinstance(gw, EgressGateway)
    assert gw.source_ip.mode == MODE_PRIMARY and gw.source_ip.interface_name == "eth1"
    assert gw.node_selector.matches({"node-role.deckhouse.io/egress": ""})
    assert not gw.node_selector.matches({"other": ""})


def test_vip_gateway_and_policy_fields():
    if not SEED.is_dir():
        pytest.skip("no seed")
    [(_, gw)] = load(SEED / "egressgateway-virtual-ip.yaml")
    assert gw.source_ip.mode == MODE_VIP and gw.source_ip.virtual_ip == "172.18.18.242"
    [(_, pol)] = load(SEED / "egressgatewaypolicy.yaml")
    assert isinstance(pol, EgressGatewayPolicy)
    assert pol.destination_cidrs == ("0.0.0.0/0",) and pol.egress_gateway_name == "egress-gw"
    problems = Problems()
    backend = parse_manifest({"apiVersion": "vipmgr.io/v1alpha1", "kind": "VirtualMachine",
                              "metadata": {"name": "b", "labels": {"app": "backend"}},
                              "spec": {"nodeName": "w", "addresses": ["198.18.1.2"]}}, problems)
    other_ns = parse_manifest({"apiVersion": "vipmgr.io/v1alpha1", "kind": "VirtualMachine",
                               "metadata": {"name": "b", "namespace": "prod",
                                            "labels": {"app": "backend"}},
                               "spec": {"nodeName": "w", "addresses": ["198.18.1.3"]}}, problems)
    assert not problems
    assert isinstance(backend, VirtualMachine)
    assert pol.selects(backend) and not pol.selects(other_ns)
