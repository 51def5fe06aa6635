import asyncio

import aetcd
import pytest

pytestmark = pytest.mark.etcd


def test_real_etcd_answers(etcd_server, etcd_prefix):
    async def roundtrip():
        client = aetcd.Client(host=etcd_server.host, port=etcd_server.client_port)
        await client.connect()
        try:
            await client.put(f"{etcd_prefix}/k".encode(), b"v")
            return (await client.get(f"{etcd_prefix}/k".encode())).value
        finally:
            await client.close()

    assert asyncio.run(roundtrip()) == b"v"
