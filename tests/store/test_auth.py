"""etcd with authentication enabled (here over gRPC): --user/--password reach it, and the
agent role of vipmgr.store.roles is refused what is not the agent's to write."""

import asyncio
import time

import aetcd
import aetcd.exceptions
import aetcd.rpc as rpc
import pytest
from click.testing import CliRunner

from vipmgr.agent.config import AgentConfig
from vipmgr.agent.keys import HeartbeatKeys
from vipmgr.cli.main import cli
from vipmgr.core.messages import OK, Acquire, GrantLease, Release
from vipmgr.lab.etcd import EtcdServer
from vipmgr.store.authority import AuthorityExecutor
from vipmgr.store.client import EtcdSettings, connect
from vipmgr.store.keys import ensure_keys, permission_denied, read_keys, rotate_keys
from vipmgr.store.roles import agent_role, agent_role_name, apply_roles, etcdctl_script, roles_for
from vipmgr.wire.codec import Encoder
from vipmgr.wire.receiver import Receiver

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
        assert result.exit_code == 3
        assert result.output.count("\n") == 1 and "refused the credentials" in result.output
        assert "--user/--password" in result.output


# --- least privilege: the agent role (vipmgr.store.roles) -----------------------------------

AGENT_PASSWORD = "agent-test-secret"
PREFIX = "/vipmgr"


def settings(server, user=USER, password=PASSWORD):
    return EtcdSettings(endpoints=(server.url,), user=user, password=password)


@pytest.fixture(scope="module")
def agent_etcd(auth_etcd):
    """Roles for gw-a and gw-b applied by the admin; a user for gw-a; one gateway stored."""
    async def setup():
        root = await connect(settings(auth_etcd))
        try:
            await apply_roles(root, roles_for(PREFIX, ["gw-a", "gw-b"]))
            stub, meta = rpc.AuthStub(root.channel), root.metadata
            user = agent_role_name("gw-a")
            await stub.UserAdd(rpc.AuthUserAddRequest(name=user, password=AGENT_PASSWORD),
                               metadata=meta)
            await stub.UserGrantRole(rpc.AuthUserGrantRoleRequest(user=user, role=user),
                                     metadata=meta)
            await root.put(f"{PREFIX}/resources/egressgateways/egress-1".encode(), b"{}")
            await ensure_keys(root, PREFIX, time.time())
        finally:
            await root.close()
    asyncio.run(setup())
    return auth_etcd


def as_agent(server, body):
    async def main():
        client = await connect(settings(server, agent_role_name("gw-a"), AGENT_PASSWORD))
        try:
            return await body(client)
        finally:
            await client.close()
    return asyncio.run(main())


REFUSED_KEYS = ["resources/egressgateways/egress-1", "resources/egressgatewaypolicies/p1",
                "resources/virtualmachines/default/vm1", "resources/nodes/gw-b",
                "status/nodes/gw-b", "keys/heartbeat"]


def test_agent_role_cannot_rewrite_gateways_policies_other_nodes_or_keys(agent_etcd):
    async def body(client):
        refused = []
        for key in REFUSED_KEYS:
            with pytest.raises(aetcd.exceptions.ClientError) as err:
                await client.put(f"{PREFIX}/{key}".encode(), b"{}")
            refused.append(permission_denied(err.value))
        with pytest.raises(aetcd.exceptions.ClientError) as err:
            await client.delete(f"{PREFIX}/resources/egressgateways/egress-1".encode())
        refused.append(permission_denied(err.value))
        assert all(refused), dict(zip(REFUSED_KEYS + ["delete gateway"], refused))
        # it still reads what it needs: the gateway, the keys (read-only)
        assert (await client.get(f"{PREFIX}/resources/egressgateways/egress-1".encode())).value
        doc, _ = await read_keys(client, PREFIX)
        assert doc is not None
        with pytest.raises(aetcd.exceptions.ClientError) as err:   # scheduled rotation: admin's
            await rotate_keys(client, PREFIX, time.time(), force=True)
        assert permission_denied(err.value)
    as_agent(agent_etcd, body)


def test_agent_role_may_write_its_node_status_registration_and_history(agent_etcd):
    async def body(client):
        lease = await client.lease(5)
        await client.put(f"{PREFIX}/status/nodes/gw-a".encode(), b"{}", lease=lease)
        await client.put(f"{PREFIX}/status/gateways/egress-1/gw-a".encode(), b"{}", lease=lease)
        await client.put(f"{PREFIX}/resources/nodes/gw-a".encode(), b"{}")
        await client.put(f"{PREFIX}/events/egress-1/00000000000000000001-gw-a".encode(), b"{}")
        await client.delete(f"{PREFIX}/switchover/egress-1".encode())
        await lease.revoke()
        keys = HeartbeatKeys("gw-a", PREFIX, Encoder(), Receiver("gw-a", {}))
        keys.apply_config(AgentConfig(node="gw-a"))
        await keys.start(client)                          # reads the admin's key
        assert keys.signing_id is not None
    as_agent(agent_etcd, body)


def test_agent_role_may_do_its_election_writes(agent_etcd):
    async def body(client):
        ex = AuthorityExecutor(client, "egress-1", "gw-a", prefix=PREFIX, timeout=2.0)
        lease = await ex.run(GrantLease(op_id=1, ttl=5))
        assert lease.outcome == OK
        acquired = await ex.run(Acquire(op_id=2, lease=lease.lease, term_rev=0))
        assert acquired.outcome == OK and acquired.view.holder == "gw-a"
        assert (await ex.run(Release(op_id=3, epoch=acquired.view.epoch,
                                     successor=None))).outcome == OK
    as_agent(agent_etcd, body)


def test_the_roles_printout_lists_every_agent_write_and_is_applied_as_printed(agent_etcd):
    script = etcdctl_script(roles_for(PREFIX, ["gw-a"]))
    assert "etcdctl role add vipmgr-agent-gw-a" in script
    for part in ("authority/", "term/", "challenge/", "status/gateways/", "switchover/",
                 "events/"):
        assert f"--prefix=true readwrite {PREFIX}/{part}" in script
    for one in ("status/nodes/gw-a", "resources/nodes/gw-a"):
        assert f"vipmgr-agent-gw-a readwrite {PREFIX}/{one}" in script
    assert "--prefix=true read /vipmgr/\n" in script and "read $'\\0vipmgr-probe'" in script

    async def stored():
        root = await connect(settings(agent_etcd))
        try:
            got = await rpc.AuthStub(root.channel).RoleGet(
                rpc.AuthRoleGetRequest(role="vipmgr-agent-gw-a"), metadata=root.metadata)
            return {(p.key.decode(), p.range_end.decode()) for p in got.perm}
        finally:
            await root.close()
    role = agent_role(PREFIX, "gw-a")
    assert asyncio.run(stored()) == {(g.key, g.range_end) for g in role.grants}
