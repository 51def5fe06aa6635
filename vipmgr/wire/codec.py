"""Heartbeat datagrams ⇄ :class:`Advert`: pure functions and a caching encoder.

A heartbeat is one IPv4 datagram, protocol 112, TTL 255::

    IPv4 header (20 bytes, no options)
    VRRPv3 header (RFC 5798): version 3, type 1, VRID, priority, count,
        max advert interval (centiseconds), checksum
    address list: the gateway's egress IP (0 or 1 entries)
    vipmgr trailer (network byte order):
        "VPMG" | trailer version (2) | flags | auth scheme | heard count
        | sequence (u64) | epoch (u64) | interval ms (u16)
        | stamp µs (u64) | echo stamp µs (u64)
        | node (u8 length + UTF-8) | gateway (u8 length + UTF-8)
        | echo node (u8 length + UTF-8; length 0 = none)
        | heard count × (u8 length + UTF-8)
        | HMAC-SHA256 (32 bytes, only when auth scheme = 1)

The VRRP checksum covers the whole IP payload (header, addresses, trailer,
HMAC) plus the IPv4 pseudo-header, so tshark reports it as good. The HMAC
covers the same bytes with the checksum field zeroed, so the checksum can be
computed last. The encoder emits the whole IP header (the transport sends with
``IP_HDRINCL``) so the bytes in a pcap are exactly what went on the wire.

Speed: building through scapy costs ~0.6 ms a packet (and importing it ~0.5 s
and ~34 MB, so the agent does not). Each distinct (VRID, interval, egress IP)
header and the name block (node, gateway, echo node, heard) are built once
per advert shape; the per-packet work is struct packing (priority, sequence,
epoch, stamps), one HMAC and a checksum over ~130 bytes. Building and
parsing are struct-based; tests cross-check both against scapy's VRRPv3
layer and tshark.
"""

from __future__ import annotations

import hmac
import socket
import struct
import time
from array import array

from vipmgr.wire.keys import HMAC_LEN, KeyRing
from vipmgr.wire.message import (HEARD_MAX, NAME_MAX, STAMP_MAX, VRRP_GROUP, VRRP_PROTO,
                                 VRRP_TTL, Advert, Frame, Reject, Role)

MAGIC = b"VPMG"
TRAILER_VERSION = 2     # 2: stamp, echo stamp, echo node
AUTH_NONE, AUTH_HMAC_SHA256 = 0, 1
FLAG_ACTIVE, FLAG_HEALTHY, FLAG_ETCD = 0x01, 0x02, 0x04

IP_HDR = struct.Struct(">BBHHHBBH4s4s")
VRRP_HDR = struct.Struct(">BBBBHH")
TRAILER = struct.Struct(">4sBBBBQQHQQ")
IP_HDR_LEN = IP_HDR.size
VRRP_HDR_LEN = VRRP_HDR.size
MAX_DATAGRAM = 1500     # one Ethernet MTU: heartbeats are never fragmented
IP_TOS_NETCONTROL = 0xC0
IP_FLAG_DF = 0x4000
ADV_CS_MAX = 0x0FFF
_TEMPLATE_CACHE_MAX = 1024
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


def _vrrp_template(vrid: int, interval_ms: int, egress_ip: str | None) -> bytes:
    """The VRRPv3 header (RFC 5798 5.1: version 3, type 1, VRID, priority and checksum 0,
    reserved 0 + max advert interval) and the address list."""
    addrs = socket.inet_aton(egress_ip) if egress_ip else b""
    return VRRP_HDR.pack(0x31, vrid, 0, len(addrs) // 4, _adv_centiseconds(interval_ms), 0) + addrs


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


class Encoder:
    """Builds heartbeat datagrams for one sender; owns its sequence counter.

    The sequence starts at the wall clock in nanoseconds, so a restarted sender
    continues above anything it sent before (receivers keep a replay window
    per sender and gateway), and advances by one per datagram.
    """

    def __init__(self, signing_key: bytes | None = None, *, seq_start: int | None = None):
        self.signing_key = signing_key
        self.seq = time.time_ns() if seq_start is None else seq_start
        self._static: dict[tuple, tuple[bytes, bytes]] = {}

    def _static_parts(self, a: Advert) -> tuple[bytes, bytes]:
        # echo_node changes only when the sender's view of the active does: cache it too
        key = (a.vrid, a.interval_ms, a.egress_ip, a.node, a.gateway, a.echo_node, a.heard)
        parts = self._static.get(key)
        if parts is None:
            _validate(a)
            echo = b"\0" if a.echo_node is None else _pack_name(a.echo_node)
            names = _pack_name(a.node) + _pack_name(a.gateway) + echo + b"".join(
                _pack_name(n) for n in a.heard)
            parts = (_vrrp_template(a.vrid, a.interval_ms, a.egress_ip), names)
            if len(self._static) >= _TEMPLATE_CACHE_MAX:
                self._static.clear()
            self._static[key] = parts
        return parts

    def encode(self, advert: Advert, src: str, dst: str = VRRP_GROUP) -> bytes:
        """The full IPv4 datagram for ``advert`` from ``src`` to ``dst``; takes a sequence number."""
        head, names = self._static_parts(advert)
        if not 0 <= advert.priority <= 255 or not 0 <= advert.epoch < 1 << 64:
            _validate(advert)
        stamp, echo_stamp = _stamp_us(advert.stamp), _stamp_us(advert.echo_stamp)
        seq = self.seq
        self.seq = (seq + 1) & 0xFFFFFFFFFFFFFFFF
        flags = ((FLAG_ACTIVE if advert.role is Role.ACTIVE else 0)
                 | (FLAG_HEALTHY if advert.healthy else 0)
                 | (FLAG_ETCD if advert.etcd_reachable else 0))
        auth = AUTH_HMAC_SHA256 if self.signing_key else AUTH_NONE
        body = bytearray(head)
        body[2] = advert.priority
        body += TRAILER.pack(MAGIC, TRAILER_VERSION, flags, auth, len(advert.heard),
                             seq, advert.epoch, advert.interval_ms, stamp, echo_stamp)
        body += names
        if self.signing_key:
            body += hmac.digest(self.signing_key, body, "sha256")
        if IP_HDR_LEN + len(body) > MAX_DATAGRAM:
            raise ValueError(f"advert of {len(body)} bytes does not fit one datagram")
        s, d = socket.inet_aton(src), socket.inet_aton(dst)
        body[6:8] = inet_checksum(_pseudo_header(s, d, len(body)) + body)
        ip = bytearray(IP_HDR.pack(0x45, IP_TOS_NETCONTROL, IP_HDR_LEN + len(body),
                                   (seq & 0xFFFF) or 1, IP_FLAG_DF, VRRP_TTL, VRRP_PROTO, 0, s, d))
        ip[10:12] = inet_checksum(ip)
        return bytes(ip + body)


class _Bad(Exception):
    """Internal: parsing stopped with a reject reason (never leaves this module)."""

    def __init__(self, reason: Reject):
        self.reason = reason


def _name(buf: bytes, off: int, end: int, optional: bool = False) -> tuple[str | None, int]:
    """A length-prefixed UTF-8 name; length 0 is None where ``optional``, else malformed."""
    if off >= end:
        raise _Bad(Reject.TRUNCATED)
    n = buf[off]
    off += 1
    if n == 0 and optional:
        return None, off
    if n == 0 or off + n > end:
        raise _Bad(Reject.MALFORMED if n == 0 else Reject.TRUNCATED)
    try:
        return buf[off:off + n].decode(), off + n
    except UnicodeDecodeError:
        raise _Bad(Reject.MALFORMED) from None


def decode(datagram: bytes, keyring: KeyRing | None = None) -> Frame | Reject:
    """Parse an IPv4 heartbeat datagram; never raises on any input.

    Verify before believing: only the envelope (IP and VRRP headers, both
    checksums, the address count that says where the trailer starts, magic,
    trailer version, auth scheme) is read before the HMAC is checked against
    ``keyring``; every claim (lengths, names, sequence, epoch, stamps) is read
    only from an authenticated datagram, so a tampered one is always ``auth``.
    Without ``keyring`` nothing is verified (tools and tests); the
    :class:`~vipmgr.wire.receiver.Receiver` always passes its own.
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
    vt, vrid, prio, count, _adv, _vck = VRRP_HDR.unpack_from(body)
    if vt >> 4 != 3:
        raise _Bad(Reject.VERSION)
    if vt & 0x0F != 1:
        raise _Bad(Reject.TYPE)
    if inet_checksum(_pseudo_header(s, d, len(body)) + body) != b"\0\0":
        raise _Bad(Reject.CHECKSUM)
    off = VRRP_HDR_LEN + 4 * count
    if len(body) < off:
        raise _Bad(Reject.TRUNCATED)
    if count > 1:
        raise _Bad(Reject.MALFORMED)
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
    (_m, _tver, flags, _auth, nheard, seq, epoch, interval_ms, stamp_us,
     echo_us) = TRAILER.unpack_from(body, off)
    if nheard > HEARD_MAX or interval_ms == 0 or max(stamp_us, echo_us) >= STAMP_US_MAX:
        raise _Bad(Reject.MALFORMED)
    node, pos = _name(body, off + TRAILER.size, end)
    gateway, pos = _name(body, pos, end)
    echo_node, pos = _name(body, pos, end, optional=True)
    heard = []
    for _ in range(nheard):
        peer, pos = _name(body, pos, end)
        heard.append(peer)
    if pos != end:
        raise _Bad(Reject.MALFORMED)
    advert = Advert(node=node, gateway=gateway, vrid=vrid,
                    role=Role.ACTIVE if flags & FLAG_ACTIVE else Role.STANDBY,
                    epoch=epoch, priority=prio, interval_ms=interval_ms,
                    egress_ip=socket.inet_ntoa(body[VRRP_HDR_LEN:off]) if count else None,
                    healthy=bool(flags & FLAG_HEALTHY),
                    etcd_reachable=bool(flags & FLAG_ETCD), heard=tuple(heard),
                    stamp=stamp_us / 1_000_000, echo_node=echo_node,
                    echo_stamp=echo_us / 1_000_000)
    return Frame(advert=advert, seq=seq, src=socket.inet_ntoa(s), dst=socket.inet_ntoa(d),
                 authenticated=auth == AUTH_HMAC_SHA256, key_index=key_index)
