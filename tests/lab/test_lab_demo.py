"""``vipmgr lab demo`` without an agent: a clear refusal before anything is deployed."""

from __future__ import annotations

from click.testing import CliRunner

from vipmgr.cli.lab import lab
from vipmgr.lab import demo


def test_demo_refuses_clearly_without_an_agent(monkeypatch):
    deployed = []
    monkeypatch.setattr(demo, "agent_available", lambda: (False, "No such command 'agent'."))
    monkeypatch.setattr(demo, "deploy", lambda *a, **k: deployed.append(a))
    out = CliRunner().invoke(lab, ["demo"])
    assert out.exit_code == 1
    assert "the demo needs the vipmgr agent" in out.output
    assert "No such command 'agent'" in out.output
    assert deployed == []

