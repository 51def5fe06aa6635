"""Fuzzing every parser path users feed: `apply -f` (files and stdin) and the agent config.

Random bytes, random YAML, manifests with random subtrees, deep nesting and huge scalars:
each run ends in output and exit 0/1, never a traceback. Each run's time is measured and
the maximum printed (a figure, not an assertion: the machine is shared).
"""

from __future__ import annotations

import copy
import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vipmgr.agent.config import TOP_FIELDS, load_config
from vipmgr.config.errors import ConfigError

pytestmark = pytest.mark.etcd
FUZZ = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SLOWEST: dict[str, float] = {}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
    st.text(max_size=40), st.sampled_from(["192.0.2.100", "0.0.0.0/0", "eth1", "2001-13-45",
                                           "20ms", "-1s", "VirtualIPAddress", "default"]),
    st.integers(0, 300_000).map(lambda n: "x" * n))  # huge scalars
trees = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=12), st.integers(), st.booleans()), inner,
                    max_size=4)),
    max_leaves=30)
deep = st.integers(1, 3000).map(lambda n: "[" * n + "]" * n)

MANIFESTS = [yaml.safe_load(t) for t in (
    """{apiVersion: network.deckhouse.io/v1alpha1, kind: EgressGateway, metadata: {name: gw},
        spec: {nodeSelector: {role: egress}, sourceIP: {mode: VirtualIPAddress,
        virtualIPAddress: {ip: 192.0.2.100}}, failover: {timers: {advertInterval: 20ms}}}}""",
    """{apiVersion: network.deckhouse.io/v1alpha1, kind: EgressGatewayPolicy, metadata: {name: p},
        spec: {destinationCIDRs: [0.0.0.0/0], egressGatewayName: gw,
        selectors: [{podSelector: {matchLabels: {app: a}}}]}}""",
    """{apiVersion: vipmgr.io/v1alpha1, kind: Node, metadata: {name: gw-a, labels: {role: egress}},
        spec: {internalIP: 198.51.100.11, addresses: {eth1: 192.0.2.11}, subnets: {eth1: 192.0.2.0/24},
        routers: [192.0.2.1]}}""",
    """{apiVersion: vipmgr.io/v1alpha1, kind: VirtualMachine, metadata: {name: vm, labels: {app: a}},
        spec: {nodeName: gw-a, addresses: [198.18.1.2]}}""",
)]


def paths(tree, prefix=()):
    yield prefix
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from paths(v, prefix + (i,))


@st.composite
def mutated_manifests(draw):
    """A valid manifest with one subtree replaced: gets past the kind check into validation."""
    doc = copy.deepcopy(draw(st.sampled_from(MANIFESTS)))
    where = draw(st.sampled_from([p for p in paths(doc) if p]))
    parent = doc
    for step in where[:-1]:
        parent = parent[step]
    parent[where[-1]] = draw(trees)
    return doc


def dump(data) -> bytes:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False).encode()


yaml_inputs = st.one_of(trees.map(dump), mutated_manifests().map(dump), deep.map(str.encode),
                        st.lists(mutated_manifests(), min_size=1, max_size=3).map(
                            lambda docs: yaml.safe_dump_all(docs, sort_keys=False).encode()))
any_input = st.one_of(st.binary(max_size=2000), yaml_inputs)


def timed(name: str, fn):
    start = time.perf_counter()
    result = fn()
    SLOWEST[name] = max(SLOWEST.get(name, 0.0), time.perf_counter() - start)
    return result


def assert_clean(result):
    assert result.exit_code in (0, 1), (result.exit_code, result.output[-2000:])
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert "Traceback" not in result.output


@FUZZ
@given(data=any_input)
def test_apply_file_never_tracebacks(vipmgr, tmp_path_factory, data):
    f = tmp_path_factory.mktemp("fuzz") / "in.yaml"
    f.write_bytes(data)
    assert_clean(timed("apply -f FILE --dry-run", lambda: vipmgr("apply", "-f", str(f), "--dry-run",
                                                                 code=None)))


@FUZZ
@given(data=yaml_inputs)
def test_apply_stdin_never_tracebacks(vipmgr, data):
    result = timed("apply -f - --dry-run", lambda: vipmgr(
        "apply", "-f", "-", "--dry-run", input=data.decode("utf-8", "replace"), code=None))
    assert_clean(result)


configs = st.one_of(
    st.binary(max_size=2000),
    yaml_inputs,
    st.dictionaries(st.sampled_from(TOP_FIELDS), trees, max_size=6).map(
        lambda d: dump({"node": "gw-a", **d})))


@FUZZ
@given(data=configs)
def test_agent_config_never_tracebacks(tmp_path_factory, data):
    """What `vipmgr agent --config` calls: a config, or ConfigError (one line per field)."""
    f = tmp_path_factory.mktemp("fuzz") / "agent.yaml"
    f.write_bytes(data)

    def load():
        try:
            load_config(str(f), environ={})
        except ConfigError as exc:
            assert exc.problems and all(isinstance(p, str) and isinstance(m, str)
                                        for p, m in exc.problems)
    timed("agent config", load)


def test_zz_report_slowest_run(capsys):
    with capsys.disabled():
        for name, seconds in sorted(SLOWEST.items()):
            print(f"\nfuzz: slowest {name}: {seconds * 1000:.0f} ms")
