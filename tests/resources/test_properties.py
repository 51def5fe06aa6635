"""Property tests: selector semantics and IPv4/CIDR validation."""

import ipaddress

from hypothesis import given, strategies as st

from vipmgr.resources.net import ipv4_cidr_problem, unicast_ipv4_problem
from vipmgr.resources.selectors import LabelSelector, Requirement, parse_selector_string

keys = st.sampled_from(["app", "tier", "node-role.deckhouse.io/egress", "zone"])
values = st.sampled_from(["", "a", "b", "backend", "x.y-z_1"])
label_sets = st.dictionaries(keys, values, max_size=4)
nonempty_values = values.filter(bool)


@st.composite
def requirements(draw):
    op = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]))
    vals = tuple(sorted(set(draw(st.lists(nonempty_values, min_size=1, max_size=3))))) \
        if op in ("In", "NotIn") else ()
    return Requirement(draw(keys), op, vals)


@st.composite
def selectors(draw):
    ml = draw(st.dictionaries(keys, nonempty_values, max_size=2))
    return LabelSelector(tuple(sorted(ml.items())), tuple(draw(st.lists(requirements(), max_size=3))))


def reference_match(sel: LabelSelector, labels: dict) -> bool:
    for k, v in sel.match_labels:
        if labels.get(k, None) != v:
            return False
    for r in sel.match_expressions:
        has = r.key in labels
        ok = {"Exists": has, "DoesNotExist": not has,
              "In": has and labels.get(r.key) in r.values,
              "NotIn": (not has) or labels.get(r.key) not in r.values}[r.operator]
        if not ok:
            return False
    return True


@given(selectors(), label_sets)
def test_matches_agrees_with_kubernetes_semantics(sel, labels):
    assert sel.matches(labels) == reference_match(sel, labels)


@given(selectors(), label_sets)
def test_string_form_round_trips(sel, labels):
    if sel.empty:
        return
    parsed = parse_selector_string(str(sel))
    assert parsed.matches(labels) == sel.matches(labels)


@given(label_sets)
def test_empty_selector_matches_everything(labels):
    assert LabelSelector().matches(labels)


@given(st.ip_addresses(v=4), st.integers(0, 32))
def test_cidr_canonical_accepted_noncanonical_names_canonical(addr, plen):
    net = ipaddress.IPv4Network(f"{addr}/{plen}", strict=False)
    assert ipv4_cidr_problem(str(net)) is None
    text = f"{addr}/{plen}"
    if text != str(net):
        why = ipv4_cidr_problem(text)
        assert why is not None and repr(str(net)) in why


@given(st.ip_addresses(v=4))
def test_vip_validation_accepts_exactly_unicast_hosts(addr):
    bad = (addr.is_multicast or addr.is_loopback or addr.is_unspecified or addr.is_link_local
           or addr in ipaddress.IPv4Network("240.0.0.0/4"))
    assert (unicast_ipv4_problem(str(addr)) is not None) == bad


@given(st.text(max_size=20))
def test_selector_parser_never_crashes_unexpectedly(text):
    try:
        parse_selector_string(text)
    except ValueError:
        pass
