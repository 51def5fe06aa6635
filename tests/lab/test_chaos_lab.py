"""A short chaos run in CI: two minutes of the seeded schedule against the real agents on
the 3-member etcd lab, every checker on; any anomaly fails the test with the full report
(schedule, anomalies, the agents' log lines around each).

Seed 1532's two minutes hold: standby link-down, freeze, crash and etcd partition, an etcd
member partitioned and one killed, the etcd leader killed, 20 % heartbeat loss, an etcd
partition of the active (issue 13 bug 4) and a crash of the active.
"""

from __future__ import annotations

import os

import pytest

from vipmgr.lab.chaos import render, run_chaos

pytestmark = [pytest.mark.netns, pytest.mark.slow]

SEED, MINUTES = 1532, 2.0


def test_short_chaos_finds_no_anomaly():
    report = run_chaos(MINUTES, SEED, name=f"chs{os.getpid() % 1000}")
    text = render(report)
    print(text)
    assert report["episodes"] and report["summary"]["owed_seconds"] > 60, text
    assert not report["instrument_errors"], text
    assert not report["anomalies"], text
