"""The shipped example agent config is valid (a stale example is worse than none)."""

from pathlib import Path

import yaml

from vipmgr.agent.config import parse_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_example_agent_config_parses():
    data = yaml.safe_load((DEPLOY / "agent.example.yaml").read_text())
    config = parse_config(data, environ={})
    assert config.node == "gw-a" and config.require_auth and len(config.probes) == 2
    assert config.etcd.tls and len(config.etcd.endpoints) == 2


def test_systemd_unit_runs_the_agent_with_the_config():
    unit = (DEPLOY / "systemd" / "vipmgr-agent.service").read_text()
    assert "vipmgr agent --config /etc/vipmgr/agent.yaml" in unit
    assert "CAP_NET_ADMIN" in unit and "CAP_NET_RAW" in unit
