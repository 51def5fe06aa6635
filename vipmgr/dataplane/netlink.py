"""Netlink framing for vipmgr's hand-built kernel paths (rtnl, nftarm, ctsync).

Three paths speak netlink without a library because the library's cost grows
with what the kernel holds (the figures are in docs/dataplane.md): the return
routes (``rtnl``), the dead-man refresh and the counter read (``nftarm``), and
conntrack replication (``ctsync``). They share this module: the message header,
attributes (4-byte aligned, nested), iteration over a receive buffer, the
decoding of ``NLMSG_ERROR``, and a socket that numbers its requests, drains
the kernel's error answers and walks a dump.

Netlink headers are host-endian; what a message carries after them is the
family's business (nf_tables and ctnetlink values are big-endian).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Iterator

from vipmgr.dataplane.kernel import KernelError

NETLINK_ROUTE, NETLINK_NETFILTER = 0, 12
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x100, 0x200, 0x400, 0x300
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF  # drops NLA_F_NESTED and NLA_F_NET_BYTEORDER
SO_RCVBUFFORCE = 33

HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, port id
ATTR = struct.Struct("=HH")  # nlattr: length, type
_ERROR = struct.Struct("=i")  # nlmsgerr.error: 0 (an ACK) or a negative errno
_NFGEN = struct.Struct("=BBH")  # nfgenmsg: family, version, resource id (big-endian)


def align(length: int) -> int:
    """``length`` rounded up to netlink's 4-byte alignment."""
    return (length + 3) & ~3


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """One whole netlink message: the header, then ``body``."""
    return HEADER.pack(HEADER.size + len(body), kind, flags, seq, 0) + body


def attr(kind: int, payload: bytes) -> bytes:
    """One attribute; the length field counts the payload, the padding follows it."""
    return ATTR.pack(ATTR.size + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)


def nested(kind: int, *attrs: bytes) -> bytes:
    """An attribute holding ``attrs``, flagged as nested."""
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def nfgenmsg(family: int, res_id: int = 0) -> bytes:
    """The nfnetlink header every nf_tables and ctnetlink message starts with."""
    return _NFGEN.pack(family, 0, socket.htons(res_id))


def messages(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """(type, flags, seq, offset of the header, end) of each message in ``data``.

    The body starts at ``offset + HEADER.size``. A truncated or zero-length header
    ends the walk (it would otherwise never advance)."""
    off, size = 0, len(data)
    while off + HEADER.size <= size:
        length, kind, flags, seq, _port = HEADER.unpack_from(data, off)
        if length < HEADER.size:
            return
        yield kind, flags, seq, off, off + length
        off += align(length)


def attrs(buf: bytes, off: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type without flags, payload start, payload end) of each attribute in ``buf[off:end]``."""
    while off + ATTR.size <= end:
        length, kind = ATTR.unpack_from(buf, off)
        if length < ATTR.size:
            return
        yield kind & NLA_TYPE_MASK, off + ATTR.size, off + length
        off += align(length)


def attr_map(buf: bytes, off: int, end: int) -> dict[int, bytes]:
    """The attributes in ``buf[off:end]`` by type (the last one wins)."""
    return {kind: buf[a:b] for kind, a, b in attrs(buf, off, end)}


def error_code(data: bytes, off: int) -> int:
    """The errno an ``NLMSG_ERROR`` message at ``off`` reports; 0 for an ACK."""
    return -_ERROR.unpack_from(data, off + HEADER.size)[0]


class NetlinkError(KernelError):
    """The kernel refused a request: ``errno`` says why."""

    def __init__(self, what: str, code: int) -> None:
        super().__init__(f"{what}: {os.strerror(code)}")
        self.errno = code


class NetlinkSocket:
    """A raw netlink socket that numbers its messages; open and use it on one thread
    (of the namespace whose kernel it speaks to).

    ``groups`` subscribes to multicast groups (a bit mask); ``rcvbuf`` asks for a
    receive buffer of that size (forced with CAP_NET_ADMIN, else what the limit
    allows); ``timeout`` (s) bounds every blocking receive."""

    def __init__(self, protocol: int, groups: int = 0, rcvbuf: int = 0,
                 timeout: float | None = None) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        try:
            if rcvbuf:
                try:
                    self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
                except PermissionError:
                    self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self._sock.bind((0, groups))
        except OSError:
            self._sock.close()
            raise
        self._timeout = timeout
        self._sock.settimeout(timeout)
        self._seq = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def request(self, kind: int, flags: int, body: bytes) -> bytes:
        """A message with the next sequence number (``seq`` after this call)."""
        return message(kind, flags, self.next_seq(), body)

    @property
    def seq(self) -> int:
        """The sequence number of the last message built."""
        return self._seq

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, data: bytes) -> None:
        self._sock.send(data)

    def recv_nowait(self) -> bytes | None:
        """One queued receive buffer, or None when nothing is queued; never waits.

        (``MSG_DONTWAIT`` alone is not enough: on a socket with a timeout Python polls
        for the whole timeout before it calls ``recv``.)"""
        self._sock.setblocking(False)
        try:
            return self._sock.recv(65536)
        except BlockingIOError:
            return None
        finally:
            self._sock.settimeout(self._timeout)

    def drain_errors(self, what: str) -> list[tuple[int, int]]:
        """(seq, errno) of every failure answer queued right now, without blocking.

        Requests sent without ``NLM_F_ACK`` are answered only when they fail, and
        rtnetlink and nfnetlink answer while ``send()`` runs: after a send, this
        collects exactly its failures. An overrun receive buffer (lost answers)
        raises KernelError naming ``what``."""
        out = []
        while True:
            try:
                data = self.recv_nowait()
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    raise KernelError(f"{what}: netlink receive buffer overrun") from exc
                raise
            if data is None:
                return out
            for kind, _flags, seq, off, _end in messages(data):
                if kind == NLMSG_ERROR:
                    code = error_code(data, off)
                    if code:
                        out.append((seq, code))

    def dump_messages(self, kind: int, body: bytes, what: str
             ) -> Iterator[tuple[int, bytes, int, int]]:
        """Send a dump request; (type, buffer, offset, end) of each message answering it.

        Raises NetlinkError when the kernel refuses the dump, KernelError when it
        does not answer within the timeout."""
        self.send(self.request(kind, NLM_F_REQUEST | NLM_F_DUMP, body))
        seq = self._seq
        while True:
            try:
                data = self._sock.recv(1 << 20)
            except socket.timeout as exc:
                raise KernelError(f"{what}: no answer from the kernel") from exc
            for msg_kind, _flags, msg_seq, off, end in messages(data):
                if msg_seq != seq:
                    continue
                if msg_kind == NLMSG_DONE:
                    return
                if msg_kind == NLMSG_ERROR:
                    raise NetlinkError(what, error_code(data, off))
                yield msg_kind, data, off, end

    def close(self) -> None:
        self._sock.close()
