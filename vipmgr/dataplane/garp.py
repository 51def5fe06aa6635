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
from typing import Callable, Iterable

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


def announce(vips: Iterable[tuple[str, str]], count: int, interval: float,
             held: Callable[[str, str], bool] = lambda _if, _ip: True) -> list[Announcement]:
    """Send ``count`` announcements of each (interface, ip), ``interval`` apart (blocking;
    run it off the event loop), in rounds: every VIP's first pair goes out at once, so a
    node taking many gateways announces the last as soon as the first.

    ``held(interface, ip)`` is asked before each pair: a VIP given up meanwhile (a
    rebalance right after a take) is not announced any more — a late announcement would
    point the segment at a node that no longer answers for it. Sockets are opened in
    the calling thread's network namespace.
    """
    vips = list(dict.fromkeys(vips))
    socks: dict[str, socket.socket] = {}
    sent = {vip: 0 for vip in vips}
    frames: dict[tuple[str, str], tuple[bytes, bytes]] = {}
    macs: dict[str, str] = {}
    try:
        for interface in {i for i, _ip in vips}:
            sock = socks[interface] = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            sock.bind((interface, 0))
            macs[interface] = ":".join(f"{b:02x}" for b in sock.getsockname()[4][:6])
        for interface, ip in vips:
            frames[interface, ip] = garp_frames(macs[interface], ip)
        for i in range(count):
            if i:
                time.sleep(interval)
            live = [vip for vip in vips if held(*vip)]
            if not live:
                break  # every VIP given up: the thread is free for the next job
            for vip in live:
                for frame in frames[vip]:
                    socks[vip[0]].send(frame)
                    sent[vip] += 1
    finally:
        for sock in socks.values():
            sock.close()
    return [Announcement(i, ip, macs[i], sent[i, ip]) for i, ip in vips]
