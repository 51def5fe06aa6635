"""The asyncio checks against real endpoints on loopback, processes and files."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from vipmgr.health.checks import check, run_monitor
from vipmgr.health.monitor import HealthMonitor
from vipmgr.health.probes import ExecProbe, FileProbe, HttpProbe, TcpProbe
from vipmgr.health.state import Status


async def http_server(requests: list[str]):
    async def handle(reader, writer):
        request = (await reader.readuntil(b"\r\n\r\n")).decode()
        requests.append(request)
        path = request.split()[1]
        if path.startswith("/slow"):
            await asyncio.sleep(5)
        body = {"/bad": b"HTTP/1.1 503 Service Unavailable\r\n\r\n",
                "/garbage": b"hello\r\n"}.get(path, b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
        writer.write(body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http_status_decides():
    async def main():
        requests: list[str] = []
        server, port = await http_server(requests)
        async with server:
            base = f"http://127.0.0.1:{port}"
            ok = await check(HttpProbe(name="w", url=f"{base}/healthz?full=1"))
            bad = await check(HttpProbe(name="w", url=f"{base}/bad"))
            expected_503 = await check(HttpProbe(name="w", url=f"{base}/bad", expect_status=(503,)))
            garbage = await check(HttpProbe(name="w", url=f"{base}/garbage"))
            t0 = time.monotonic()
            slow = await check(HttpProbe(name="w", url=f"{base}/slow", timeout=0.2, interval=1))
            slow_took = time.monotonic() - t0
        refused = await check(HttpProbe(name="w", url=f"http://127.0.0.1:{free_port()}/"))
        return requests, ok, bad, expected_503, garbage, slow, slow_took, refused

    requests, ok, bad, expected_503, garbage, slow, slow_took, refused = asyncio.run(main())
    assert requests[0].startswith("GET /healthz?full=1 HTTP/1.0\r\n")
    assert "\r\nHost: 127.0.0.1:" in requests[0]
    assert ok.ok and ok.detail == "HTTP 200"
    assert not bad.ok and bad.detail == "HTTP 503 (expected 200)"
    assert expected_503.ok
    assert not garbage.ok and "not an HTTP response" in garbage.detail
    assert not slow.ok and slow.detail == "timed out after 0.2s" and slow_took < 1.0
    assert not refused.ok and refused.detail.startswith("connect: ")


def test_tcp_connect_or_refused():
    async def main():
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            up = await check(TcpProbe(name="t", host="127.0.0.1", port=port))
        down = await check(TcpProbe(name="t", host="127.0.0.1", port=free_port()))
        return up, down

    up, down = asyncio.run(main())
    assert up.ok and up.detail == "connected"
    assert not down.ok and "refused" in down.detail.lower()


def test_exec_exit_status_and_output():
    ok = asyncio.run(check(ExecProbe(name="e", command=("sh", "-c", "echo fine"))))
    assert ok.ok and ok.detail == "exit 0: fine"
    bad = asyncio.run(check(ExecProbe(name="e", command=("sh", "-c", "echo first; echo uplink gone >&2; exit 3"))))
    assert not bad.ok and bad.detail == "exit 3: uplink gone"
    missing = asyncio.run(check(ExecProbe(name="e", command=("/nonexistent/check",))))
    assert not missing.ok and missing.detail.startswith("cannot run /nonexistent/check:")


def test_exec_timeout_kills_the_process_group(tmp_path):
    pidfile = tmp_path / "pid"
    probe = ExecProbe(name="e", command=("sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"),
                      timeout=0.3, interval=1)
    t0 = time.monotonic()
    result = asyncio.run(check(probe))
    assert time.monotonic() - t0 < 1.5
    assert not result.ok and result.detail == "timed out after 0.3s"
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not dead(child):
        time.sleep(0.02)
    assert dead(child), f"grandchild {child} survived the probe timeout"


def dead(pid: int) -> bool:
    """Gone or a zombie (killed, waiting for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_file_exists_absent_and_content(tmp_path):
    flag = tmp_path / "flag"
    run = lambda **kw: asyncio.run(check(FileProbe(name="f", path=str(flag), **kw)))  # noqa: E731
    assert run().detail == "does not exist" and not run().ok
    assert run(exists=False).ok
    flag.write_text("1\n")
    assert run().ok and not run(exists=False).ok
    assert run(content="1").ok
    wrong = run(content="0")
    assert not wrong.ok and wrong.detail == "content '1', expected '0'"


def test_slow_check_does_not_block_the_loop():
    """A 0.5 s exec probe runs while a 10 ms ticker keeps ticking."""
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        result = await check(ExecProbe(name="e", command=("sleep", "0.5"), timeout=2, interval=3))
        task.cancel()
        return result, ticks

    result, ticks = asyncio.run(main())
    assert result.ok
    assert ticks >= 20


def test_run_monitor_drives_transitions(tmp_path):
    flag = tmp_path / "ready"
    flag.write_text("")
    mon = HealthMonitor([FileProbe(name="flag", path=str(flag), interval=0.05, timeout=0.02,
                                   rise=2, fall=2)])
    seen = []

    async def main():
        task = asyncio.create_task(run_monitor(mon, seen.append))
        deadline = time.monotonic() + 3
        while not mon.ready and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        flag.unlink()
        while mon.ready and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert [(t.old, t.new) for t in seen] == [(Status.PENDING, Status.UP), (Status.UP, Status.DOWN)]
    assert seen[1].reason.endswith("does not exist for 2 checks")
