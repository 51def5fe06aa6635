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

import os
import socket
import struct
from typing import Iterable

from vipmgr.dataplane import layout as L
from vipmgr.dataplane import netlink as nl
from vipmgr.dataplane.kernel import KernelError

RouteKey = tuple[int, str]  # (table, dst cidr)
RouteVal = tuple[str, str | None]  # ("unicast", via) | ("blackhole", None)
RTN = {"unicast": 1, "blackhole": 6}
RTN_NAME = {v: k for k, v in RTN.items()}

RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTA_DST, RTA_GATEWAY, RTA_TABLE = 1, 5, 15
CHUNK = 256  # messages per send(): errors of one chunk always fit the receive buffer
_RTMSG = struct.Struct("=BBBBBBBBI")


class RouteSocket(nl.NetlinkSocket):
    """A NETLINK_ROUTE socket; open and use it on the namespace thread."""

    def __init__(self) -> None:
        super().__init__(nl.NETLINK_ROUTE)

    def _route(self, op: str, key: RouteKey, val: RouteVal) -> bytes:
        table, dst = key
        kind, via = val
        addr, plen = dst.split("/")
        body = _RTMSG.pack(socket.AF_INET, int(plen), 0, 0, 0, L.RT_PROTO, 0, RTN[kind], 0)
        if int(plen):
            body += nl.attr(RTA_DST, socket.inet_aton(addr))
        if op == "replace" and kind == "unicast" and via:
            body += nl.attr(RTA_GATEWAY, socket.inet_aton(via))
        body += nl.attr(RTA_TABLE, struct.pack("=I", table))
        if op == "replace":
            return self.request(RTM_NEWROUTE,
                                nl.NLM_F_REQUEST | nl.NLM_F_CREATE | nl.NLM_F_REPLACE, body)
        return self.request(RTM_DELROUTE, nl.NLM_F_REQUEST, body)

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
                by_seq[self.seq] = (key, val)
            self.send(b"".join(msgs))
            for seq, code in self.drain_errors("route changes"):
                if seq in by_seq and not first_error:
                    table, dst = by_seq[seq][0]
                    first_error = f"route {op} {dst} table {table}: {os.strerror(code)}"
        if first_error:
            raise KernelError(first_error)
        return len(items)

    def dump(self) -> dict[RouteKey, RouteVal]:
        """Every IPv4 route in vipmgr's tables (``layout.OWN_TABLES``)."""
        body = _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
        routes: dict[RouteKey, RouteVal] = {}
        for kind, data, off, end in self.dump_messages(RTM_GETROUTE, body, "route dump"):
            if kind == RTM_NEWROUTE:
                _parse_route(data, off + nl.HEADER.size, end, routes)
        return routes


def _parse_route(data: bytes, off: int, end: int, into: dict[RouteKey, RouteVal]) -> None:
    _, dst_len, _, _, table, _, _, rtype, _ = _RTMSG.unpack_from(data, off)
    dst, via = "0.0.0.0", None
    for kind, a, b in nl.attrs(data, off + _RTMSG.size, end):
        if kind == RTA_TABLE:
            (table,) = struct.unpack_from("=I", data, a)
        elif kind == RTA_DST:
            dst = socket.inet_ntoa(data[a:b])
        elif kind == RTA_GATEWAY:
            via = socket.inet_ntoa(data[a:b])
    if table in L.OWN_TABLES:
        into[(table, f"{dst}/{dst_len}")] = (RTN_NAME.get(rtype, str(rtype)), via)
