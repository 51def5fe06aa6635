"""The lab's "what is my IP" service (the seed's ``curl ip.flant.ru``) and its client.

``serve`` answers every HTTP request with the source address it sees
(``"<ip>\\n"``) and, for the failover benchmark, records every UDP datagram:
a datagram starts with an ASCII sequence number (``b"42"`` or ``b"42 anything"``);
the service appends ``"<seq> <source ip> <arrival CLOCK_MONOTONIC>"`` to the
log and replies ``"<seq> <source ip>\\n"``. CLOCK_MONOTONIC is one clock for
every namespace of a host, so a sender in another namespace can compare its
own send times with the arrival times. With ``--l2-log`` a packet socket also
records, per datagram, the MAC that delivered it (``"… <mac>"``).

``get`` is the tiny HTTP client ``vipmgr lab curl`` runs inside a VM's
namespace. Pure standard library, so it starts fast and needs no curl.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import socket
import struct
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

HTTP_PORT = 80
UDP_PORT = 7
REQUEST_TIMEOUT = 5.0
MAX_REQUEST = 16384
ETH_P_IP = 0x0800
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; Python 3.11 lacks the name


@dataclass(frozen=True)
class UdpRecord:
    """One datagram as the echo service saw it; ``mac`` (the L2 log only) is who delivered it."""

    seq: int
    source: str
    arrival: float  # CLOCK_MONOTONIC seconds
    mac: str = ""

    def line(self) -> str:
        return f"{self.seq} {self.source} {self.arrival:.6f} {self.mac}".rstrip() + "\n"

    @classmethod
    def parse(cls, line: str) -> "UdpRecord":
        seq, source, arrival, *mac = line.split()
        return cls(int(seq), source, float(arrival), *mac)


def read_udp_log(path: str | Path) -> list[UdpRecord]:
    """Every complete record of an echo UDP log (a half-written last line is skipped)."""
    text = Path(path).read_text()
    return [UdpRecord.parse(line) for line in text.splitlines(keepends=True)
            if line.endswith("\n")]


def parse_seq(payload: bytes) -> int | None:
    head = payload.split(b" ", 1)[0]
    return int(head) if head.isdigit() else None


def parse_udp_frame(frame: bytes, port: int) -> tuple[str, str, int] | None:
    """(source MAC, source IP, seq) of an Ethernet/IPv4/UDP frame to ``port``, else None."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != socket.IPPROTO_UDP:
        return None
    udp = 14 + (frame[14] & 0x0F) * 4
    if int.from_bytes(frame[udp + 2:udp + 4], "big") != port:
        return None
    seq = parse_seq(frame[udp + 8:])
    if seq is None:
        return None
    return frame[6:12].hex(":"), socket.inet_ntoa(frame[26:30]), seq


async def _handle_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    source = writer.get_extra_info("peername")[0]
    try:
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
        body = f"{source}\n".encode()
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
            ConnectionError):
        pass  # a client that never finished its request gets no answer
    finally:
        writer.close()


class _UdpEcho:
    """UDP side on a wildcard socket that answers from the address each datagram was sent to.

    With a plain wildcard socket the kernel would pick the reply's source by
    route (the router's own address), and NAT on the way back would not match
    the flow; IP_PKTINFO tells us, and sets, the local address per datagram.
    """

    def __init__(self, sock: socket.socket, log: TextIO | None) -> None:
        self.sock = sock
        self.log = log

    def readable(self) -> None:
        while True:
            try:
                data, ancdata, _flags, addr = self.sock.recvmsg(2048, socket.CMSG_SPACE(12))
            except BlockingIOError:
                return
            seq = parse_seq(data)
            if seq is None:
                continue
            record = UdpRecord(seq, addr[0], time.monotonic())
            if self.log is not None:
                self.log.write(record.line())
            local = next((cdata[8:12] for level, kind, cdata in ancdata
                          if level == socket.IPPROTO_IP and kind == IP_PKTINFO), None)
            anc = ([(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("=i4s4s", 0, local, bytes(4)))]
                   if local else [])
            try:
                self.sock.sendmsg([f"{seq} {addr[0]}\n".encode()], anc, 0, addr)
            except OSError:
                pass  # the sender's path is down: the record above is what the benchmark reads


class _L2Tap:
    """Which MAC delivered each datagram, seen by a packet socket on every interface.

    The benchmark reads it to catch two nodes answering for one VIP at once:
    VIP-sourced datagrams arriving interleaved from two MACs.
    """

    def __init__(self, sock: socket.socket, port: int, log: TextIO) -> None:
        self.sock, self.port, self.log = sock, port, log

    def readable(self) -> None:
        while True:
            try:
                frame, addr = self.sock.recvfrom(2048)
            except BlockingIOError:
                return
            parsed = None if addr[2] == socket.PACKET_OUTGOING else parse_udp_frame(frame, self.port)
            if parsed is not None:
                mac, source, seq = parsed
                self.log.write(UdpRecord(seq, source, time.monotonic(), mac).line())


async def serve(bind: str = "0.0.0.0", http_port: int = HTTP_PORT, udp_port: int = UDP_PORT,
                udp_log: str | None = None, l2_log: str | None = None) -> None:
    """Run until cancelled. Binds the wildcard by default: addresses may appear later."""
    log = open(udp_log, "a", buffering=1) if udp_log else None
    l2 = open(l2_log, "a", buffering=1) if l2_log else None
    server = await asyncio.start_server(_handle_http, bind, http_port, limit=MAX_REQUEST,
                                        reuse_address=True)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    udp.setblocking(False)
    udp.bind((bind, udp_port))
    loop = asyncio.get_running_loop()
    loop.add_reader(udp.fileno(), _UdpEcho(udp, log).readable)
    tap = None
    if l2 is not None:
        tap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
        tap.setblocking(False)
        loop.add_reader(tap.fileno(), _L2Tap(tap, udp_port, l2).readable)
    try:
        async with server:
            await server.serve_forever()
    finally:
        for sock in (udp, tap):
            if sock is not None:
                loop.remove_reader(sock.fileno())
                sock.close()
        for f in (log, l2):
            if f is not None:
                f.close()


def get(url: str, timeout: float = 2.0) -> str:
    """GET ``url`` and return the body; OSError/HTTPException on failure or a non-200 status."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or HTTP_PORT, timeout=timeout)
    try:
        conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
    finally:
        conn.close()
    if resp.status != 200:
        raise http.client.HTTPException(f"HTTP {resp.status} from {url}: {body.strip()[:200]}")
    return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vipmgr.lab.echo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the echo service")
    p_serve.add_argument("--bind", default="0.0.0.0")
    p_serve.add_argument("--http-port", type=int, default=HTTP_PORT)
    p_serve.add_argument("--udp-port", type=int, default=UDP_PORT)
    p_serve.add_argument("--udp-log", help="append one line per UDP datagram to this file")
    p_serve.add_argument("--l2-log", help="also log each datagram's source MAC (packet socket)")
    p_get = sub.add_parser("get", help="HTTP GET a URL and print the body (exit 1 on failure)")
    p_get.add_argument("url")
    p_get.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    if args.command == "serve":
        try:
            asyncio.run(serve(args.bind, args.http_port, args.udp_port, args.udp_log,
                              args.l2_log))
        except KeyboardInterrupt:
            pass
        return 0
    try:
        sys.stdout.write(get(args.url, args.timeout))
    except (OSError, http.client.HTTPException) as exc:
        print(f"GET {args.url}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
