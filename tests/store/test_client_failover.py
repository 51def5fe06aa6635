"""The etcd client on a real 3-member cluster on loopback: it moves to another member when
its member dies, stops answering or loses its leader, keeps watches whole across the move,
and survives a leader kill with its leases; a stopped majority is an outage it recovers from."""

from __future__ import annotations

import asyncio
import signal
import time

import aetcd.exceptions
import grpc
import pytest

from vipmgr.lab.etcd import EtcdCluster
from vipmgr.store.client import EtcdSettings, connect

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

REQUEST_TIMEOUT = 0.05  # the agent's etcdTimeout
# the defaults; a move needs only one, but a loaded machine may add a spurious one (a
# healthy member slower than 200 ms once), which only moves the client to another member
SETTINGS = dict(health_interval=0.1, health_timeout=0.2)
ERRORS = (asyncio.TimeoutError, grpc.RpcError, aetcd.exceptions.ClientError)


@pytest.fixture
def cluster():
    with EtcdCluster() as c:
        yield c


def settings_for(cluster: EtcdCluster, first: int = 0) -> EtcdSettings:
    """Every endpoint, member ``first`` listed first (so the client starts on it)."""
    order = [first] + [i for i in range(cluster.size) if i != first]
    return EtcdSettings(endpoints=tuple(cluster.members[i].url for i in order),
                        timeout=2.0, **SETTINGS)


async def until_put_works(client, key: bytes, limit: float) -> float:
    """Seconds until a put with the agent's short timeout succeeds (retried every 20 ms)."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        try:
            await asyncio.wait_for(client.put(key, b"v"), REQUEST_TIMEOUT)
            return time.monotonic() - start
        except ERRORS:
            await asyncio.sleep(0.02)
    raise AssertionError(f"no put succeeded within {limit}s (client on {client.endpoint})")


def member_port(client) -> int:
    return int(client.endpoint.rsplit(":", 1)[1])


def index_of(cluster: EtcdCluster, client) -> int:
    return [m.client_port for m in cluster.members].index(member_port(client))


def follower(cluster: EtcdCluster) -> int:
    return (cluster.wait_leader() + 1) % cluster.size


def test_killed_member_client_moves_to_another(cluster):
    victim = follower(cluster)

    async def scenario():
        client = await connect(settings_for(cluster, first=victim))
        moves = []
        client.on_move = lambda old, new: moves.append((old, new))
        try:
            assert index_of(cluster, client) == victim
            old = client.endpoint
            await client.put(b"/t/a", b"1")
            cluster.members[victim].kill()
            took = await until_put_works(client, b"/t/b", 5)
            assert index_of(cluster, client) != victim and client.moves >= 1
            assert moves[0][0] == old and moves[-1][1] == client.endpoint  # each move reported
            assert (await client.get(b"/t/a")).value == b"1"
            print(f"killed follower: requests work again after {took * 1000:.0f} ms")
        finally:
            await client.close()

    asyncio.run(scenario())


def test_unresponsive_member_client_moves(cluster):
    """SIGSTOP: connections stay up but nothing answers (what a partition looks like)."""
    async def scenario():
        victim = follower(cluster)
        client = await connect(settings_for(cluster, first=victim))
        try:
            cluster.members[victim].signal(signal.SIGSTOP)
            took = await until_put_works(client, b"/t/c", 5)
            assert index_of(cluster, client) != victim and client.moves >= 1
            print(f"frozen follower: requests work again after {took * 1000:.0f} ms")
        finally:
            cluster.members[victim].signal(signal.SIGCONT)
            await client.close()

    asyncio.run(scenario())


def test_leader_kill_keeps_leases_and_the_client_works_after_the_election(cluster):
    async def scenario():
        leader = cluster.wait_leader()
        client = await connect(settings_for(cluster, first=leader))
        try:
            lease = await client.lease(2)
            await client.put(b"/t/held", b"x", lease=lease)
            cluster.members[leader].kill()
            took = await until_put_works(client, b"/t/d", 5)
            assert index_of(cluster, client) != leader
            # the key bound to the lease is still there and the lease can be kept alive:
            # an active's authority key does not expire because etcd's leader changed
            reply = await client.refresh_lease(lease.id)
            assert reply.TTL > 0
            assert (await client.get(b"/t/held")) is not None
            print(f"killed leader: requests work again after {took * 1000:.0f} ms "
                  "(an election, 1-2 s with etcd's defaults, then the move)")
        finally:
            await client.close()

    asyncio.run(scenario())


def test_watch_survives_a_move_without_gaps_or_duplicates(cluster):
    async def scenario():
        victim = follower(cluster)
        client = await connect(settings_for(cluster, first=victim))
        writer = await connect(settings_for(cluster, first=(victim + 1) % cluster.size))
        seen: list[bytes] = []
        try:
            watch = await client.watch(b"/w/", range_end=b"/w0")

            async def consume():
                async for event in watch:
                    seen.append(event.kv.key)
                    if len(seen) == 4:
                        return

            consumer = asyncio.create_task(consume())
            await writer.put(b"/w/1", b"")
            await asyncio.sleep(0.1)
            cluster.members[victim].kill()
            for key in (b"/w/2", b"/w/3", b"/w/4"):  # written while the client moves
                await writer.put(key, b"")
            await asyncio.wait_for(consumer, 5)
            assert watch.resumes >= 1 and client.moves >= 1
            await watch.cancel()
        finally:
            await client.close()
            await writer.close()
        return seen

    assert asyncio.run(scenario()) == [b"/w/1", b"/w/2", b"/w/3", b"/w/4"]


def test_stopped_majority_is_an_outage_and_the_client_recovers(cluster):
    async def scenario():
        client = await connect(settings_for(cluster, first=0))
        try:
            await client.put(b"/t/e", b"1")
            cluster.members[1].kill()
            cluster.members[2].kill()
            await asyncio.sleep(1.5)  # member 0 notices it lost its quorum
            with pytest.raises(ERRORS):
                await asyncio.wait_for(client.put(b"/t/f", b"1"), 0.5)
            moves = client.moves
            cluster.restart(1)
            cluster.restart(2)
            await until_put_works(client, b"/t/g", 10)
            # it never moved to a member that did not answer: at most the one move back
            assert client.moves - moves <= 1
            assert (await client.get(b"/t/e")).value == b"1"
        finally:
            await client.close()

    asyncio.run(scenario())


def test_every_member_down_at_start_names_each_endpoint(cluster):
    from vipmgr.store.client import EtcdUnavailable

    urls = [m.url for m in cluster.members]
    cluster.destroy()

    async def scenario():
        with pytest.raises(EtcdUnavailable) as err:
            await connect(EtcdSettings(endpoints=tuple(urls), timeout=1.0))
        return str(err.value)

    text = asyncio.run(scenario())
    assert all(url in text for url in urls), text

