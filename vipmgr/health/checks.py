"""Run probes: asyncio, each check bounded by its timeout, never blocking the loop.

exec uses an asyncio subprocess (killed with its process group on timeout),
http a minimal HTTP/1.0 GET over asyncio streams, carrier and route ask the
kernel over netlink (pyroute2's asyncio API) in the agent's own namespace —
sysfs would show the namespace sysfs was mounted for, not necessarily ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from vipmgr.health.monitor import HealthMonitor, Transition
from vipmgr.health.probes import (
    CarrierProbe,
    ExecProbe,
    FileProbe,
    HttpProbe,
    Probe,
    RouteProbe,
    TcpProbe,
)
from vipmgr.health.state import CheckResult

IFF_UP = 0x1
FILE_READ_LIMIT = 64 * 1024
DETAIL_LIMIT = 200


async def check(probe: Probe) -> CheckResult:
    """Run one check; a check that outlives ``probe.timeout`` fails."""
    try:
        async with asyncio.timeout(probe.timeout):
            return await _CHECKS[type(probe)](probe)
    except TimeoutError:
        return CheckResult(False, f"timed out after {probe.timeout:g}s")


async def run_monitor(monitor: HealthMonitor,
                      on_transition: Callable[[Transition], None] | None = None,
                      clock: Callable[[], float] = time.time) -> None:
    """Check every probe of ``monitor`` every ``interval`` until cancelled
    (returns at once when no probe is configured: the node is then Ready).

    ``clock`` stamps results (wall time, for "down since" in status views);
    scheduling uses the loop's monotonic clock. After SIGHUP, cancel this task,
    call ``monitor.reconfigure`` and start it again.
    """
    async with asyncio.TaskGroup() as group:
        for probe in list(monitor.probes.values()):
            group.create_task(_probe_loop(monitor, probe, on_transition, clock),
                              name=f"probe:{probe.name}")


async def _probe_loop(monitor: HealthMonitor, probe: Probe,
                      on_transition: Callable[[Transition], None] | None,
                      clock: Callable[[], float]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        transition = monitor.observe(probe.name, await check(probe), clock())
        if transition is not None and on_transition is not None:
            on_transition(transition)
        await asyncio.sleep(max(0.0, started + probe.interval - loop.time()))


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= DETAIL_LIMIT else text[:DETAIL_LIMIT - 1] + "…"


def _os_error(exc: OSError) -> str:
    """The errno's text ("Connection refused"); resolver errors carry negative codes."""
    if exc.errno and exc.errno > 0:
        return os.strerror(exc.errno)
    return _short(exc.strerror or str(exc))


async def _check_http(probe: HttpProbe) -> CheckResult:
    parts = urlsplit(probe.url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
    except OSError as exc:
        return CheckResult(False, f"connect: {_os_error(exc)}")
    try:
        writer.write(f"GET {target} HTTP/1.0\r\nHost: {parts.netloc}\r\n"
                     "User-Agent: vipmgr-health\r\nConnection: close\r\n\r\n".encode("latin-1"))
        await writer.drain()
        line = await reader.readline()
    except OSError as exc:
        return CheckResult(False, f"request: {_os_error(exc)}")
    finally:
        writer.close()
    words = line.decode("latin-1").split(None, 2)
    if len(words) < 2 or not words[0].startswith("HTTP/") or not words[1].isdigit():
        return CheckResult(False, f"not an HTTP response: {_short(line.decode('latin-1'))!r}")
    status = int(words[1])
    if status in probe.expect_status:
        return CheckResult(True, f"HTTP {status}")
    wanted = ", ".join(str(code) for code in probe.expect_status)
    return CheckResult(False, f"HTTP {status} (expected {wanted})")


async def _check_tcp(probe: TcpProbe) -> CheckResult:
    try:
        _, writer = await asyncio.open_connection(probe.host, probe.port)
    except OSError as exc:
        return CheckResult(False, f"connect: {_os_error(exc)}")
    writer.close()
    return CheckResult(True, "connected")


async def _check_exec(probe: ExecProbe) -> CheckResult:
    try:
        proc = await asyncio.create_subprocess_exec(
            *probe.command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        return CheckResult(False, f"cannot run {probe.command[0]}: {_os_error(exc)}")
    try:
        output, _ = await proc.communicate()
    finally:
        if proc.returncode is None:  # timed out or cancelled: kill the whole group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    lines = output.decode(errors="replace").strip().splitlines()
    said = f": {_short(lines[-1])}" if lines else ""
    if proc.returncode == 0:
        return CheckResult(True, f"exit 0{said}")
    if proc.returncode < 0:
        return CheckResult(False, f"killed by signal {-proc.returncode}{said}")
    return CheckResult(False, f"exit {proc.returncode}{said}")


def _read_file(probe: FileProbe) -> CheckResult:
    try:
        with open(probe.path, "rb") as f:
            data = f.read(FILE_READ_LIMIT)
    except FileNotFoundError:
        if probe.exists:
            return CheckResult(False, "does not exist")
        return CheckResult(True, "absent")
    except IsADirectoryError:
        data = b""
    except OSError as exc:
        return CheckResult(False, f"unreadable: {_os_error(exc)}")
    if not probe.exists:
        return CheckResult(False, "exists")
    if probe.content is None:
        return CheckResult(True, "exists")
    text = data.decode(errors="replace").strip()
    if text == probe.content.strip():
        return CheckResult(True, f"content {probe.content.strip()!r}")
    return CheckResult(False, f"content {_short(text)!r}, expected {probe.content.strip()!r}")


async def _check_file(probe: FileProbe) -> CheckResult:
    """In a thread: a hung filesystem must not stall the loop (the timeout still applies)."""
    return await asyncio.to_thread(_read_file, probe)


async def _link(ipr: AsyncIPRoute, **match) -> dict | None:
    async for link in await ipr.get_links(**match):
        return link
    return None


async def _check_carrier(probe: CarrierProbe) -> CheckResult:
    async with AsyncIPRoute() as ipr:
        link = await _link(ipr, ifname=probe.interface)
    if link is None:
        return CheckResult(False, f"interface {probe.interface} not found")
    operstate = link.get("IFLA_OPERSTATE")
    if not link["flags"] & IFF_UP:
        return CheckResult(False, "administratively down")
    if link.get("IFLA_CARRIER") != 1:
        return CheckResult(False, "no carrier")
    # UNKNOWN: drivers that do not track operstate (dummy, some virtual NICs) but have carrier.
    if operstate not in ("UP", "UNKNOWN"):
        return CheckResult(False, f"operstate {operstate}")
    return CheckResult(True, f"carrier, operstate {operstate}")


async def _check_route(probe: RouteProbe) -> CheckResult:
    async with AsyncIPRoute() as ipr:
        try:
            routes = await ipr.route("get", dst=probe.destination)
        except NetlinkError as exc:
            return CheckResult(False, f"no route to {probe.destination}: {os.strerror(exc.code)}")
        route = routes[0]
        oif = route.get("RTA_OIF")
        link = await _link(ipr, index=oif) if oif is not None else None
    dev = link.get("IFLA_IFNAME") if link is not None else f"#{oif}"
    via = route.get("RTA_GATEWAY")
    path = f"via {via} dev {dev}" if via else f"dev {dev}"
    if probe.interface is not None and dev != probe.interface:
        return CheckResult(False, f"route to {probe.destination} leaves {path}, "
                                  f"not dev {probe.interface}")
    return CheckResult(True, path)


_CHECKS: dict[type[Probe], Callable[..., Awaitable[CheckResult]]] = {
    HttpProbe: _check_http,
    TcpProbe: _check_tcp,
    ExecProbe: _check_exec,
    FileProbe: _check_file,
    CarrierProbe: _check_carrier,
    RouteProbe: _check_route,
}
