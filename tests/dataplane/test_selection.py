"""The selection index answers exactly what matching every policy against every VM would,
after any sequence of changes (hypothesis against the naive definition)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vipmgr.dataplane.selection import SelectionIndex
from vipmgr.resources.errors import Problems
from vipmgr.resources.loader import parse_manifest

KEYS = ("app", "tier", "env")
VALUES = ("a", "b", "c")


def vm(name: str, labels: dict, node: str, ip: str, namespace: str = "default"):
    problems = Problems()
    out = parse_manifest({"apiVersion": "vipmgr.io/v1alpha1", "kind": "VirtualMachine",
                          "metadata": {"name": name, "namespace": namespace, "labels": labels},
                          "spec": {"nodeName": node, "addresses": [ip]}}, problems)
    assert not problems, problems
    return out


def policy(name: str, selectors: list[dict]):
    problems = Problems()
    out = parse_manifest({"apiVersion": "network.deckhouse.io/v1alpha1",
                          "kind": "EgressGatewayPolicy", "metadata": {"name": name},
                          "spec": {"destinationCIDRs": ["203.0.113.0/24"],
                                   "egressGatewayName": "egw",
                                   "selectors": [{"podSelector": s} for s in selectors]}},
                         problems)
    assert not problems, problems
    return out


labels = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=3)
requirement = st.one_of(
    st.builds(lambda k, vs: {"key": k, "operator": "In", "values": sorted(set(vs))},
              st.sampled_from(KEYS), st.lists(st.sampled_from(VALUES), min_size=1, max_size=2)),
    st.builds(lambda k, vs: {"key": k, "operator": "NotIn", "values": sorted(set(vs))},
              st.sampled_from(KEYS), st.lists(st.sampled_from(VALUES), min_size=1, max_size=2)),
    st.builds(lambda k: {"key": k, "operator": "Exists"}, st.sampled_from(KEYS)),
    st.builds(lambda k: {"key": k, "operator": "DoesNotExist"}, st.sampled_from(KEYS)),
)
selector = st.builds(
    lambda ml, me: {k: v for k, v in (("matchLabels", ml), ("matchExpressions", me)) if v},
    st.one_of(st.just({}), labels), st.lists(requirement, max_size=2)).filter(bool)
ops = st.lists(st.one_of(
    st.tuples(st.just("vm"), st.integers(0, 7), labels, st.sampled_from(("w1", "w2"))),
    st.tuples(st.just("rm-vm"), st.integers(0, 7)),
    st.tuples(st.just("pol"), st.integers(0, 4), st.lists(selector, min_size=1, max_size=2)),
    st.tuples(st.just("rm-pol"), st.integers(0, 4)),
), max_size=40)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_index_matches_the_naive_selection_after_every_change(script):
    index = SelectionIndex("w1")
    vms, pols = {}, {}
    for op in script:
        if op[0] == "vm":
            v = vm(f"vm{op[1]}", op[2], op[3], f"198.18.0.{op[1] + 1}")
            vms[v.key_name] = v
            index.put_vm(v)
        elif op[0] == "rm-vm":
            vms.pop(f"default/vm{op[1]}", None)
            index.remove_vm(f"default/vm{op[1]}")
        elif op[0] == "pol":
            p = policy(f"p{op[1]}", op[2])
            pols[p.name] = p
            index.put_policy(p)
        else:
            pols.pop(f"p{op[1]}", None)
            index.remove_policy(f"p{op[1]}")
        assert set(index.policies) == set(pols)
        for name, p in pols.items():
            want = sorted((v for v in vms.values() if p.selects(v)), key=lambda v: v.key_name)
            assert index.selected(name) == want, (name, p.selectors)
            share = index.share(name)
            assert share.sources == {ip for v in want for ip in v.addresses}
            assert share.local == {ip for v in want if v.node_name == "w1" for ip in v.addresses}
            assert share.remote == tuple(sorted((ip, v.node_name) for v in want
                                                if v.node_name != "w1" for ip in v.addresses))
        assert index.addresses() == {ip for v in vms.values() for ip in v.addresses}


def test_a_vm_change_checks_only_the_policies_anchored_on_its_labels():
    """The point of the index: 1,000 policies, a VM change evaluates a handful of them."""
    index = SelectionIndex.of("w1", [policy(f"p{i}", [{"matchLabels": {"app": f"a{i}"}}])
                                     for i in range(1000)], [])
    calls = []
    for p in index.policies.values():
        original = p.selects
        object.__setattr__(p, "selects", lambda v, _o=original: calls.append(1) or _o(v))
    index.put_vm(vm("x", {"app": "a7"}, "w1", "198.18.0.1"))
    assert len(calls) == 1 and [v.name for v in index.selected("p7")] == ["x"]


def test_each_kind_of_anchor_finds_its_vms_whichever_comes_first():
    sels = {"in": [{"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "b"]}]}],
            "exists": [{"matchExpressions": [{"key": "tier", "operator": "Exists"}]}],
            "none": [{"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}]}
    vms = [vm("x", {"app": "b"}, "w1", "198.18.0.1"), vm("y", {"tier": "c", "env": "a"}, "w2",
                                                        "198.18.0.2")]
    want = {"in": ["x"], "exists": ["y"], "none": ["x"]}
    for policies_first in (True, False):
        index = SelectionIndex("w1")
        steps = [lambda: [index.put_policy(policy(n, s)) for n, s in sels.items()],
                 lambda: [index.put_vm(v) for v in vms]]
        for step in steps if policies_first else steps[::-1]:
            step()
        assert {n: [v.name for v in index.selected(n)] for n in sels} == want
