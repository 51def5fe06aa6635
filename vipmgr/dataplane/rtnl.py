"""vipmgr's route tables over raw rtnetlink: pipelined changes and one dump.

A gateway holds one return route per selected VM (10,000 and more). Sent one
by one with a wait for each ACK (pyroute2's ``route()``), they cost ~0.3 ms
each; parsed by pyroute2, a dump of them holds the GIL long enough to stall
the other threads (the agent's event loop, the dead-man refresh) for 100 ms
and more. Here the messages are packed with ``struct``, sent ``CHUNK`` at a
time in one ``send()`` each, without ACK requests: rtnetlink processes a
send synchronously and answers only failures, so draining the socket after
each chunk collects exactly the errors.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Iterable

from vipmgr.dataplane import layout as L
from vipmgr.dataplane.kernel import KernelError

RouteKey = tuple[int, str]  # (table, dst cidr)
RouteVal = tuple[str, str | None]  # ("unicast", via) | ("blackhole", None)
RTN = {"unicast": 1, "blackhole": 6}
RTN_NAME = {v: k for k, v in RTN.items()}

NETLINK_ROUTE = 0
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLM_F_REQUEST, NLM_F_REPLACE, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x100, 0x400, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTA_DST, RTA_GATEWAY, RTA_TABLE = 1, 5, 15
CHUNK = 256  # messages per send(): errors of one chunk always fit the receive buffer
_HDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")


def _attr(kind: int, payload: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(payload), kind) + payload  # our payloads are 4-aligned


class RouteSocket:
    """A NETLINK_ROUTE socket; open and use it on the namespace thread."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._seq = 0

    def _message(self, kind: int, flags: int, body: bytes) -> bytes:
        self._seq += 1
        return _HDR.pack(16 + len(body), kind, flags, self._seq, 0) + body

    def _route(self, op: str, key: RouteKey, val: RouteVal) -> bytes:
        table, dst = key
        kind, via = val
        addr, plen = dst.split("/")
        body = _RTMSG.pack(socket.AF_INET, int(plen), 0, 0, 0, L.RT_PROTO, 0, RTN[kind], 0)
        if int(plen):
            body += _attr(RTA_DST, socket.inet_aton(addr))
        if op == "replace" and kind == "unicast" and via:
            body += _attr(RTA_GATEWAY, socket.inet_aton(via))
        body += _attr(RTA_TABLE, struct.pack("=I", table))
        if op == "replace":
            return self._message(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE, body)
        return self._message(RTM_DELROUTE, NLM_F_REQUEST, body)

    def apply(self, op: str, routes: Iterable[tuple[RouteKey, RouteVal]]) -> int:
        """``replace`` or ``del`` every route; the count. Raises KernelError naming the
        first route the kernel refused (the others are applied)."""
        items = list(routes)
        first_error = ""
        for start in range(0, len(items), CHUNK):
            chunk = items[start:start + CHUNK]
            by_seq = {}
            msgs = []
            for key, val in chunk:
                msgs.append(self._route(op, key, val))
                by_seq[self._seq] = (key, val)
            self._sock.send(b"".join(msgs))
            for seq, code in self._drain_errors():
                if seq in by_seq and not first_error:
                    table, dst = by_seq[seq][0]
                    first_error = f"route {op} {dst} table {table}: {os.strerror(code)}"
        if first_error:
            raise KernelError(first_error)
        return len(items)

    def _drain_errors(self) -> list[tuple[int, int]]:
        out = []
        while True:
            try:
                data = self._sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    raise KernelError("route changes: netlink receive buffer overrun") from exc
                raise
            for kind, seq, payload in _messages(data):
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", payload)
                    if code:
                        out.append((seq, -code))

    def close(self) -> None:
        self._sock.close()

    def dump(self) -> dict[RouteKey, RouteVal]:
        """Every IPv4 route in vipmgr's tables (``layout.OWN_TABLES``)."""
        body = _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
        self._sock.send(self._message(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, body))
        seq = self._seq
        routes: dict[RouteKey, RouteVal] = {}
        while True:
            for kind, msg_seq, payload in _messages(self._sock.recv(1 << 20)):
                if msg_seq != seq:
                    continue
                if kind == NLMSG_DONE:
                    return routes
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", payload)
                    raise KernelError(f"route dump: {os.strerror(-code)}")
                if kind == RTM_NEWROUTE:
                    _parse_route(payload, routes)


def _messages(data: bytes):
    offset = 0
    while offset + 16 <= len(data):
        length, kind, _, seq, _ = _HDR.unpack_from(data, offset)
        yield kind, seq, data[offset + 16:offset + length]
        offset += (length + 3) & ~3


def _parse_route(payload: bytes, into: dict[RouteKey, RouteVal]) -> None:
    _, dst_len, _, _, table, _, _, rtype, _ = _RTMSG.unpack_from(payload)
    dst, via = "0.0.0.0", None
    offset = _RTMSG.size
    while offset + 4 <= len(payload):
        length, kind = struct.unpack_from("=HH", payload, offset)
        value = payload[offset + 4:offset + length]
        if kind == RTA_TABLE:
            (table,) = struct.unpack("=I", value)
        elif kind == RTA_DST:
            dst = socket.inet_ntoa(value)
        elif kind == RTA_GATEWAY:
            via = socket.inet_ntoa(value)
        offset += (length + 3) & ~3
    if table in L.OWN_TABLES:
        into[(table, f"{dst}/{dst_len}")] = (RTN_NAME.get(rtype, str(rtype)), via)
