"""etcd least privilege: what an agent's etcd user may read and write, and the admin's.

An agent needs to read everything under the prefix (resources, holders,
status, the heartbeat keys) but write only what the agent itself produces::

    key / range                                  agent access   written by the agent for
    {prefix}/                      (prefix)      read           resources, status, keys, …
    \\0vipmgr-probe                (one key)      read           the connect probe (store/client)
    {prefix}/authority/            (prefix)      readwrite      election: holder key (lease)
    {prefix}/term/                 (prefix)      readwrite      election: term held/vacated
    {prefix}/challenge/            (prefix)      readwrite      election: challenges, answers
    {prefix}/switchover/           (prefix)      readwrite      deleting a handled request
    {prefix}/status/nodes/{node}   (one key)     readwrite      its node status (lease)
    {prefix}/status/placement/{node} (one key)   readwrite      eligible since (lease)
    {prefix}/status/gateways/      (prefix)      readwrite      its member status per gateway
    {prefix}/resources/nodes/{node} (one key)    readwrite      registering its own Node
    {prefix}/events/               (prefix)      readwrite      gateway history (role changes)

So an agent credential cannot write an EgressGateway, a policy, a VM,
another Node or the heartbeat keys: those are the admin's
(``vipmgr-admin``: readwrite on the whole prefix). Per-gateway keys put the
node name last (``status/gateways/<gw>/<node>``, ``challenge/<gw>/<node>``)
or not at all (``authority/<gw>``), and etcd grants by key or prefix, so
those ranges are shared by the agents of a cluster; docs/security.md says
what that leaves a stolen agent credential.

Roles are per node (``vipmgr-agent-<node>``) because of the per-node keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import aetcd.rpc as rpc

from vipmgr.store.codec import prefix_end

PROBE_KEY = "\0vipmgr-probe"   # store/client.py reads it to test a connection
ADMIN_ROLE = "vipmgr-admin"
READ, READWRITE = "read", "readwrite"
_PERM_TYPE = {READ: rpc.Permission.READ, READWRITE: rpc.Permission.READWRITE}


@dataclass(frozen=True, slots=True)
class Grant:
    key: str
    prefix: bool      # True: every key starting with ``key``
    access: str       # READ | READWRITE

    @property
    def range_end(self) -> str:
        """etcd's range end for a prefix ('' for one key)."""
        if not self.prefix:
            return ""
        return prefix_end(self.key.encode()).decode()

    def etcdctl(self, role: str) -> str:
        key = self.key.replace("\0", "\\0")
        if key.startswith("\\0"):
            key = f"$'{key}'"
        return f"etcdctl role grant-permission {role}{' --prefix=true' if self.prefix else ''} " \
               f"{self.access} {key}"


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    grants: tuple[Grant, ...]


def agent_role_name(node: str) -> str:
    return f"vipmgr-agent-{node}"


def agent_role(prefix: str, node: str) -> Role:
    p = prefix.rstrip("/")
    shared = ("authority", "term", "challenge", "switchover", "status/gateways", "events")
    return Role(agent_role_name(node), (
        Grant(f"{p}/", True, READ),
        Grant(PROBE_KEY, False, READ),
        *(Grant(f"{p}/{name}/", True, READWRITE) for name in shared),
        Grant(f"{p}/status/nodes/{node}", False, READWRITE),
        Grant(f"{p}/status/placement/{node}", False, READWRITE),
        Grant(f"{p}/resources/nodes/{node}", False, READWRITE),
    ))


def admin_role(prefix: str) -> Role:
    p = prefix.rstrip("/")
    return Role(ADMIN_ROLE, (Grant(f"{p}/", True, READWRITE), Grant(PROBE_KEY, False, READ)))


def roles_for(prefix: str, nodes: list[str]) -> list[Role]:
    return [admin_role(prefix), *(agent_role(prefix, n) for n in nodes)]


def etcdctl_script(roles: list[Role]) -> str:
    """The etcdctl commands that create the roles (users are the operator's: the comments
    say how to add one per node and grant it its role)."""
    lines = []
    for role in roles:
        lines.append(f"etcdctl role add {role.name}")
        lines += [g.etcdctl(role.name) for g in role.grants]
        user = role.name
        lines.append(f"# etcdctl user add {user} && etcdctl user grant-role {user} {role.name}")
    return "\n".join(lines)


async def apply_roles(client, roles: list[Role]) -> list[str]:
    """Create or refresh the roles over etcd's auth API (as a root/admin user); existing
    permissions of these roles that are not in the table are revoked. Returns one line per
    role."""
    stub = rpc.AuthStub(client.channel)
    meta = client.metadata    # the admin's token (aetcd sets it once authenticated)
    existing = set((await stub.RoleList(rpc.AuthRoleListRequest(), metadata=meta)).roles)
    out = []
    for role in roles:
        if role.name not in existing:
            await stub.RoleAdd(rpc.AuthRoleAddRequest(name=role.name), metadata=meta)
        else:
            got = await stub.RoleGet(rpc.AuthRoleGetRequest(role=role.name), metadata=meta)
            wanted = {(g.key.encode(), g.range_end.encode()) for g in role.grants}
            for perm in got.perm:
                if (perm.key, perm.range_end) not in wanted:
                    await stub.RoleRevokePermission(rpc.AuthRoleRevokePermissionRequest(
                        role=role.name, key=perm.key, range_end=perm.range_end), metadata=meta)
        for g in role.grants:
            await stub.RoleGrantPermission(rpc.AuthRoleGrantPermissionRequest(
                name=role.name, perm=rpc.Permission(
                    permType=_PERM_TYPE[g.access], key=g.key.encode(),
                    range_end=g.range_end.encode())), metadata=meta)
        out.append(f"role {role.name}: {len(role.grants)} permissions")
    return out
