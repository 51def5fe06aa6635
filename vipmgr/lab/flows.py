"""Long-lived TCP flows for the failover benchmark: does an established connection survive?

``serve`` (on the echo host) answers every line on every connection with the
same line. ``run`` (in a VM) opens ``flows`` connections to it, all at once,
and on each one writes a line every ``interval`` (20 ms: data in both
directions all the time, so a failover meets a client segment *and* a server
segment in flight), for ``duration`` seconds. It then reports, per run:

- ``survived``: connections that saw no reset, no EOF and no error, and whose
  last echo came within ``alive_within`` seconds of the end (a connection that
  hangs silently is lost too);
- ``worst_stall_ms``: the longest gap between two echoes on a surviving
  connection (the failover's cost as an application sees it);
- ``errors``: how the lost ones ended (``ECONNRESET``, ``EOF``, ``silent``, ...).

Both ends are bounded: at most ``MAX_FLOWS`` connections and ``MAX_DURATION``
seconds; the server closes a connection idle for ``IDLE_LIMIT`` seconds.
Pure standard library (asyncio protocols, one timer for every connection), so
200 flows at 20 ms cost a few percent of a core on each side.

    python -m vipmgr.lab.flows serve --port 9000
    python -m vipmgr.lab.flows run --to 203.0.113.10:9000 --flows 200 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import socket
import sys
import time
from dataclasses import asdict, dataclass, field

MAX_FLOWS = 2000
MAX_DURATION = 600.0
IDLE_LIMIT = 30.0
MAX_LINE = 64
CONNECT_TIMEOUT = 5.0


@dataclass
class FlowsReport:
    flows: int
    connected: int
    survived: int
    lost: int
    worst_stall_ms: float  # over surviving connections
    stalls_ms: list[float] = field(default_factory=list)  # worst stall per surviving flow
    errors: dict[str, int] = field(default_factory=dict)  # how lost flows ended
    source_ports: list[int] = field(default_factory=list)

    def summary(self) -> str:
        why = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items()))
        return (f"{self.survived}/{self.flows} flows survived, worst stall "
                f"{self.worst_stall_ms:.0f} ms" + (f" (lost: {why})" if why else ""))


class _Echo(asyncio.Protocol):
    """Server side: every complete line back, as is."""

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buf = b""
        self.last = time.monotonic()

    def data_received(self, data: bytes) -> None:
        self.last = time.monotonic()
        self.buf += data
        if b"\n" in self.buf:
            head, _, self.buf = self.buf.rpartition(b"\n")
            self.transport.write(head + b"\n")
        if len(self.buf) > MAX_LINE:
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    conns: set[_Echo] = set()

    def factory() -> _Echo:
        proto = _Echo()
        conns.add(proto)
        return proto

    server = await loop.create_server(factory, host, port, reuse_address=True, backlog=4096)
    async with server:
        while True:
            await asyncio.sleep(IDLE_LIMIT / 3)
            now = time.monotonic()
            for proto in list(conns):
                if proto.transport.is_closing():
                    conns.discard(proto)
                elif now - proto.last > IDLE_LIMIT:
                    proto.transport.close()
                    conns.discard(proto)


class _Client(asyncio.Protocol):
    """One flow: counts its echoes and the longest gap between two of them."""

    def __init__(self) -> None:
        self.transport = None
        self.buf = b""
        self.sent = 0
        self.echoed = 0
        self.last_echo: float | None = None
        self.worst_gap = 0.0
        self.ended: str | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.last_echo = time.monotonic()

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.buf += data
        lines = self.buf.count(b"\n")
        if lines:
            self.buf = self.buf[self.buf.rfind(b"\n") + 1:]
            self.echoed += lines
            if self.last_echo is not None:
                self.worst_gap = max(self.worst_gap, now - self.last_echo)
            self.last_echo = now

    def eof_received(self) -> bool:
        self.ended = self.ended or "EOF"
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self.ended = self.ended or "EOF"
        else:
            err = getattr(exc, "errno", None)
            self.ended = self.ended or (errno.errorcode.get(err, type(exc).__name__)
                                        if err else type(exc).__name__)

    def tick(self) -> None:
        if self.ended is None and self.transport is not None:
            self.sent += 1
            self.transport.write(b"%d\n" % self.sent)


async def run(host: str, port: int, flows: int, duration: float, interval: float = 0.02,
              alive_within: float = 1.0, sport_base: int = 0) -> FlowsReport:
    """Open ``flows`` connections, exchange a line every ``interval`` for ``duration`` s.

    ``sport_base``: connection i uses source port ``sport_base + i`` (two VMs with the
    same base make every flow a NAT collision: same source port, same destination)."""
    if not 1 <= flows <= MAX_FLOWS:
        raise ValueError(f"flows must be 1..{MAX_FLOWS}, got {flows}")
    if not 0 < duration <= MAX_DURATION:
        raise ValueError(f"duration must be in (0, {MAX_DURATION:g}] s, got {duration:g}")
    loop = asyncio.get_running_loop()
    clients = [_Client() for _ in range(flows)]
    if sport_base and not 1024 <= sport_base <= 65535 - flows:
        raise ValueError(f"sport_base must leave room for {flows} ports in 1024..65535")

    async def open_connection(i: int, c: _Client) -> None:
        if not sport_base:
            await loop.create_connection(lambda: c, host, port)
            return
        # a fixed port: reusable while the previous run's connection is in TIME_WAIT
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", sport_base + i))
            sock.setblocking(False)
            await loop.sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        await loop.create_connection(lambda: c, sock=sock)

    async def connect(i: int, c: _Client) -> None:
        try:
            await asyncio.wait_for(open_connection(i, c), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            c.ended = "connect: " + (errno.errorcode.get(getattr(exc, "errno", None) or 0)
                                     or type(exc).__name__)

    await asyncio.gather(*(connect(i, c) for i, c in enumerate(clients)))
    connected = [c for c in clients if c.transport is not None]
    for c in connected:  # the gap clock starts with the exchange, not with the connect burst
        c.last_echo = time.monotonic()
    end = time.monotonic() + duration
    next_tick = time.monotonic()
    while (now := time.monotonic()) < end:
        for c in connected:
            c.tick()
        next_tick += interval
        if next_tick < now:
            next_tick = now + interval  # we fell behind (loaded host): do not burst
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    await asyncio.sleep(min(0.2, alive_within / 2))  # the last lines' echoes
    now = time.monotonic()
    report = FlowsReport(flows=flows, connected=len(connected), survived=0, lost=0,
                         worst_stall_ms=0.0)
    for c in clients:
        if c.ended is None and (c.last_echo is None or now - c.last_echo > alive_within):
            c.ended = "silent"
        if c.ended is None:
            report.survived += 1
            report.stalls_ms.append(round(c.worst_gap * 1e3, 1))
            report.source_ports.append(c.transport.get_extra_info("sockname")[1])
        else:
            report.lost += 1
            report.errors[c.ended] = report.errors.get(c.ended, 0) + 1
        if c.transport is not None:
            c.transport.abort()
    report.worst_stall_ms = max(report.stalls_ms, default=0.0)
    return report


PORT = 9000


def serve_command(port: int = PORT) -> list[str]:
    """argv of the flows server (run it in the echo host's namespace)."""
    return [sys.executable, "-m", "vipmgr.lab.flows", "serve", "--port", str(port)]


def run_command(host: str, flows: int, duration: float, port: int = PORT,
                interval: float = 0.02, sport_base: int = 0) -> list[str]:
    """argv of one client run (in a VM's namespace); its stdout is one JSON report."""
    return [sys.executable, "-m", "vipmgr.lab.flows", "run", "--to", f"{host}:{port}",
            "--flows", str(flows), "--duration", f"{duration:g}", "--interval", f"{interval:g}",
            "--sport-base", str(sport_base), "--json"]


def parse_report(stdout: str) -> FlowsReport:
    """The report ``run --json`` printed (its last line)."""
    return FlowsReport(**json.loads(stdout.strip().splitlines()[-1]))


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vipmgr.lab.flows")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="echo every line back on every connection")
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--port", type=int, default=PORT)
    r = sub.add_parser("run", help="N connections, a line each way every interval")
    r.add_argument("--to", type=_endpoint, required=True, metavar="HOST:PORT")
    r.add_argument("--flows", type=int, default=200)
    r.add_argument("--duration", type=float, default=10.0)
    r.add_argument("--interval", type=float, default=0.02)
    r.add_argument("--alive-within", type=float, default=1.0)
    r.add_argument("--sport-base", type=int, default=0,
                   help="connection i binds source port BASE+i (0: any)")
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    if args.cmd == "serve":
        try:
            asyncio.run(serve(args.host, args.port))
        except KeyboardInterrupt:
            pass
        return 0
    try:
        report = asyncio.run(run(args.to[0], args.to[1], args.flows, args.duration,
                                 args.interval, args.alive_within, args.sport_base))
    except ValueError as exc:
        print(f"flows: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(report)) if args.json else report.summary(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
