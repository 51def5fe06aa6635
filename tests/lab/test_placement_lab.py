"""Issue 11 in the real lab: 12 VirtualIPAddress gateways on the seed's 3 egress nodes,
real agents, etcd, kernel and nft, through `vipmgr lab bench placement`'s steps (batch
add, delete, add one by one, crash and recovery, freeze and thaw, cordon and uncordon,
label off and on) and one rebalance move under the stream: after every step no eligible
node serves more than ceil(G/N) gateways, and the move leaks nothing.
"""

from __future__ import annotations

import json
import os

import pytest

from vipmgr.lab.placement import run_placement, step_line

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def test_twelve_gateways_stay_spread_through_every_step():
    report = run_placement(12, hold_down=2.0, trials=1, name=f"plc{os.getpid() % 1000}")
    text = "\n".join(step_line(s) for s in report["steps"]) + "\n" \
        + json.dumps(report["rebalance"], default=str)
    print(text)
    assert len(report["steps"]) == 11 + 1, text
    for step in report["steps"]:
        assert step["seconds"] is not None, f"{step['step']} never settled\n{text}"
        assert step["within_bound"], f"{step['step']}: above ceil(G/N)\n{text}"
    move = report["rebalance"]
    assert move["trials"] == 1 and move["not_recovered"] == 0, text
    assert move["wrong_source"] == 0 and move["dual_answer"] == 0, text
