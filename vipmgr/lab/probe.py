"""The failover benchmark's instruments, run inside lab namespaces.

``stream`` (in a VM): a paced UDP stream of sequence-numbered datagrams
(``b"<seq> <padding>"``) to the echo service, bounded in count and time. The
echo service logs each arrival; the benchmark compares the two. It prints
``started <CLOCK_MONOTONIC>`` when the first datagram leaves and, at the end,
one JSON line with what it sent. The pace is an absolute schedule (datagram
``i`` at ``start + i/rate``): a late sender catches up instead of drifting, so
a sequence number maps back to its send time.

``arp`` (on the public segment): asks "who has <VIP>?" every ``interval``
from the unspecified address 0.0.0.0 (an RFC 5227 probe: the answering nodes
and the router's ARP cache are left untouched) and logs every answer as
``"<probe index> <mac> <CLOCK_MONOTONIC>"``. Two MACs answering the same probe
mean two nodes held the VIP at that moment.

``vrrp`` (on the public segment): counts the heartbeat datagrams (IPv4
protocol 112) seen on an interface for a while, by source address; it sends
nothing.

Pure standard library, so each starts in a few tens of milliseconds.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
VRRP_PROTO = 112
BROADCAST = b"\xff" * 6
MAX_SECONDS = 30.0  # hard bound for either instrument, whatever the arguments say


@dataclass(frozen=True)
class ArpAnswer:
    """One answer to probe number ``probe`` (the latest sent before it arrived)."""

    probe: int
    mac: str
    arrival: float

    def line(self) -> str:
        return f"{self.probe} {self.mac} {self.arrival:.6f}\n"

    @classmethod
    def parse(cls, line: str) -> "ArpAnswer":
        probe, mac, arrival = line.split()
        return cls(int(probe), mac, float(arrival))


def read_arp_log(path: str | Path) -> list[ArpAnswer]:
    """Every complete line of an ``arp`` log."""
    return [ArpAnswer.parse(line) for line in Path(path).read_text().splitlines(keepends=True)
            if line.endswith("\n")]


def stream(dst: str, port: int, rate: float, count: int, first_seq: int,
           payload: int = 32) -> dict:
    """Send ``count`` datagrams at ``rate``/s; what was sent, as the JSON line prints it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # echo replies are not read
    start = time.monotonic()
    print(f"started {start:.6f}", flush=True)
    errors = 0
    last = start
    for i in range(count):
        due = start + i / rate
        now = time.monotonic()
        if now - start > MAX_SECONDS:
            count = i
            break
        if due > now:
            time.sleep(due - now)
        seq = first_seq + i
        try:
            sock.sendto(b"%d " % seq + b"x" * payload, (dst, port))
        except OSError:
            errors += 1  # the VM's own path refused it: counted lost like any other
        last = time.monotonic()
    sock.close()
    return {"first_seq": first_seq, "count": count, "rate": rate, "start": start, "end": last,
            "send_errors": errors}


def _arp_request(mac: bytes, target: str) -> bytes:
    """Ethernet broadcast "who has ``target``" with sender IP 0.0.0.0 (an ARP probe)."""
    arp = (b"\x00\x01\x08\x00\x06\x04\x00\x01" + mac + bytes(4) + bytes(6)
           + socket.inet_aton(target))
    return BROADCAST + mac + ETH_P_ARP.to_bytes(2, "big") + arp


def _arp_answer_mac(frame: bytes, target: bytes) -> str | None:
    """The sender MAC of an ARP frame whose sender IP is ``target``, else None."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06" or frame[28:32] != target:
        return None
    return frame[22:28].hex(":")


def arp_probe(iface: str, target: str, interval: float, duration: float, log_path: str) -> int:
    """Probe for ``target`` on ``iface``; returns the number of probes sent."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    sock.bind((iface, ETH_P_ARP))
    mac = sock.getsockname()[4]
    request, want = _arp_request(mac, target), socket.inet_aton(target)
    duration = min(duration, MAX_SECONDS)
    start = time.monotonic()
    probes = 0
    with open(log_path, "w", buffering=1) as log:  # one run, one log: a reused name starts clean
        while (now := time.monotonic()) - start < duration:
            if now >= start + probes * interval:
                sock.send(request)
                probes += 1
            sock.settimeout(max(0.0005, start + probes * interval - time.monotonic()))
            try:
                frame, addr = sock.recvfrom(128)
            except socket.timeout:
                continue
            answer = None if addr[2] == socket.PACKET_OUTGOING else _arp_answer_mac(frame, want)
            if answer is not None:
                log.write(ArpAnswer(probes - 1, answer, time.monotonic()).line())
    sock.close()
    return probes


def count_vrrp(iface: str, duration: float) -> dict:
    """Protocol-112 datagrams on ``iface`` for ``duration`` s: packets and bytes per source."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    sock.bind((iface, ETH_P_IP))
    duration = min(duration, MAX_SECONDS)
    packets: dict[str, int] = {}
    sizes: dict[str, int] = {}
    start = time.monotonic()
    while (left := start + duration - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            frame = sock.recv(2048)
        except socket.timeout:
            break
        if len(frame) >= 34 and frame[23] == VRRP_PROTO:
            src = socket.inet_ntoa(frame[26:30])
            packets[src] = packets.get(src, 0) + 1
            sizes[src] = sizes.get(src, 0) + len(frame) - 14
    sock.close()
    return {"seconds": duration, "packets": packets, "bytes": sizes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vipmgr.lab.probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_stream = sub.add_parser("stream", help="paced, sequence-numbered UDP datagrams")
    p_stream.add_argument("dst")
    p_stream.add_argument("--port", type=int, default=7)
    p_stream.add_argument("--rate", type=float, default=1000.0)
    p_stream.add_argument("--count", type=int, required=True)
    p_stream.add_argument("--first-seq", type=int, default=0)
    p_arp = sub.add_parser("arp", help="ARP-probe an address, log who answers")
    p_arp.add_argument("target")
    p_arp.add_argument("--iface", default="eth0")
    p_arp.add_argument("--interval", type=float, default=0.01)
    p_arp.add_argument("--duration", type=float, required=True)
    p_arp.add_argument("--log", required=True)
    p_vrrp = sub.add_parser("vrrp", help="count heartbeat datagrams (protocol 112) by source")
    p_vrrp.add_argument("--iface", default="eth0")
    p_vrrp.add_argument("--duration", type=float, required=True)
    args = parser.parse_args(argv)
    if args.command == "vrrp":
        print(json.dumps(count_vrrp(args.iface, args.duration)), flush=True)
    elif args.command == "stream":
        if args.rate <= 0 or args.count < 0:
            parser.error("--rate must be positive and --count not negative")
        print(json.dumps(stream(args.dst, args.port, args.rate, args.count, args.first_seq)),
              flush=True)
    else:
        probes = arp_probe(args.iface, args.target, args.interval, args.duration, args.log)
        print(json.dumps({"probes": probes}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
