"""Raw-socket heartbeat transport: one per interface, driven by asyncio.

The socket is ``AF_INET/SOCK_RAW/112``: the kernel hands it protocol-112
datagrams only, so the agent wakes for nothing else (that is the kernel filter;
a BPF program on top would only hide packets we want to count as rejects).
``SO_BINDTODEVICE`` pins it to the interface; the encoder writes the IP header
itself (``IP_HDRINCL``), so TTL 255 is in the bytes (no IP_TTL/IP_MULTICAST_TTL
needed) and the bytes are exactly what a pcap shows. The source address is the
interface's primary IPv4, looked up per send unless given. It joins 224.0.0.18 on that interface, or sends a copy to each
configured unicast peer instead.

Usage by the agent::

    sock = open_vrrp_socket("eth1")                  # needs CAP_NET_RAW
    t = HeartbeatTransport(sock, "eth1", encoder, receiver, on_advert,
                           peers=None)               # or ["192.0.2.12", ...]
    t.start(loop)                                    # registers loop.add_reader
    t.send(adverts)                                  # every gateway's, from the advert timer
    ...
    t.close()

``on_advert(advert, src_ip, ifname)`` is called once per accepted advert (each
record of an accepted datagram, in order); rejects are counted in
``receiver.counters`` and, if given, reported to ``on_reject(reason, ifname)``
(for ``AgentMetrics.heartbeat_rejected``); send failures (interface down,
output dropped by a firewall) are counted in ``send_errors`` by errno name and
never raised, because a heartbeat timer must keep running.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import logging
import os
import socket
import struct
import threading
from collections import Counter
from typing import Callable, Sequence, TypeVar

from vipmgr.wire.codec import MAX_DATAGRAM, Encoder
from vipmgr.wire.message import VRRP_GROUP, VRRP_PROTO, Advert, Reject
from vipmgr.wire.receiver import Receiver

SIOCGIFADDR = 0x8915
RECV_BATCH = 64     # datagrams per wakeup, so a flood cannot starve the loop
CLONE_NEWNET = 0x40000000

OnAdvert = Callable[[Advert, str, str], None]
OnReject = Callable[[Reject, str], None]
T = TypeVar("T")
LOG = logging.getLogger("vipmgr.wire")


def interface_ipv4(sock: socket.socket, ifname: str) -> str:
    """The primary IPv4 address of ``ifname``, asked through ``sock`` so it is
    looked up in the socket's network namespace, not the calling thread's."""
    res = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("256s", ifname.encode()[:15]))
    return socket.inet_ntoa(res[20:24])


def open_vrrp_socket(ifname: str, *, multicast: bool = True) -> socket.socket:
    """A non-blocking raw protocol-112 socket on ``ifname`` (joined to 224.0.0.18 if multicast)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, VRRP_PROTO)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        if multicast:
            ifindex = socket.if_nametoindex(ifname)
            mreqn = struct.pack("4s4si", socket.inet_aton(VRRP_GROUP), b"\0" * 4, ifindex)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def in_netns(netns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a thread that has entered network namespace ``netns``.

    Sockets keep the namespace they were created in, so tests and the lab can
    open one transport per namespace inside a single process and event loop.
    """
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns({netns}): {os.strerror(err)}")
        finally:
            os.close(fd)
        try:
            result.append(fn())
        except BaseException as exc:  # re-raised in the caller's thread below
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"netns-{netns}")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    if not result:
        raise RuntimeError(f"could not enter netns {netns}")
    return result[0]


class HeartbeatTransport:
    """Sends and receives heartbeats on one interface."""

    def __init__(self, sock: socket.socket, ifname: str, encoder: Encoder, receiver: Receiver,
                 on_advert: OnAdvert, *, peers: Sequence[str] | None = None,
                 src_ip: str | None = None, on_reject: OnReject | None = None):
        self.sock = sock
        self.ifname = ifname
        self.encoder = encoder
        self.receiver = receiver
        self.on_advert = on_advert
        self.on_reject = on_reject
        self.destinations = tuple(peers) if peers else (VRRP_GROUP,)
        self.src_ip = src_ip
        self.sent = 0
        self.send_errors: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buf = bytearray(MAX_DATAGRAM + 1)   # one more: an oversized datagram shows

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self._readable)

    def send(self, adverts: Sequence[Advert]) -> int:
        """Send ``adverts`` (one node's, one stamp) to every destination; returns how many
        datagrams left. Encoded once per destination: the address is in the checksum."""
        src = self.src_ip or self._source()
        if src is None:
            return 0
        ok = 0
        for dst in self.destinations:
            for datagram in self.encoder.encode(adverts, src, dst):
                try:
                    self.sock.sendto(datagram, (dst, 0))
                    ok += 1
                except OSError as exc:
                    self.send_errors[errno.errorcode.get(exc.errno, str(exc.errno))] += 1
        self.sent += ok
        return ok

    def _source(self) -> str | None:
        """The interface address, looked up per send: it may be added after start."""
        try:
            return interface_ipv4(self.sock, self.ifname)
        except OSError as exc:
            self.send_errors[f"no_source_{errno.errorcode.get(exc.errno, exc.errno)}"] += 1
            return None

    def _readable(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        view = memoryview(self._buf)
        for _ in range(RECV_BATCH):
            try:
                n = self.sock.recv_into(self._buf)
            except (BlockingIOError, InterruptedError):
                return
            result = self.receiver.process(view[:n], now)
            if not isinstance(result, Reject):
                for advert in result.adverts:
                    self.on_advert(advert, result.src, self.ifname)
                continue
            if line := self.receiver.reject_log.note(view[:n], result, now):
                LOG.warning(f"{line} on {self.ifname}", extra={"interface": self.ifname})
            if self.on_reject is not None:
                self.on_reject(result, self.ifname)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._loop = None
        self.sock.close()
