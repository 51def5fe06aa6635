"""What an attacker on the heartbeat segment does to captured heartbeats (shared by the wire
tests and the lab's attacker tests): edit bytes, fix up the checksums, send copies."""

from __future__ import annotations

import socket
import struct

from vipmgr.wire.codec import inet_checksum

IP_LEN, VRRP_LEN = 20, 8
TRAILER_FIXED = 24     # magic, version, reserved, auth, record count, sequence, stamp


def rechecksum(pkt: bytearray) -> bytes:
    """Recompute the IPv4 and VRRP checksums after an edit, as an attacker would."""
    pkt[10:12] = pkt[26:28] = b"\0\0"
    pkt[10:12] = inet_checksum(bytes(pkt[:IP_LEN]))
    pseudo = bytes(pkt[12:20]) + struct.pack(">BBH", 0, 112, len(pkt) - IP_LEN)
    pkt[26:28] = inet_checksum(pseudo + bytes(pkt[IP_LEN:]))
    return bytes(pkt)


def trailer_at(pkt: bytes | bytearray) -> int:
    return IP_LEN + VRRP_LEN + 4 * pkt[23]


def first_record_at(pkt: bytes | bytearray) -> int:
    """Where the first record starts: after the trailer's fixed part and the node name."""
    node = trailer_at(pkt) + TRAILER_FIXED
    return node + 1 + pkt[node]


def tampered(genuine: bytes) -> dict[str, bytes]:
    """One edited copy per attack, each re-checksummed (so only the HMAC can tell)."""
    t, r = trailer_at(genuine), first_record_at(genuine)
    out = {}

    def edit(name, fn):
        pkt = bytearray(genuine)
        fn(pkt)
        out[name] = rechecksum(pkt)

    def bump_seq(pkt):
        seq = struct.unpack_from(">Q", pkt, t + 8)[0]
        struct.pack_into(">Q", pkt, t + 8, (seq + 1000) % 2**64)

    def strip_mac(pkt):
        del pkt[-32:]
        pkt[t + 6] = 0                       # claim "no authentication"
        pkt[2:4] = struct.pack(">H", len(pkt))

    edit("node name length", lambda p: p.__setitem__(t + 24, p[t + 24] + 1))  # a claim parsed first
    edit("record count", lambda p: p.__setitem__(t + 7, p[t + 7] + 1))        # ... and another
    edit("priority", lambda p: p.__setitem__(22, 255))                      # steal placement
    edit("releasing", lambda p: p.__setitem__(22, 0))                       # fake a handover
    edit("record priority", lambda p: p.__setitem__(r + 1, 255))            # the one believed
    edit("sequence bumped", bump_seq)
    edit("echo stamp", lambda p: p.__setitem__(r + 21, p[r + 21] ^ 0x40))   # extend evidence
    edit("mac stripped", strip_mac)
    return out


def resourced(pkt: bytes, src: str) -> bytes:
    """The same datagram from another source address (the IP header is not signed; a
    node's kernel drops datagrams that claim its own address, so an attacker re-sources)."""
    out = bytearray(pkt)
    out[12:16] = socket.inet_aton(src)
    return rechecksum(out)
