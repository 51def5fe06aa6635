"""Gratuitous ARP for a VIP: tell the segment which MAC now owns the address.

Each announcement is two broadcast frames, a request and a reply with sender
= target = VIP: Linux neighbours update an existing entry from either, other
stacks prefer one or the other. Frames go out through an AF_PACKET socket, so
the ARP guard (``table arp vipmgr``, which only sees the kernel's own ARP)
never filters them.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from scapy.layers.l2 import ARP, Ether

BROADCAST = "ff:ff:ff:ff:ff:ff"


def garp_frames(mac: str, ip: str) -> tuple[bytes, bytes]:
    """(request, reply) gratuitous ARP frames announcing ``ip`` at ``mac``."""
    request = Ether(src=mac, dst=BROADCAST) / ARP(op=1, hwsrc=mac, psrc=ip,
                                                  hwdst="00:00:00:00:00:00", pdst=ip)
    reply = Ether(src=mac, dst=BROADCAST) / ARP(op=2, hwsrc=mac, psrc=ip, hwdst=BROADCAST, pdst=ip)
    return bytes(request), bytes(reply)


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
