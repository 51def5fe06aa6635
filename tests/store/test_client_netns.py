"""The etcd client after a partition heals, with a real blackhole (nft drop in the client's
namespace, one etcd member in another, a request always in flight through it, as an agent
keeps one): requests work again right after the heal, the connection is not left stuck in
TCP retransmission backoff."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time

import pytest

from vipmgr.lab.etcd import EtcdServer

pytestmark = [pytest.mark.netns, pytest.mark.etcd, pytest.mark.slow]

SERVER, CLIENT = "198.51.100.1", "198.51.100.2"
PARTITION = 12.0  # seconds of drops: TCP's retransmission timeout doubles meanwhile
DROP = (f"table inet t {{\n chain o {{ type filter hook output priority -300; ip daddr {SERVER} drop; }}\n"
        f" chain i {{ type filter hook input priority -300; ip saddr {SERVER} drop; }}\n}}\n")

# Runs inside the client's namespace: connect, say "ready", keep one request in flight
# through the partition (as an agent does), and after "healed" on stdin report how long
# requests took to work again.
CLIENT_SCRIPT = f"""
import asyncio, json, sys, time
from vipmgr.store.client import EtcdSettings, connect

async def main():
    for _ in range(150):
        try:
            client = await connect(EtcdSettings(endpoints=("http://{SERVER}:2379",), timeout=1.0))
            break
        except ConnectionError:
            await asyncio.sleep(0.1)
    await client.put(b"/t/p", b"0")
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    healed = asyncio.ensure_future(loop.run_in_executor(None, sys.stdin.readline))
    while not healed.done():
        try:
            await asyncio.wait_for(client.put(b"/t/p", b"1"), 0.5)
        except Exception:
            pass
        await asyncio.sleep(0.05)
    start = time.monotonic()
    while time.monotonic() - start < 20:
        try:
            await asyncio.wait_for(client.put(b"/t/p", b"2"), 0.2)
            break
        except Exception:
            await asyncio.sleep(0.02)
    print(json.dumps({{"took": time.monotonic() - start}}), flush=True)
    await client.close()

asyncio.run(main())
"""


def test_client_talks_again_soon_after_a_partition_heals(netns_lab):
    srv, cli = netns_lab.add("srv"), netns_lab.add("cli")
    netns_lab.link("srv", "eth0", "cli", "eth0")
    srv.set_addr("eth0", f"{SERVER}/24")
    cli.set_addr("eth0", f"{CLIENT}/24")
    server = EtcdServer(host=SERVER, client_port=2379, peer_port=2380,
                        prefix_argv=srv.argv([]), data_dir=tempfile.mkdtemp(prefix="vipmgr-etcd-"))
    server.launch()
    proc = cli.popen([sys.executable, "-c", CLIENT_SCRIPT], stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        cli.run(["nft", "-f", "-"], input=DROP)
        time.sleep(PARTITION)
        cli.run(["nft", "delete", "table", "inet", "t"])
        proc.stdin.write("healed\n")
        proc.stdin.flush()
        report = json.loads(proc.stdout.readline())
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        server.destroy()
    print(f"after a {PARTITION:g} s partition: requests work again after "
          f"{report['took'] * 1000:.0f} ms")
    assert report["took"] < 20, report  # the script gives up at 20 s
