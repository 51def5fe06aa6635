"""The TCP flow generator/checker on loopback (no namespaces): counts, stalls, losses."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import pytest

from vipmgr.lab import flows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    port = free_port()
    proc = subprocess.Popen(flows.serve_command(port)[:-2] + ["--host", "127.0.0.1",
                                                             "--port", str(port)])
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "flows server did not start"
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(5)


def test_every_flow_survives_a_quiet_run_with_small_stalls(server):
    out = subprocess.run(flows.run_command("127.0.0.1", 20, 1.0, port=server),
                         capture_output=True, text=True, timeout=30)
    report = flows.parse_report(out.stdout)
    assert (report.flows, report.connected, report.survived, report.lost) == (20, 20, 20, 0)
    assert report.worst_stall_ms < 500
    assert len(set(report.source_ports)) == 20


def test_a_reset_and_a_silent_flow_are_counted_as_lost():
    # a peer that never answers: the client's connection is "silent", not survived
    async def silent_and_reset():
        loop = asyncio.get_running_loop()
        sink = socket.socket()
        sink.bind(("127.0.0.1", 0))
        sink.listen()
        port = sink.getsockname()[1]
        task = asyncio.create_task(flows.run("127.0.0.1", port, 2, 1.0, alive_within=0.3))
        # not synchronisation (the accepts below wait for the connections): the silence
        # the client meets before one connection is reset; any pause well inside the
        # 1 s run gives the same counts
        await asyncio.sleep(0.3)
        conns = [await loop.sock_accept(sink) for _ in range(2)]
        conns[0][0].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        conns[0][0].close()  # linger 0: a RST
        report = await task
        conns[1][0].close()
        sink.close()
        return report

    report = asyncio.run(silent_and_reset())
    assert report.survived == 0 and report.lost == 2
    assert report.errors == {"ECONNRESET": 1, "silent": 1}, report.errors
    assert report.source_ports == []



def test_fixed_source_ports_are_used_as_asked(server):
    report = asyncio.run(flows.run("127.0.0.1", server, 3, 0.5, sport_base=45000))
    assert report.survived == 3 and sorted(report.source_ports) == [45000, 45001, 45002]


def test_bad_arguments_are_refused_with_the_limit():
    with pytest.raises(ValueError, match="flows must be 1..2000"):
        asyncio.run(flows.run("127.0.0.1", 1, 0, 1.0))
    out = subprocess.run([sys.executable, "-m", "vipmgr.lab.flows", "run", "--to", "x:1",
                          "--duration", "9999"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "duration must be" in out.stderr
