"""Timer errors name only fields the user wrote, with a value that works (issue: 3 timer
fields set gave 7 errors about fields never written, e.g. "set it below 0ms", "(-880ms)")."""

import re

import pytest

from vipmgr.config.timers import Timers
from vipmgr.resources.errors import ValidationError
from vipmgr.resources.loader import load_documents, parse_documents

GW = """\
apiVersion: network.deckhouse.io/v1alpha1
kind: EgressGateway
metadata: {{name: egress-gw}}
spec:
  nodeSelector: {{node-role.deckhouse.io/egress: ""}}
  sourceIP: {{mode: VirtualIPAddress, virtualIPAddress: {{ip: 192.0.2.100}}}}
  failover:
    timers:
{timers}
"""


def timer_problems(timers: dict) -> list[str]:
    body = "\n".join(f"      {k}: {v}" for k, v in timers.items())
    with pytest.raises(ValidationError) as exc:
        parse_documents(load_documents(GW.format(timers=body), "gw.yaml"))
    return [str(p) for p in exc.value.problems]


def suggested(problem: str) -> str:
    return re.search(r"does not fit: use (\S+) ", problem).group(1)


@pytest.mark.parametrize("timers", [
    {"advertInterval": "1s", "suspectAfter": 3, "challengeWindow": "200ms"},
    {"advertInterval": "100ms", "fenceDeadline": "90ms", "deadmanTimeout": "80ms"},
    {"challengeWindow": "40ms", "etcdTimeout": "30ms", "leaseTTL": 1},
    {"fenceDeadline": "150ms"},
    {"maxClockDrift": 0.3},
])
def test_only_written_fields_are_blamed_with_a_value_that_works(timers):
    found = timer_problems(timers)
    assert found
    for p in found:
        field = re.search(r"spec\.failover\.timers\.(\w+)", p).group(1)
        assert field in timers, p
        assert not re.search(r"\(-\d", p) and "below 0ms" not in p, p
    if len(found) == 1:  # the suggestion, written as printed, is accepted
        fixed = {**timers, re.search(r"timers\.(\w+)", found[0]).group(1): suggested(found[0])}
        body = "\n".join(f"      {k}: {v}" for k, v in fixed.items())
        assert parse_documents(load_documents(GW.format(timers=body), "gw.yaml"))


def test_issue_case_is_one_error_not_seven():
    [p] = timer_problems({"advertInterval": "1s", "suspectAfter": 3, "challengeWindow": "200ms"})
    assert p.startswith("gw.yaml:9: spec.failover.timers.advertInterval: 1s does not fit: use 30ms")


def test_zero_names_the_field_and_the_default():
    [p] = timer_problems({"advertInterval": 0})
    assert "spec.failover.timers.advertInterval: must be greater than zero, e.g. 20ms" in p


def test_every_field_written_blames_as_before():
    """The simulator passes every field: each relation still lands on a field it involves."""
    t = Timers.from_mapping({**Timers().to_mapping(), "deadmanTimeout": "250ms"})
    [(path, message)] = t.problems()
    assert path.endswith(".deadmanTimeout") and "use 200ms" in message
