"""--user/--password reach an etcd with authentication enabled (enabled here over gRPC)."""

import asyncio

import aetcd
import aetcd.rpc as rpc
import pytest
from click.testing import CliRunner

from vipmgr.cli.main import cli
from vipmgr.lab.etcd import EtcdServer

pytestmark = pytest.mark.etcd

USER, PASSWORD = "root", "vipmgr-test-secret"


async def enable_auth(server: EtcdServer) -> None:
    client = aetcd.Client(host=server.host, port=server.client_port)
    await client.connect()
    try:
        stub = rpc.AuthStub(client.channel)
        await stub.UserAdd(rpc.AuthUserAddRequest(name=USER, password=PASSWORD))
        await stub.RoleAdd(rpc.AuthRoleAddRequest(name="root"))
        await stub.UserGrantRole(rpc.AuthUserGrantRoleRequest(user=USER, role="root"))
        await stub.AuthEnable(rpc.AuthEnableRequest())
    finally:
        await client.close()


@pytest.fixture(scope="module")
def auth_etcd():
    server = EtcdServer().start()
    asyncio.run(enable_auth(server))
    yield server
    server.destroy()


def test_user_and_password_are_used(auth_etcd):
    runner = CliRunner()
    env = {"VIPMGR_ETCD": auth_etcd.url}
    ok = runner.invoke(cli, ["get", "egw", "--user", USER, "--password", PASSWORD], env=env)
    assert ok.exit_code == 0, ok.output
    assert "No egressgateways found" in ok.output


def test_missing_or_wrong_credentials_say_so_in_one_line(auth_etcd):
    env = {"VIPMGR_ETCD": auth_etcd.url}
    for extra in ([], ["--user", USER, "--password", "wrong"]):
        result = CliRunner().invoke(cli, ["get", "egw", *extra], env=env)
        assert result.exit_code == 2
        assert result.output.count("\n") == 1 and "refused the credentials" in result.output
        assert "--user/--password" in result.output
