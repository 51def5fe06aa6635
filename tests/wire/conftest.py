"""Shared fixtures for the wire tests: fixed adverts of one node, keys, and a pcap writer."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from vipmgr.wire.message import Advert, Role

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))


@pytest.fixture
def advert() -> Advert:
    return Advert(node="node-a", gateway="egress-1", vrid=42, role=Role.ACTIVE, epoch=1234,
                  priority=200, interval_ms=20, egress_ip="198.51.100.10", healthy=True,
                  etcd_reachable=True, heard=("node-b", "node-c"), stamp=4660.123456,
                  echo_node="node-b", echo_stamp=4659.5)


@pytest.fixture
def advert2(advert) -> Advert:
    """A second gateway of the same node (same node and stamp, as one datagram needs): the
    smaller interval, so the VRRP header's interval is not simply the first record's."""
    return Advert(node=advert.node, gateway="egress-2", vrid=7, role=Role.STANDBY, epoch=99,
                  priority=90, interval_ms=10, egress_ip="198.51.100.20", healthy=True,
                  etcd_reachable=False, heard=("node-c",), stamp=advert.stamp,
                  echo_node="node-c", echo_stamp=4659.25)


@pytest.fixture
def keys() -> tuple[bytes, bytes]:
    return KEY_A, KEY_B


@pytest.fixture
def write_pcap():
    """Write raw IPv4 datagrams as a pcap (LINKTYPE_RAW) for tshark."""
    def write(path: Path, datagrams: list[bytes]) -> Path:
        out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)]
        for i, d in enumerate(datagrams):
            out.append(struct.pack("<IIII", 1_700_000_000 + i, 0, len(d), len(d)) + d)
        path.write_bytes(b"".join(out))
        return path
    return write
