"""``vipmgr lab bench failover --impl keepalived`` end to end on namespaces (~15 s).

keepalived's process crash leaves the VIP configured on the crashed node (no
process is left to remove it) while a backup takes over: the ARP prober must
see two nodes answering for the VIP. That is the benchmark's dual-answer
detector proving it can fire, on a real system, not a synthetic log.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_lab_runtime import unique_name

from vipmgr.lab.netns import list_namespaces
from vipmgr.lab.runtime import destroy, state_root

pytestmark = [pytest.mark.netns, pytest.mark.slow]

VIPMGR = str(Path(sys.executable).with_name("vipmgr"))


def test_keepalived_crash_bench_reports_every_figure(request):
    name = unique_name(request.node.nodeid)
    destroy(name)
    try:
        out = subprocess.run([VIPMGR, "lab", "bench", "failover", "--impl", "keepalived",
                              "--fault", "crash", "--trials", "2", "--duration", "2",
                              "--name", name, "--json"],
                             capture_output=True, text=True, timeout=120)
    finally:
        destroy(name)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["command"] == ("vipmgr lab bench failover --fault crash --trials 2 "
                                 "--impl keepalived --duration 2")
    assert (report["impl"], report["fault"], report["trials"]) == ("keepalived", "crash", 2)
    assert report["advert_interval_ms"] == 20
    assert set(report["outage_ms"]) == {"p50", "p99", "max"}
    assert 0 <= report["outage_ms"]["p50"] <= report["outage_ms"]["p99"] <= 1000
    assert report["sent"] == 2 * 2000 and report["not_recovered"] == 0
    assert report["wrong_source"] == 0  # static SNAT on every node: never a wrong source
    assert report["dual_answer"] > 0    # the crashed node still answers ARP for the VIP
    trials = report["per_trial"]
    for trial in trials:
        assert trial["active_before"] in ("gw-a", "gw-b", "gw-c")
        assert trial["active_after"] not in (None, trial["active_before"])
        assert trial["served_by"][0] == trial["active_before"]
        assert trial["received"] + trial["lost"] == trial["sent"]
    assert trials[1]["active_before"] == trials[0]["active_after"]
    # the lab is gone: namespaces and state
    assert not [ns for ns in list_namespaces() if ns.startswith(f"vl-{name}-")]
    assert not (state_root() / name).exists()
