"""Acceptance: ``bench failover --fault crash --trials 10`` against vipmgr (~45 s, own lab).

p99 outage ≤ 300 ms, no datagram with a wrong source IP, never two nodes
answering ARP for the VIP. keepalived's figures from the same command are in
the README (``--impl keepalived``); tests/lab/test_bench_keepalived.py runs it.
"""

from __future__ import annotations

import json

import pytest

from vipmgr.lab.bench import agent_available, run_failover
from vipmgr.lab.runtime import destroy

pytestmark = [pytest.mark.netns, pytest.mark.slow,
              pytest.mark.skipif(not agent_available()[0], reason="agent not available")]

LAB = "e2e-bench"


def test_vipmgr_crash_failover_p99_within_300ms_no_leak_no_dual_answer():
    destroy(LAB)
    try:
        report = run_failover("vipmgr", "crash", 10, duration=2.0, name=LAB)
    finally:
        destroy(LAB)
    summary = {k: v for k, v in report.items() if k != "per_trial"}
    print("\n" + json.dumps(summary, indent=1))
    assert report["trials"] == 10 and report["not_recovered"] == 0, summary
    assert report["outage_ms"]["p99"] <= 300, summary
    assert report["wrong_source"] == 0, summary
    assert report["dual_answer"] == 0 and report["mac_flip_backs"] == 0, summary
    for trial in report["per_trial"]:
        assert trial["active_after"] not in (None, trial["active_before"]), trial
