"""Heartbeat datagrams ⇄ :class:`Advert`: pure functions and a caching encoder.

A heartbeat is one IPv4 datagram, protocol 112, TTL 255, carrying the adverts
(records) of every gateway of one sending node::

    IPv4 header (20 bytes, no options)
    VRRPv3 header (RFC 5798): version 3, type 1, VRID and priority of the
        first record, address count, max advert interval (the smallest record
        interval, centiseconds, rounded up), checksum
    address list: the egress IPs of the records that have one, in record order
    vipmgr trailer (network byte order):
        "VPMG" | trailer version (3) | reserved (0) | auth scheme | record count
        | sequence (u64) | stamp µs (u64) | node (u8 length + UTF-8)
        | record count × { VRID | priority | flags | heard count | epoch (u64)
                           | interval ms (u16) | echo stamp µs (u64)
                           | gateway (u8 length + UTF-8)
                           | echo node (u8 length + UTF-8; length 0 = none)
                           | heard count × (u8 length + UTF-8) }
        | HMAC-SHA256 (32 bytes, only when auth scheme = 1)

A record whose flags say "has egress IP" takes the next address of the list,
so tcpdump and tshark show every gateway's VIP. The VRRP checksum covers the
whole IP payload (header, addresses, trailer, HMAC) plus the IPv4
pseudo-header, so tshark reports it as good. The HMAC covers the same bytes
with the checksum field zeroed, so the checksum can be computed last. The
encoder emits the whole IP header (the transport sends with ``IP_HDRINCL``) so
the bytes in a pcap are exactly what went on the wire.

Speed: building through scapy costs ~0.6 ms a packet (and importing it ~0.5 s
and ~34 MB, so the agent does not). Each record's static part (its egress IP
and its name block: gateway, echo node, heard) is built once per advert shape;
per datagram the work is struct packing (the VRRP header, the trailer, each
record's priority, flags, epoch and echo stamp), one HMAC and two checksums.
Building and parsing are struct-based; tests cross-check both against scapy's
VRRPv3 layer and tshark.
"""

from __future__ import annotations

import hmac
import socket
import struct
import time
from array import array
from dataclasses import dataclass, field
from typing import Sequence

from vipmgr.wire.keys import HMAC_LEN, KeyRing
from vipmgr.wire.message import (HEARD_MAX, NAME_MAX, RECORDS_MAX, STAMP_MAX, VRRP_GROUP,
                                 VRRP_PROTO, VRRP_TTL, Advert, Frame, Reject, Role)

MAGIC = b"VPMG"
TRAILER_VERSION = 3     # 3: one datagram per node, one record per gateway
AUTH_NONE, AUTH_HMAC_SHA256 = 0, 1
FLAG_ACTIVE, FLAG_HEALTHY, FLAG_ETCD, FLAG_EGRESS_IP = 0x01, 0x02, 0x04, 0x08
FLAGS_KNOWN = FLAG_ACTIVE | FLAG_HEALTHY | FLAG_ETCD | FLAG_EGRESS_IP

IP_HDR = struct.Struct(">BBHHHBBH4s4s")
VRRP_HDR = struct.Struct(">BBBBHH")
TRAILER = struct.Struct(">4sBBBBQQ")    # magic, version, reserved, auth, records, seq, stamp
RECORD = struct.Struct(">BBBBQHQ")      # vrid, priority, flags, heard, epoch, interval, echo
IP_HDR_LEN = IP_HDR.size
VRRP_HDR_LEN = VRRP_HDR.size
MAX_DATAGRAM = 1500     # one Ethernet MTU: heartbeats are never fragmented
IP_TOS_NETCONTROL = 0xC0
IP_FLAG_DF = 0x4000
ADV_CS_MAX = 0x0FFF
SEQ_MASK = (1 << 64) - 1
_SHAPE_CACHE_MAX = 4096
STAMP_US_MAX = STAMP_MAX * 1_000_000    # the decoder rejects larger stamps: they could not be echoed


def inet_checksum(data: bytes | bytearray) -> bytes:
    """RFC 1071 checksum as the two bytes to put on the wire.

    Summing native-order 16-bit words and storing the result in native order
    gives the right wire bytes on either endianness (RFC 1071 §2(B)).
    """
    if len(data) % 2:
        data = bytes(data) + b"\0"
    s = sum(array("H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return struct.pack("=H", ~s & 0xFFFF)


def _pseudo_header(src: bytes, dst: bytes, length: int) -> bytes:
    return src + dst + struct.pack(">BBH", 0, VRRP_PROTO, length)


def _adv_centiseconds(interval_ms: int) -> int:
    return max(1, min(ADV_CS_MAX, -(-interval_ms // 10)))


def _pack_name(name: str) -> bytes:
    raw = name.encode()
    if not 0 < len(raw) <= NAME_MAX:
        raise ValueError(f"name {name!r} must be 1..{NAME_MAX} bytes of UTF-8")
    return bytes((len(raw),)) + raw


def _stamp_us(stamp: float) -> int:
    """Whole microseconds, rounded down, so a decoded stamp is never later than the sent
    one (the core's echo arithmetic stays on the safe side) and re-encodes to itself."""
    if not 0.0 <= stamp < STAMP_MAX:     # also refuses NaN
        raise ValueError(f"stamp {stamp!r} outside 0..{STAMP_MAX} s")
    us = int(stamp * 1_000_000)          # the product may round across an integer: fix up
    if us / 1_000_000 > stamp:
        return us - 1
    return us + 1 if (us + 1) / 1_000_000 <= stamp else us


def _vrrp_header(vrid: int, priority: int, interval_ms: int, addrs: bytes) -> bytes:
    """The VRRPv3 header (RFC 5798 5.1: version 3, type 1, checksum 0, reserved 0 + max
    advert interval) followed by the address list ``addrs`` (packed IPv4 addresses)."""
    return VRRP_HDR.pack(0x31, vrid, priority, len(addrs) // 4, _adv_centiseconds(interval_ms),
                         0) + addrs


def _validate(advert: Advert) -> None:
    if not 1 <= advert.vrid <= 255:
        raise ValueError(f"vrid {advert.vrid} outside 1..255")
    if not 0 <= advert.priority <= 255:
        raise ValueError(f"priority {advert.priority} outside 0..255")
    if not 0 < advert.interval_ms <= 0xFFFF:
        raise ValueError(f"interval_ms {advert.interval_ms} outside 1..65535")
    if not 0 <= advert.epoch < 1 << 64:
        raise ValueError(f"epoch {advert.epoch} does not fit 64 bits")
    if len(advert.heard) > HEARD_MAX:
        raise ValueError(f"at most {HEARD_MAX} heard peers per advert")


@dataclass(slots=True)
class _Part:
    """One datagram being filled by the split: its records and what its header needs."""

    first: Advert
    size: int
    interval_ms: int = 0xFFFF
    addrs: list[bytes] = field(default_factory=list)
    records: list[bytes] = field(default_factory=list)

    def add(self, advert: Advert, addr: bytes, record: bytes, cost: int) -> None:
        self.interval_ms = min(self.interval_ms, advert.interval_ms)
        self.addrs.append(addr)
        self.records.append(record)
        self.size += cost


class Encoder:
    """Builds heartbeat datagrams for one sender; owns its sequence counter.

    The sequence starts at the wall clock in nanoseconds, so a restarted sender
    continues above anything it sent before (receivers keep one replay window
    per sender node), and advances by one per datagram.
    """

    def __init__(self, signing_key: bytes | None = None, *, seq_start: int | None = None):
        self.signing_key = signing_key
        self.seq = time.time_ns() if seq_start is None else seq_start
        self._shapes: dict[tuple, tuple[bytes, bytes]] = {}
        self._node = ("", b"")      # the sender's name and its packed form (one node's encoder)

    def _shape(self, a: Advert) -> tuple[bytes, bytes]:
        """A record's static part, (egress address, name block), validated once per shape:
        echo_node changes only when the sender's view of the active does, so it is cached too."""
        key = (a.gateway, a.vrid, a.interval_ms, a.egress_ip, a.echo_node, a.heard)
        shape = self._shapes.get(key)
        if shape is None:
            _validate(a)
            echo = b"\0" if a.echo_node is None else _pack_name(a.echo_node)
            names = _pack_name(a.gateway) + echo + b"".join(_pack_name(n) for n in a.heard)
            shape = (socket.inet_aton(a.egress_ip) if a.egress_ip else b"", names)
            if len(self._shapes) >= _SHAPE_CACHE_MAX:
                self._shapes.clear()
            self._shapes[key] = shape
        return shape

    def _record(self, a: Advert) -> tuple[bytes, bytes]:
        """(egress address, record bytes) of one advert."""
        addr, names = self._shape(a)
        if not 0 <= a.priority <= 255 or not 0 <= a.epoch < 1 << 64:
            _validate(a)
        flags = ((FLAG_ACTIVE if a.role is Role.ACTIVE else 0)
                 | (FLAG_HEALTHY if a.healthy else 0)
                 | (FLAG_ETCD if a.etcd_reachable else 0)
                 | (FLAG_EGRESS_IP if addr else 0))
        return addr, RECORD.pack(a.vrid, a.priority, flags, len(a.heard), a.epoch, a.interval_ms,
                                 _stamp_us(a.echo_stamp)) + names

    def encode(self, adverts: Sequence[Advert], src: str, dst: str = VRRP_GROUP) -> list[bytes]:
        """The full IPv4 datagrams carrying ``adverts`` (one node's, one stamp) from ``src``
        to ``dst``, each with its own sequence number.

        Records keep the given order and fill datagrams greedily: the next record starts
        a new datagram when it would push this one past MAX_DATAGRAM bytes or RECORDS_MAX
        records. Everything is validated before a sequence number is taken.
        """
        if not adverts:
            raise ValueError("no advert to encode")
        node, stamp = adverts[0].node, adverts[0].stamp
        if node != self._node[0]:
            self._node = (node, _pack_name(node))
        stamp_us = _stamp_us(stamp)
        fixed = (IP_HDR_LEN + VRRP_HDR_LEN + TRAILER.size + len(self._node[1])
                 + (HMAC_LEN if self.signing_key else 0))
        parts: list[_Part] = []
        gateways: set[str] = set()
        for a in adverts:
            if a.node != node or a.stamp != stamp:
                raise ValueError("adverts encoded together must share node and stamp")
            if a.gateway in gateways:
                raise ValueError(f"gateway {a.gateway!r} twice")
            gateways.add(a.gateway)
            addr, record = self._record(a)
            cost = len(addr) + len(record)
            if fixed + cost > MAX_DATAGRAM:
                raise ValueError(f"the advert for {a.gateway!r} alone needs {fixed + cost} "
                                 f"bytes, more than a datagram ({MAX_DATAGRAM})")
            part = parts[-1] if parts else None
            if (part is None or part.size + cost > MAX_DATAGRAM
                    or len(part.records) >= RECORDS_MAX):
                part = _Part(a, fixed)
                parts.append(part)
            part.add(a, addr, record, cost)
        s, d = socket.inet_aton(src), socket.inet_aton(dst)
        return [self._datagram(part, stamp_us, s, d) for part in parts]

    def _datagram(self, part: _Part, stamp_us: int, src: bytes, dst: bytes) -> bytes:
        seq = self.seq
        self.seq = (seq + 1) & SEQ_MASK
        auth = AUTH_HMAC_SHA256 if self.signing_key else AUTH_NONE
        body = bytearray(_vrrp_header(part.first.vrid, part.first.priority, part.interval_ms,
                                      b"".join(part.addrs)))
        body += TRAILER.pack(MAGIC, TRAILER_VERSION, 0, auth, len(part.records), seq, stamp_us)
        body += self._node[1]
        body += b"".join(part.records)
        if self.signing_key:
            body += hmac.digest(self.signing_key, body, "sha256")
        body[6:8] = inet_checksum(_pseudo_header(src, dst, len(body)) + body)
        ip = bytearray(IP_HDR.pack(0x45, IP_TOS_NETCONTROL, IP_HDR_LEN + len(body),
                                   (seq & 0xFFFF) or 1, IP_FLAG_DF, VRRP_TTL, VRRP_PROTO, 0,
                                   src, dst))
        ip[10:12] = inet_checksum(ip)
        return bytes(ip + body)


class _Bad(Exception):
    """Internal: parsing stopped with a reject reason (never leaves this module)."""

    def __init__(self, reason: Reject):
        self.reason = reason


def _name(buf: bytes, off: int, end: int, optional: bool = False) -> tuple[str | None, int]:
    """A length-prefixed UTF-8 name of 1..NAME_MAX bytes; length 0 is None where
    ``optional``, else malformed."""
    if off >= end:
        raise _Bad(Reject.TRUNCATED)
    n = buf[off]
    off += 1
    if n == 0 and optional:
        return None, off
    if n == 0 or n > NAME_MAX:
        raise _Bad(Reject.MALFORMED)
    if off + n > end:
        raise _Bad(Reject.TRUNCATED)
    try:
        return buf[off:off + n].decode(), off + n
    except UnicodeDecodeError:
        raise _Bad(Reject.MALFORMED) from None


def decode(datagram: bytes, keyring: KeyRing | None = None) -> Frame | Reject:
    """Parse an IPv4 heartbeat datagram; never raises on any input.

    Verify before believing: only the envelope (IP and VRRP headers, both
    checksums, the address count that says where the trailer starts, magic,
    trailer version, auth scheme) is read before the HMAC is checked against
    ``keyring``; every claim (record count, lengths, names, sequence, epochs,
    stamps) is read only from an authenticated datagram, so a tampered one is
    always ``auth``. Without ``keyring`` nothing is verified (tools and tests);
    the :class:`~vipmgr.wire.receiver.Receiver` always passes its own.
    """
    try:
        return _decode(bytes(datagram), keyring)
    except _Bad as bad:
        return bad.reason


def _decode(buf: bytes, keyring: KeyRing | None) -> Frame:
    if len(buf) < IP_HDR_LEN:
        raise _Bad(Reject.TRUNCATED)
    vihl, _tos, total, _id, _frag, ttl, proto, _ck, s, d = IP_HDR.unpack_from(buf)
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < IP_HDR_LEN or proto != VRRP_PROTO or total < ihl:
        raise _Bad(Reject.MALFORMED)
    if len(buf) < total:
        raise _Bad(Reject.TRUNCATED)
    if len(buf) > total or total > MAX_DATAGRAM:
        raise _Bad(Reject.MALFORMED)
    if ttl != VRRP_TTL:
        raise _Bad(Reject.TTL)
    if inet_checksum(buf[:ihl]) != b"\0\0":
        raise _Bad(Reject.CHECKSUM)
    body = buf[ihl:]
    if len(body) < VRRP_HDR_LEN:
        raise _Bad(Reject.TRUNCATED)
    vt, count = body[0], body[3]
    if vt >> 4 != 3:
        raise _Bad(Reject.VERSION)
    if vt & 0x0F != 1:
        raise _Bad(Reject.TYPE)
    if inet_checksum(_pseudo_header(s, d, len(body)) + body) != b"\0\0":
        raise _Bad(Reject.CHECKSUM)
    off = VRRP_HDR_LEN + 4 * count
    if len(body) < off:
        raise _Bad(Reject.TRUNCATED)
    if body[off:off + len(MAGIC)] != MAGIC:
        raise _Bad(Reject.FOREIGN)
    if len(body) < off + TRAILER.size:
        raise _Bad(Reject.TRUNCATED)
    tver, auth = body[off + 4], body[off + 6]
    if tver != TRAILER_VERSION:
        raise _Bad(Reject.VERSION)
    # --- authenticate: nothing below the envelope has been read yet ---
    key_index = None
    if auth == AUTH_HMAC_SHA256:
        end = len(body) - HMAC_LEN
        if end < off + TRAILER.size:
            raise _Bad(Reject.TRUNCATED)
        if keyring is not None and keyring.keys:
            key_index = keyring.verify(body[:6] + b"\0\0" + body[8:end], body[end:])
            if key_index is None:
                raise _Bad(Reject.AUTH)
    elif auth != AUTH_NONE or keyring is not None and keyring.require_auth:
        raise _Bad(Reject.AUTH)
    else:
        end = len(body)
    # --- believe: the claims of an authenticated (or deliberately unauthenticated) sender ---
    seq, adverts = _believe(body, off, end)
    return Frame(adverts=adverts, seq=seq, src=socket.inet_ntoa(s), dst=socket.inet_ntoa(d),
                 authenticated=auth == AUTH_HMAC_SHA256, key_index=key_index)


def _believe(body: bytes, off: int, end: int) -> tuple[int, tuple[Advert, ...]]:
    """The sequence and records of the VRRP message ``body`` whose trailer starts at
    ``off`` and whose signed part ends at ``end``; the VRRP header must say what the
    encoder derives from the records, so every accepted datagram has one encoding."""
    _m, _v, reserved, _auth, nrec, seq, stamp_us = TRAILER.unpack_from(body, off)
    if reserved or not nrec or stamp_us >= STAMP_US_MAX:
        raise _Bad(Reject.MALFORMED)
    node, pos = _name(body, off + TRAILER.size, end)
    stamp, naddr, count, interval_min = stamp_us / 1_000_000, 0, body[3], 0xFFFF
    adverts: list[Advert] = []
    gateways: set[str] = set()
    for _ in range(nrec):
        if pos + RECORD.size > end:
            raise _Bad(Reject.TRUNCATED)
        vrid, prio, flags, nheard, epoch, interval_ms, echo_us = RECORD.unpack_from(body, pos)
        if (not vrid or flags & ~FLAGS_KNOWN or nheard > HEARD_MAX or not interval_ms
                or echo_us >= STAMP_US_MAX):
            raise _Bad(Reject.MALFORMED)
        gateway, pos = _name(body, pos + RECORD.size, end)
        echo_node, pos = _name(body, pos, end, optional=True)
        heard = []
        for _ in range(nheard):
            peer, pos = _name(body, pos, end)
            heard.append(peer)
        egress_ip = None
        if flags & FLAG_EGRESS_IP:
            if naddr == count:
                raise _Bad(Reject.MALFORMED)
            at = VRRP_HDR_LEN + 4 * naddr
            egress_ip, naddr = socket.inet_ntoa(body[at:at + 4]), naddr + 1
        if gateway in gateways:
            raise _Bad(Reject.MALFORMED)
        gateways.add(gateway)
        interval_min = min(interval_min, interval_ms)
        adverts.append(Advert(node=node, gateway=gateway, vrid=vrid,
                              role=Role.ACTIVE if flags & FLAG_ACTIVE else Role.STANDBY,
                              epoch=epoch, priority=prio, interval_ms=interval_ms,
                              egress_ip=egress_ip, healthy=bool(flags & FLAG_HEALTHY),
                              etcd_reachable=bool(flags & FLAG_ETCD), heard=tuple(heard),
                              stamp=stamp, echo_node=echo_node, echo_stamp=echo_us / 1_000_000))
    first = adverts[0]
    if (pos != end or naddr != count or body[1] != first.vrid or body[2] != first.priority
            or body[4] << 8 | body[5] != _adv_centiseconds(interval_min)):
        raise _Bad(Reject.MALFORMED)
    return seq, tuple(adverts)
