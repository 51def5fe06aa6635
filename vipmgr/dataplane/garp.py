"""Gratuitous ARP for a VIP: tell the segment which MAC now owns the address.

Each announcement is two broadcast frames, a request and a reply with sender
= target = VIP: Linux neighbours update an existing entry from either, other
stacks prefer one or the other. Frames go out through an AF_PACKET socket, so
the ARP guard (``table arp vipmgr``, which only sees the kernel's own ARP)
never filters them.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

BROADCAST = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
# Two 42-byte frames: a struct is the whole encoder (scapy here cost the agent 0.17 s of
# import and 31 MB; tests check these bytes against scapy's).
_ARP = struct.Struct("!6s6sH HHBBH 6s4s6s4s")
ETH_P_ARP, HTYPE_ETHER, PTYPE_IPV4 = 0x0806, 1, 0x0800


def garp_frames(mac: str, ip: str) -> tuple[bytes, bytes]:
    """(request, reply) gratuitous ARP frames announcing ``ip`` at ``mac``."""
    hw, addr = bytes.fromhex(mac.replace(":", "")), socket.inet_aton(ip)

    def frame(op: int, target_hw: bytes) -> bytes:
        return _ARP.pack(BROADCAST, hw, ETH_P_ARP, HTYPE_ETHER, PTYPE_IPV4, 6, 4, op,
                         hw, addr, target_hw, addr)

    return frame(1, ZERO_MAC), frame(2, BROADCAST)


@dataclass
class Announcement:
    interface: str
    ip: str
    mac: str
    frames_sent: int


def announce(interface: str, ip: str, count: int, interval: float) -> Announcement:
    """Send ``count`` announcements ``interval`` apart (blocking; run it off the event loop).

    The socket is opened in the calling thread's network namespace.
    """
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((interface, 0))
        mac = ":".join(f"{b:02x}" for b in sock.getsockname()[4][:6])
        frames = garp_frames(mac, ip)
        sent = 0
        for i in range(count):
            if i:
                time.sleep(interval)
            for frame in frames:
                sock.send(frame)
                sent += 1
    return Announcement(interface, ip, mac, sent)
