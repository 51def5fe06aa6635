"""Golden bytes, cross-checks with scapy's dissector and tshark, key file parsing."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import shutil
import subprocess
import sys

import pytest
from scapy.layers.inet import IP
from scapy.layers.vrrp import VRRPv3

from vipmgr.resources.vrid import derived_vrid
from vipmgr.wire.codec import Encoder, decode, inet_checksum
from vipmgr.wire.keys import KeyFileError, KeyRing, load_keyring, parse_keys
from vipmgr.wire.message import Advert, Reject, Role

GOLDEN_SIGNED = bytes.fromhex(
    "45c0008f07084000ff70d122c0000201e0000012"          # IPv4, TTL 255, proto 112
    "312ac80100025f80" "c633640a"                         # VRRPv3 hdr, 198.51.100.10
    "56504d4702070102" "0102030405060708"                 # VPMG v2 flags auth heard, seq
    "00000000000004d2" "0014"                             # epoch 1234, 20 ms
    "0000000115c3d740" "0000000115ba53e0"                 # stamp 4660.123456 s, echo 4659.5 s
    "066e6f64652d61" "086567726573732d31" "066e6f64652d62"  # node, gateway, echo node
    "066e6f64652d62066e6f64652d63"                        # heard
    "dd54bca7c717a9b84f2aa24afb00bd574171e7ade363a8198a41c252bc73af58")  # HMAC
GOLDEN_UNICAST_PLAIN = bytes.fromhex(    # no echo: echo stamp 0, echo node length 0
    "45c0006900054000ff70f65bc0000201c0000202312ac8010002cd82c633640a56504d4702070002"
    "000000000000000500000000000004d200140000000115c3d7400000000000000000066e6f64652d"
    "61086567726573732d3100066e6f64652d62066e6f64652d63")
GOLDEN_V1_SIGNED = bytes.fromhex(        # the same advert in trailer version 1 (no stamps)
    "45c0007807084000ff70d139c0000201e0000012312ac8010002a5b1c633640a56504d4701070102"
    "010203040506070800000000000004d20014066e6f64652d61086567726573732d31066e6f64652d"
    "62066e6f64652d632b4a14f7dd9ee3412bf0996c517b88ffc313c004bba0ccc8c657c3d6c00df0ee")


def no_echo(advert):
    return dataclasses.replace(advert, echo_node=None, echo_stamp=0.0)


def test_encode_matches_golden_bytes(advert, keys):
    assert Encoder(keys[0], seq_start=0x0102030405060708).encode(advert, "192.0.2.1") \
        == GOLDEN_SIGNED
    assert Encoder(None, seq_start=5).encode(no_echo(advert), "192.0.2.1", "192.0.2.2") \
        == GOLDEN_UNICAST_PLAIN


def test_decode_golden_bytes(advert, keys):
    frame = decode(GOLDEN_SIGNED, KeyRing((keys[1], keys[0])))
    assert frame.advert == advert
    assert (frame.seq, frame.src, frame.dst, frame.authenticated, frame.key_index) == \
        (0x0102030405060708, "192.0.2.1", "224.0.0.18", True, 1)
    body = GOLDEN_SIGNED[20:]
    assert body[-32:] == hmac.new(keys[0], body[:6] + b"\0\0" + body[8:-32],
                                  hashlib.sha256).digest()
    assert decode(GOLDEN_SIGNED, KeyRing((keys[1],))) is Reject.AUTH
    frame = decode(GOLDEN_UNICAST_PLAIN)
    assert (frame.advert, frame.dst, frame.authenticated, frame.key_index) == \
        (no_echo(advert), "192.0.2.2", False, None)
    assert decode(GOLDEN_UNICAST_PLAIN, KeyRing((keys[0],), require_auth=True)) is Reject.AUTH


def test_trailer_version_1_is_rejected_as_version():
    """A v1 sender (no stamps) is counted as `version`, never read with made-up stamps."""
    assert decode(GOLDEN_V1_SIGNED) is Reject.VERSION


def test_existing_callers_get_zero_stamps_and_no_echo():
    plain = Advert("a", "egress-1", 42, Role.STANDBY, 0, 1, 100, None, True, True)
    assert (plain.stamp, plain.echo_node, plain.echo_stamp) == (0.0, None, 0.0)
    assert decode(Encoder(seq_start=1).encode(plain, "192.0.2.1")).advert == plain


def test_stamps_round_down_to_whole_microseconds(advert):
    """The echo tells the active since when a standby heard it: a decoded stamp must never
    be later than the one sent, and a decoded stamp must re-encode to itself."""
    enc = Encoder(seq_start=1)
    for sent, got in ((0.0000019, 0.000001), (1.9999999, 1.999999), (4660.123456, 4660.123456),
                      (0.3, 0.3), (2**33 - 1e-6, 8589934591.999999)):
        frame = decode(enc.encode(dataclasses.replace(advert, stamp=sent, echo_stamp=sent),
                                        "192.0.2.1"))
        assert frame.advert.stamp == frame.advert.echo_stamp == got <= sent


def test_echo_node_change_is_not_served_from_the_cache(advert):
    enc = Encoder(seq_start=1)
    for echo in ("node-b", None, "node-c", "node-b"):
        frame = decode(enc.encode(dataclasses.replace(advert, echo_node=echo), "192.0.2.1"))
        assert frame.advert.echo_node == echo


def test_round_trip_variants(advert):
    enc = Encoder(None, seq_start=10)
    for variant in (dataclasses.replace(advert, role=Role.STANDBY, healthy=False,
                                        etcd_reachable=False, priority=0, heard=()),
                    dataclasses.replace(advert, egress_ip=None, epoch=2**64 - 1,
                                        interval_ms=65535, node="ü" * 100, echo_node="ö" * 126,
                                        stamp=0.0, echo_stamp=2**33 - 1e-6)):
        frame = decode(enc.encode(variant, "203.0.113.7"))
        assert frame.advert == variant
    assert enc.seq == 12


def test_scapy_dissector_agrees(advert):
    pkt = IP(Encoder(None, seq_start=1).encode(advert, "192.0.2.1"))
    vrrp = pkt[VRRPv3]
    assert (pkt.ttl, pkt.proto, vrrp.version, vrrp.type, vrrp.vrid, vrrp.priority,
            vrrp.adv, vrrp.addrlist) == (255, 112, 3, 1, 42, 200, 2, ["198.51.100.10"])


def test_interval_rounds_up_to_centiseconds(advert):
    for ms, cs in ((1, 1), (20, 2), (25, 3), (1000, 100), (65535, 4095)):
        pkt = IP(Encoder().encode(dataclasses.replace(advert, interval_ms=ms), "192.0.2.1"))
        assert pkt[VRRPv3].adv == cs


def test_encoder_rejects_unencodable_adverts(advert):
    enc = Encoder()
    for bad in (dict(vrid=0), dict(priority=256), dict(interval_ms=0), dict(epoch=-1),
                dict(node=""), dict(heard=tuple(f"n{i}" for i in range(33))),
                dict(heard=tuple("x" * 250 + str(i) for i in range(8))),
                dict(echo_node=""), dict(echo_node="x" * 254), dict(stamp=-1e-9),
                dict(stamp=float("nan")), dict(echo_stamp=float("inf")), dict(echo_stamp=2**33)):
        with pytest.raises(ValueError):
            enc.encode(dataclasses.replace(advert, **bad), "192.0.2.1")


def test_one_datagram_holds_1394_bytes_of_names(advert):
    """docs/wire.md: 32 heard peers fit when every name (node, gateway, echo) is ≤ 38 bytes."""
    def names(n):
        return dict(node="a" * n, gateway="egress-1".ljust(n, "x"), echo_node="e" * n,
                    heard=tuple(f"{i:02d}".ljust(n, "h") for i in range(32)))
    enc = Encoder(bytes(32))
    assert len(enc.encode(dataclasses.replace(advert, **names(38)), "192.0.2.1")) == 1500 - 29
    with pytest.raises(ValueError):
        enc.encode(dataclasses.replace(advert, **names(39)), "192.0.2.1")


def test_checksum_helper_matches_rfc1071_example():
    # RFC 1071 §3 example: words 0001 f203 f4f5 f6f7 sum to ddf2, checksum 220d.
    assert inet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == bytes.fromhex("220d")


def test_vrid_comes_from_the_resources_derivation():
    assert 1 <= derived_vrid("egress-1") <= 255


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark missing: make system-deps")
def test_tshark_decodes_vrrpv3(tmp_path, advert, keys, write_pcap):
    enc = Encoder(keys[0], seq_start=1)
    other = dataclasses.replace(advert, vrid=derived_vrid("egress-2"), gateway="egress-2",
                                priority=90, role=Role.STANDBY)
    pcap = write_pcap(tmp_path / "hb.pcap", [enc.encode(advert, "192.0.2.1"),
                                             enc.encode(other, "192.0.2.1", "192.0.2.3")])
    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-T", "fields", "-E", "separator=,",
         "-e", "ip.ttl", "-e", "vrrp.version", "-e", "vrrp.type", "-e", "vrrp.virt_rtr_id",
         "-e", "vrrp.prio", "-e", "vrrp.ip_addr", "-e", "vrrp.checksum.status"],
        capture_output=True, text=True, timeout=60, check=True).stdout.split()
    # checksum.status 1 = "Good": the checksum covers our trailer the way tshark computes it.
    assert out == ["255,3,1,42,200,198.51.100.10,1",
                   f"255,3,1,{derived_vrid('egress-2')},90,198.51.100.10,1"]


def test_key_file(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# current\nhex:" + "ab" * 16 + "\n\nbase64:" + "A" * 24 + "\n")
    ring = load_keyring(path, require_auth=True)
    assert ring.keys == (b"\xab" * 16, b"\0" * 18) and ring.signing_key == b"\xab" * 16
    for text in ("hex:abcd", "plain-secret", "hex:zz", "base64:!!", "\n".join(["hex:" + "ab" * 16] * 3)):
        with pytest.raises(KeyFileError):
            KeyRing(parse_keys(text))
    with pytest.raises(KeyFileError):
        KeyRing((), require_auth=True)


def test_decode_rejects_foreign_vrrp():
    """A keepalived-style VRRPv3 advert (no trailer) is counted as foreign, not garbage."""
    pkt = bytes(IP(src="192.0.2.9", dst="224.0.0.18", ttl=255)
                / VRRPv3(vrid=7, priority=100, addrlist=["198.51.100.1"]))
    assert decode(pkt) is Reject.FOREIGN


def test_vrrp_header_equals_scapys_and_the_codec_does_not_import_scapy(advert):
    """The header is struct-packed (the agent never imports scapy); scapy's VRRPv3 layer
    builds the same bytes for every shape."""
    from vipmgr.wire.codec import _vrrp_template
    for vrid, ms, ip in ((42, 20, "198.51.100.10"), (1, 65535, None), (255, 25, "192.0.2.1")):
        ref = bytes(IP(proto=112) / VRRPv3(vrid=vrid, priority=0, adv=-(-ms // 10) if ms < 40950
                                            else 4095, addrlist=[ip] if ip else [], chksum=0))
        assert _vrrp_template(vrid, ms, ip) == ref[20:]
    out = subprocess.run([sys.executable, "-c", "import sys, vipmgr.wire.transport; "
                          "print(any(m.startswith('scapy') for m in sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
