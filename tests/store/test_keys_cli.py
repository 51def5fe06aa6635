"""``vipmgr keys status|rotate|roles`` against a real etcd."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from vipmgr.cli.main import cli

pytestmark = pytest.mark.etcd


@pytest.fixture
def keys_cli(etcd_server, etcd_prefix):
    env = {"VIPMGR_ETCD": etcd_server.url, "VIPMGR_ETCD_PREFIX": etcd_prefix}

    def invoke(*args):
        return CliRunner().invoke(cli, ["keys", *args], env=env)
    return invoke


def test_status_rotate_and_the_overlap_guard(keys_cli, etcd_prefix):
    none = keys_cli("status")
    assert none.exit_code == 1 and "no heartbeat key" in none.output
    first = keys_cli("rotate")
    assert first.exit_code == 0 and "created heartbeat key" in first.output
    second = keys_cli("rotate", "--every", "12h")
    assert second.exit_code == 0 and "signs from" in second.output, second.output
    refused = keys_cli("rotate")
    assert refused.exit_code == 1 and "overlap" in refused.output
    assert keys_cli("rotate", "--if-due").output.startswith("not due")
    text = keys_cli("status")
    assert text.exit_code == 0 and f"{etcd_prefix}/keys/heartbeat" in text.output
    assert "accepted" in text.output and "signing" in text.output and "every 12h" in text.output
    doc = json.loads(keys_cli("status", "-o", "json").output)
    assert [k["role"] for k in doc["keys"]] == ["current", "previous"]
    assert "secret" not in json.dumps(doc) and doc["rotateEvery"] == 43200
    bad = keys_cli("rotate", "--every", "soon")
    assert bad.exit_code == 2 and "--every" in bad.output


def test_roles_printout(keys_cli, etcd_prefix):
    out = keys_cli("roles", "--node", "gw-a")
    assert out.exit_code == 0
    assert "etcdctl role add vipmgr-admin" in out.output
    assert f"etcdctl role grant-permission vipmgr-agent-gw-a readwrite " \
           f"{etcd_prefix}/resources/nodes/gw-a" in out.output
