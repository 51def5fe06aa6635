"""``vipmgr dataplane show/flush`` on a namespace that holds a gateway."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from dpworld import VIP, plan_for

from vipmgr.cli.main import cli
from vipmgr.dataplane.reconcile import Dataplane

pytestmark = pytest.mark.netns


def test_show_then_flush_leaves_nothing(world):
    ga = world["ga"]
    with Dataplane(ga.name, 60) as dp:
        dp.reconcile(plan_for("ga", {"egw": "ga"}), arm=True)
    runner = CliRunner()
    out = runner.invoke(cli, ["dataplane", "show", "--netns", ga.name])
    assert out.exit_code == 0 and f"snat ip to {VIP}" in out.output
    assert f"address {VIP}/32 dev eth1" in out.output
    out = runner.invoke(cli, ["dataplane", "flush", "--netns", ga.name])
    assert out.exit_code == 0 and "nft: delete table inet vipmgr" in out.output
    assert "vipmgr" not in ga.run(["nft", "list", "tables"]).stdout
    assert VIP not in ga.ip("addr").stdout
    out = runner.invoke(cli, ["dataplane", "show", "--netns", ga.name])
    assert "nothing programmed by vipmgr" in out.output
    out = runner.invoke(cli, ["dataplane", "show", "--netns", "vipmgr-no-such-ns"])
    assert out.exit_code == 1 and "does not exist" in out.output
