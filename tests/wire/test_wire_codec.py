"""Golden bytes, the split into datagrams, cross-checks with scapy's dissector and tshark,
key file parsing."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import shutil
import struct
import subprocess
import sys

import pytest
from scapy.layers.inet import IP
from scapy.layers.vrrp import VRRPv3

from heartbeat_attacks import first_record_at, rechecksum, trailer_at
from vipmgr.resources.vrid import derived_vrid
from vipmgr.wire import codec
from vipmgr.wire.codec import MAX_DATAGRAM, STAMP_US_MAX, Encoder, decode, inet_checksum
from vipmgr.wire.keys import KeyFileError, KeyRing, load_keyring, parse_keys
from vipmgr.wire.message import HEARD_MAX, Advert, Reject, Role

GOLDEN_SIGNED = bytes.fromhex(           # advert + advert2, HMAC with KEY_A
    "45c000c407084000ff70d0edc0000201e0000012"            # IPv4, TTL 255, proto 112
    "312ac8020001b42b" "c633640a" "c6336414"              # VRRPv3: VRID 42, prio 200, 2 addresses,
                                                          # 1 cs (advert2's 10 ms); .10, .20
    "56504d4703000102" "0102030405060708"                 # VPMG v3 reserved auth=1 2 records, seq
    "0000000115c3d740" "066e6f64652d61"                   # stamp 4660.123456 s, node-a
    "2ac80f02" "00000000000004d2" "0014"                  # 1: VRID 42, prio 200, A|H|E|IP, 2 heard,
    "0000000115ba53e0"                                    #    epoch 1234, 20 ms, echo 4659.5 s
    "086567726573732d31" "066e6f64652d62"                 #    egress-1, echo node-b
    "066e6f64652d62066e6f64652d63"                        #    heard node-b node-c
    "075a0a01" "0000000000000063" "000a"                  # 2: VRID 7, prio 90, flags H|IP, 1 heard,
    "0000000115b68350"                                    #    epoch 99, 10 ms, echo 4659.25 s
    "086567726573732d32" "066e6f64652d63" "066e6f64652d63"  # egress-2, echo node-c, heard node-c
    "fbdc6ce2269628b659b660ec368654c36653dca975bfe5d1745fe70031f28a9c")  # HMAC
GOLDEN_UNICAST_PLAIN = bytes.fromhex(    # no echo, advert2 without egress IP: 1 address
    "45c0009400054000ff70f630c0000201c0000202312ac8010001e044c633640a56504d47030000020000"
    "0000000000050000000115c3d740066e6f64652d612ac80f0200000000000004d2001400000000000000"
    "00086567726573732d3100066e6f64652d62066e6f64652d63075a02010000000000000063000a000000"
    "0000000000086567726573732d3200066e6f64652d63")
GOLDEN_V2_SIGNED = bytes.fromhex(        # advert alone in trailer version 2 (one gateway)
    "45c0008f07084000ff70d122c0000201e0000012312ac80100025f80c633640a56504d4702070102"
    "010203040506070800000000000004d200140000000115c3d7400000000115ba53e0066e6f64652d"
    "61086567726573732d31066e6f64652d62066e6f64652d62066e6f64652d63dd54bca7c717a9b84f"
    "2aa24afb00bd574171e7ade363a8198a41c252bc73af58")
GOLDEN_V1_SIGNED = bytes.fromhex(        # the same advert in trailer version 1 (no stamps)
    "45c0007807084000ff70d139c0000201e0000012312ac8010002a5b1c633640a56504d4701070102"
    "010203040506070800000000000004d20014066e6f64652d61086567726573732d31066e6f64652d"
    "62066e6f64652d632b4a14f7dd9ee3412bf0996c517b88ffc313c004bba0ccc8c657c3d6c00df0ee")
SRC = "192.0.2.1"


def no_echo(advert):
    return dataclasses.replace(advert, echo_node=None, echo_stamp=0.0)


def plain_pair(advert, advert2):
    return no_echo(advert), dataclasses.replace(no_echo(advert2), egress_ip=None)


def test_encode_matches_golden_bytes(advert, advert2, keys):
    assert Encoder(keys[0], seq_start=0x0102030405060708).encode([advert, advert2], SRC) \
        == [GOLDEN_SIGNED]
    assert Encoder(None, seq_start=5).encode(plain_pair(advert, advert2), SRC, "192.0.2.2") \
        == [GOLDEN_UNICAST_PLAIN]


def test_decode_golden_bytes(advert, advert2, keys):
    frame = decode(GOLDEN_SIGNED, KeyRing((keys[1], keys[0])))
    assert frame.adverts == (advert, advert2)
    assert (frame.seq, frame.src, frame.dst, frame.authenticated, frame.key_index) == \
        (0x0102030405060708, SRC, "224.0.0.18", True, 1)
    body = GOLDEN_SIGNED[20:]
    assert body[-32:] == hmac.new(keys[0], body[:6] + b"\0\0" + body[8:-32],
                                  hashlib.sha256).digest()
    assert decode(GOLDEN_SIGNED, KeyRing((keys[1],))) is Reject.AUTH
    frame = decode(GOLDEN_UNICAST_PLAIN)
    assert (frame.adverts, frame.dst, frame.authenticated, frame.key_index) == \
        (plain_pair(advert, advert2), "192.0.2.2", False, None)
    assert decode(GOLDEN_UNICAST_PLAIN, KeyRing((keys[0],), require_auth=True)) is Reject.AUTH


def test_a_decoded_frame_re_encodes_to_the_same_bytes(keys):
    """One encoding per frame: the VRRP header is derived from the records, never free."""
    for golden, key, dst in ((GOLDEN_SIGNED, keys[0], "224.0.0.18"),
                             (GOLDEN_UNICAST_PLAIN, None, "192.0.2.2")):
        frame = decode(golden)
        assert Encoder(key, seq_start=frame.seq).encode(frame.adverts, frame.src, dst) == [golden]


def test_older_trailer_versions_are_rejected_as_version(keys):
    """A v2 (one datagram per gateway) or v1 sender is counted as `version`, before any key
    is tried: the receiver never reads its trailer with the v3 layout."""
    for old in (GOLDEN_V2_SIGNED, GOLDEN_V1_SIGNED):
        assert decode(old) is Reject.VERSION
        assert decode(old, KeyRing((keys[0],), require_auth=True)) is Reject.VERSION


def test_existing_callers_get_zero_stamps_and_no_echo():
    plain = Advert("a", "egress-1", 42, Role.STANDBY, 0, 1, 100, None, True, True)
    assert (plain.stamp, plain.echo_node, plain.echo_stamp) == (0.0, None, 0.0)
    assert decode(Encoder(seq_start=1).encode([plain], SRC)[0]).adverts == (plain,)


def only(datagrams: list[bytes]) -> Advert:
    [datagram] = datagrams
    [advert] = decode(datagram).adverts
    return advert


def test_stamps_round_down_to_whole_microseconds(advert):
    """The echo tells the active since when a standby heard it: a decoded stamp must never
    be later than the one sent, and a decoded stamp must re-encode to itself."""
    enc = Encoder(seq_start=1)
    for sent, got in ((0.0000019, 0.000001), (1.9999999, 1.999999), (4660.123456, 4660.123456),
                      (0.3, 0.3), (2**33 - 1e-6, 8589934591.999999)):
        decoded = only(enc.encode([dataclasses.replace(advert, stamp=sent, echo_stamp=sent)], SRC))
        assert decoded.stamp == decoded.echo_stamp == got <= sent


def test_echo_node_change_is_not_served_from_the_cache(advert):
    enc = Encoder(seq_start=1)
    for echo in ("node-b", None, "node-c", "node-b"):
        assert only(enc.encode([dataclasses.replace(advert, echo_node=echo)], SRC)).echo_node \
            == echo


def test_round_trip_variants(advert, advert2):
    enc = Encoder(None, seq_start=10)
    long_node = dict(node="ü" * 100, stamp=0.0)
    for variant in ([dataclasses.replace(advert, role=Role.STANDBY, healthy=False,
                                         etcd_reachable=False, priority=0, heard=())],
                    [dataclasses.replace(advert, egress_ip=None, epoch=2**64 - 1,
                                         interval_ms=65535, echo_node="ö" * 126,
                                         echo_stamp=2**33 - 1e-6, **long_node),
                     dataclasses.replace(advert2, **long_node)]):
        [pkt] = enc.encode(variant, "203.0.113.7")
        assert decode(pkt).adverts == tuple(variant)
    assert enc.seq == 12


def test_vrrp_header_summarises_the_records(advert, advert2):
    """tcpdump/tshark see VRRP: the first record's VRID and priority, the smallest interval
    (rounded up to centiseconds), every egress IP in record order; each record that has
    one takes the next address."""
    third = dataclasses.replace(advert2, gateway="egress-3", vrid=9, interval_ms=35,
                                egress_ip="198.51.100.30")
    records = [advert, dataclasses.replace(advert2, egress_ip=None, interval_ms=25), third]
    [pkt] = Encoder(None, seq_start=1).encode(records, SRC)
    vrrp = IP(pkt)[VRRPv3]
    assert (IP(pkt).ttl, IP(pkt).proto, vrrp.version, vrrp.type, vrrp.vrid, vrrp.priority,
            vrrp.adv, vrrp.addrlist) == (255, 112, 3, 1, 42, 200, 2,
                                         ["198.51.100.10", "198.51.100.30"])
    assert [a.egress_ip for a in decode(pkt).adverts] == ["198.51.100.10", None,
                                                           "198.51.100.30"]


def test_interval_rounds_up_to_centiseconds(advert, advert2):
    for ms, cs in ((1, 1), (20, 2), (25, 3), (1000, 100), (65535, 4095)):
        [pkt] = Encoder().encode([dataclasses.replace(advert, interval_ms=ms)], SRC)
        assert IP(pkt)[VRRPv3].adv == cs
    [pkt] = Encoder().encode([dataclasses.replace(advert, interval_ms=1000),
                              dataclasses.replace(advert2, interval_ms=15)], SRC)
    assert IP(pkt)[VRRPv3].adv == 2


def test_encoder_rejects_unencodable_adverts_and_takes_no_sequence(advert, advert2):
    enc = Encoder(seq_start=7)
    for bad in (dict(vrid=0), dict(priority=256), dict(interval_ms=0), dict(epoch=-1),
                dict(node=""), dict(gateway=""), dict(heard=tuple(f"n{i}" for i in range(33))),
                dict(heard=tuple("x" * 250 + str(i) for i in range(8))),
                dict(echo_node=""), dict(echo_node="x" * 254), dict(stamp=-1e-9),
                dict(stamp=float("nan")), dict(echo_stamp=float("inf")), dict(echo_stamp=2**33)):
        for adverts in ([dataclasses.replace(advert, **bad)],
                        [advert2, dataclasses.replace(advert, **bad)]):
            if "stamp" in bad or "node" in bad:     # shared: the second would not match
                adverts = [dataclasses.replace(a, **bad) for a in adverts]
            with pytest.raises(ValueError):
                enc.encode(adverts, SRC)
    for adverts in ([], [advert, dataclasses.replace(advert2, node="node-b")],
                    [advert, dataclasses.replace(advert2, stamp=advert.stamp + 1e-6)],
                    [advert, dataclasses.replace(advert2, gateway=advert.gateway)]):
        with pytest.raises(ValueError):
            enc.encode(adverts, SRC)
    assert enc.seq == 7


def names(n: int) -> dict:
    """Node, gateway, echo node and 32 heard peers, every name n bytes long."""
    return dict(node="a" * n, gateway="egress-1".ljust(n, "x"), echo_node="e" * n,
                heard=tuple(f"{i:02d}".ljust(n, "h") for i in range(HEARD_MAX)))


def test_one_datagram_holds_1390_bytes_of_names(advert):
    """docs/wire.md: one record with 32 heard peers fits when every name (node, gateway,
    echo) is ≤ 38 bytes; one that cannot fit a datagram alone is a caller bug."""
    enc = Encoder(bytes(32))
    [pkt] = enc.encode([dataclasses.replace(advert, **names(38))], SRC)
    assert len(pkt) == MAX_DATAGRAM - 25
    with pytest.raises(ValueError):
        enc.encode([dataclasses.replace(advert, **names(39))], SRC)
    # the 25 bytes left fill it exactly; one more is too many
    fill = names(38) | dict(gateway="egress-1".ljust(38 + 25, "x"))
    assert [len(p) for p in enc.encode([dataclasses.replace(advert, **fill)], SRC)] == \
        [MAX_DATAGRAM]
    with pytest.raises(ValueError):
        enc.encode([dataclasses.replace(advert, **fill | dict(gateway=fill["gateway"] + "x"))],
                   SRC)


LONG = "egress-gateway-with-a-long-name-{:03d}"   # 35 bytes


def hundred(advert) -> list[Advert]:
    return [dataclasses.replace(advert, gateway=LONG.format(i), vrid=1 + i, priority=100 + i,
                                epoch=i, interval_ms=20 + i % 7) for i in range(100)]


def test_a_hundred_gateways_split_greedily_and_deterministically(advert, keys):
    records = hundred(advert)
    enc = Encoder(keys[0], seq_start=2**64 - 3)          # the sequence wraps on the way
    parts = enc.encode(records, SRC)
    # arithmetic from docs/wire.md: 91 bytes per datagram (20 IP, 8 VRRP, 24 trailer,
    # 1 + 6 node, 32 HMAC), 83 per record (22, 1 + 35 gateway, 1 + 6 echo, 2 × (1 + 6)
    # heard, 4 address): 16 records a datagram
    per = (MAX_DATAGRAM - 91) // 83
    assert per == 16
    assert [len(p) for p in parts] == [91 + 83 * per] * 6 + [91 + 83 * 4]
    frames = [decode(p, KeyRing((keys[0],))) for p in parts]
    assert [a for f in frames for a in f.adverts] == records
    assert [f.seq for f in frames] == [2**64 - 3, 2**64 - 2, 2**64 - 1, 0, 1, 2, 3]
    assert enc.seq == 4
    # deterministic: the same input, the same split (and bytes, at the same sequence)
    assert Encoder(keys[0], seq_start=2**64 - 3).encode(records, SRC) == parts
    # greedy: no datagram could have taken the first record of the next
    for f, nxt in zip(frames, frames[1:]):
        assert len(Encoder(keys[0]).encode([*f.adverts, nxt.adverts[0]], SRC)) == 2


def test_a_datagram_fills_up_to_exactly_1500_bytes(advert, keys):
    """91 bytes a signed datagram of node-a, 48 + len(gateway) a record of ``advert``: six
    records whose gateway names total 1121 bytes make exactly 1500; one byte more, two."""
    def records(last: int) -> list[Advert]:
        return [dataclasses.replace(advert, gateway=str(i).ljust(n, "g"))
                for i, n in enumerate([200] * 5 + [last])]
    enc = Encoder(keys[0], seq_start=1)
    [full] = enc.encode(records(121), SRC)
    assert len(full) == MAX_DATAGRAM and decode(full).adverts == tuple(records(121))
    assert [len(p) for p in enc.encode(records(122), SRC)] == [91 + 5 * 248, 91 + 48 + 122]


def test_split_at_the_record_limit(advert, monkeypatch):
    """RECORDS_MAX (255, the u8 count) cannot bind below 1500 bytes (a record is ≥ 25
    bytes); with a smaller limit the same greedy rule splits on it."""
    monkeypatch.setattr(codec, "RECORDS_MAX", 3)
    records = [dataclasses.replace(advert, gateway=f"g{i}", heard=()) for i in range(7)]
    parts = Encoder(seq_start=1).encode(records, SRC)
    assert [len(decode(p).adverts) for p in parts] == [3, 3, 1]


def test_scapy_dissector_agrees(advert):
    pkt = IP(Encoder(None, seq_start=1).encode([advert], SRC)[0])
    vrrp = pkt[VRRPv3]
    assert (pkt.ttl, pkt.proto, vrrp.version, vrrp.type, vrrp.vrid, vrrp.priority,
            vrrp.adv, vrrp.addrlist) == (255, 112, 3, 1, 42, 200, 2, ["198.51.100.10"])


def edits(pkt: bytes) -> dict[str, tuple[int, int]]:
    """Named byte edits of a datagram with two records (offsets found as a reader would)."""
    t, r1 = trailer_at(pkt), first_record_at(pkt)
    r2 = pkt.index(b"\x08egress-2") - 22
    return {"reserved": (t + 5, 1), "no record": (t + 7, 0), "one record, trailing bytes":
            (t + 7, 1), "VRID 0": (r2, 0), "header VRID differs": (r1, 43),
            "header priority differs": (r1 + 1, 201), "header interval differs": (25, 2),
            "address left over": (r1 + 2, 0x07), "address missing": (r2 + 2, 0x0A),
            "unknown flag": (r1 + 2, 0x1F), "heard > 32": (r1 + 3, HEARD_MAX + 1),
            "interval 0": (r1 + 13, 0), "gateway twice": (r2 + 22 + 8, ord("1")),
            "bad UTF-8": (r1 + 22 + 1, 0xFF), "echo stamp too big": (r1 + 14, 0xFF),
            "stamp too big": (t + 16, 0xFF)}


def test_decode_refuses_records_that_do_not_add_up():
    """What a (buggy) sender could claim: each is malformed, never half-believed."""
    assert isinstance(decode(GOLDEN_UNICAST_PLAIN).adverts, tuple)
    for name, (pos, value) in edits(GOLDEN_UNICAST_PLAIN).items():
        bad = bytearray(GOLDEN_UNICAST_PLAIN)
        bad[pos] = value
        assert decode(rechecksum(bad)) is Reject.MALFORMED, name
    grown = bytearray(GOLDEN_UNICAST_PLAIN + b"\0")
    grown[2:4] = struct.pack(">H", len(grown))
    assert decode(rechecksum(grown)) is Reject.MALFORMED
    bad = bytearray(GOLDEN_UNICAST_PLAIN)
    bad[trailer_at(bad) + 7] = 3                     # a third record that is not there
    assert decode(rechecksum(bad)) is Reject.TRUNCATED
    assert STAMP_US_MAX < 0xFF << 56


def test_decode_takes_names_of_1_to_253_bytes():
    """The node name of the plain golden datagram replaced by n bytes (IP length fixed)."""
    node = trailer_at(GOLDEN_UNICAST_PLAIN) + 24

    def named(n: int) -> bytes:
        pkt = bytearray(GOLDEN_UNICAST_PLAIN[:node] + bytes((n,)) + b"n" * n
                        + GOLDEN_UNICAST_PLAIN[node + 7:])
        pkt[2:4] = struct.pack(">H", len(pkt))
        return rechecksum(pkt)
    assert {a.node for a in decode(named(253)).adverts} == {"n" * 253}
    assert decode(named(254)) is decode(named(255)) is decode(named(0)) is Reject.MALFORMED


def test_checksum_helper_matches_rfc1071_example():
    # RFC 1071 §3 example: words 0001 f203 f4f5 f6f7 sum to ddf2, checksum 220d.
    assert inet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == bytes.fromhex("220d")


def test_vrid_comes_from_the_resources_derivation():
    assert 1 <= derived_vrid("egress-1") <= 255


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark missing: make system-deps")
def test_tshark_decodes_vrrpv3(tmp_path, advert, advert2, keys, write_pcap):
    enc = Encoder(keys[0], seq_start=1)
    third = dataclasses.replace(advert2, gateway="egress-3", egress_ip=None)
    fourth = dataclasses.replace(advert2, gateway="egress-4", egress_ip="198.51.100.40")
    other = dataclasses.replace(advert, vrid=derived_vrid("egress-2"), gateway="egress-2",
                                priority=90, role=Role.STANDBY)
    pcap = write_pcap(tmp_path / "hb.pcap", enc.encode([advert, advert2, third, fourth], SRC)
                      + enc.encode([other], SRC, "192.0.2.3"))
    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-T", "fields", "-E", "separator=;",
         "-e", "ip.ttl", "-e", "vrrp.version", "-e", "vrrp.type", "-e", "vrrp.virt_rtr_id",
         "-e", "vrrp.prio", "-e", "vrrp.addr_count", "-e", "vrrp.ip_addr",
         "-e", "vrrp.checksum.status"],
        capture_output=True, text=True, timeout=60, check=True).stdout.split()
    # checksum.status 1 = "Good": the checksum covers our trailer the way tshark computes it.
    assert out == ["255;3;1;42;200;3;198.51.100.10,198.51.100.20,198.51.100.40;1",
                   f"255;3;1;{derived_vrid('egress-2')};90;1;198.51.100.10;1"]


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


def test_vrrp_header_equals_scapys_and_the_codec_does_not_import_scapy():
    """The header is struct-packed (the agent never imports scapy); scapy's VRRPv3 layer
    builds the same bytes for every shape."""
    from vipmgr.wire.codec import _vrrp_header
    for vrid, prio, ms, ips in ((42, 200, 20, ["198.51.100.10"]), (1, 0, 65535, []),
                                (255, 255, 25, ["192.0.2.1", "198.51.100.7", "203.0.113.9"])):
        ref = bytes(IP(proto=112) / VRRPv3(vrid=vrid, priority=prio,
                                            adv=-(-ms // 10) if ms < 40950 else 4095,
                                            addrlist=ips, chksum=0))
        packed = b"".join(bytes(IP(dst=ip))[16:20] for ip in ips)
        assert _vrrp_header(vrid, prio, ms, packed) == ref[20:]
    out = subprocess.run([sys.executable, "-c", "import sys, vipmgr.wire.transport; "
                          "print(any(m.startswith('scapy') for m in sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
