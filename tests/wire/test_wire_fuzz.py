"""Fuzzing the codec and the receive path: random records round-trip through the split;
whatever arrives, no exception and exactly one counted reason."""

from __future__ import annotations

import dataclasses
import hmac
import math
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heartbeat_attacks import first_record_at, rechecksum, trailer_at
from vipmgr.wire.codec import MAX_DATAGRAM, STAMP_US_MAX, Encoder, decode
from vipmgr.wire.keys import KeyRing
from vipmgr.wire.message import HEARD_MAX, STAMP_MAX, Advert, Frame, Reject, Role
from vipmgr.wire.receiver import Receiver

SRC = "192.0.2.1"
KEY = bytes(range(32))
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# ≤ 8 characters (≤ 32 bytes of UTF-8): a record with 32 heard peers still fits a datagram
names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8)
# whole microseconds (what a decoded stamp is), so the round trip is exact
stamps = st.integers(0, STAMP_US_MAX - 1).map(lambda us: us / 1_000_000)
records = st.fixed_dictionaries(dict(
    gateway=names, vrid=st.integers(1, 255), role=st.sampled_from(Role),
    epoch=st.integers(0, 2**64 - 1), priority=st.integers(0, 255),
    interval_ms=st.integers(1, 65535),
    egress_ip=st.one_of(st.none(), st.ip_addresses(v=4, network="198.51.100.0/24").map(str)),
    healthy=st.booleans(), etcd_reachable=st.booleans(),
    heard=st.lists(names, max_size=HEARD_MAX).map(tuple),
    echo_node=st.one_of(st.none(), names), echo_stamp=stamps))
# one node's adverts for up to 8 gateways, as the agent sends them each interval
node_adverts = st.builds(
    lambda node, stamp, recs: [Advert(node=node, stamp=stamp, **r) for r in recs],
    names.filter(lambda n: n != "node-z"), stamps,
    st.lists(records, min_size=1, max_size=8, unique_by=lambda r: r["gateway"]))


def receiver(adverts: list[Advert], require_auth: bool = True) -> Receiver:
    return Receiver(node="node-z", gateways={a.gateway: a.vrid for a in adverts},
                    keyring=KeyRing((KEY,), require_auth=require_auth))


def signed(adverts: list[Advert], seq: int = 1) -> bytes:
    """The first datagram of the adverts (the only one, often)."""
    return Encoder(KEY, seq_start=seq).encode(adverts, SRC)[0]


def resign(pkt: bytearray) -> bytes:
    """Re-sign after an edit, as a peer holding the key would (a buggy one, say)."""
    body = pkt[20:]
    pkt[-32:] = hmac.digest(KEY, bytes(body[:6]) + b"\0\0" + bytes(body[8:-32]), "sha256")
    return rechecksum(pkt)


def one_reason(r: Receiver, pkt: bytes) -> Frame | Reject:
    before = sum(r.counters.values())
    result = r.process(pkt, 0.0)
    assert sum(r.counters.values()) == before + 1
    return result


@FUZZ
@given(node_adverts, st.integers(0, 2**64 - 1))
def test_round_trip_and_split(adverts, seq):
    """Every record comes back, in order, from datagrams of at most 1500 bytes with
    consecutive sequences; each datagram re-encodes to itself."""
    parts = Encoder(KEY, seq_start=seq).encode(adverts, SRC)
    r = receiver(adverts)
    frames = [r.process(p, 0.0) for p in parts]
    assert all(isinstance(f, Frame) for f in frames), frames
    assert [a for f in frames for a in f.adverts] == adverts
    assert [f.seq for f in frames] == [(seq + i) % 2**64 for i in range(len(parts))]
    assert all(len(p) <= MAX_DATAGRAM for p in parts)
    for p, f in zip(parts, frames):
        assert Encoder(KEY, seq_start=f.seq).encode(f.adverts, SRC) == [p]


@FUZZ
@given(node_adverts, st.floats(0, STAMP_MAX, exclude_max=True),
       st.lists(st.floats(0, STAMP_MAX, exclude_max=True), min_size=8, max_size=8))
def test_any_stamp_decodes_to_its_microsecond_floor(adverts, stamp, echo_stamps):
    sent = [dataclasses.replace(a, stamp=stamp, echo_stamp=e) for a, e in zip(adverts, echo_stamps)]
    got = [a for p in Encoder(seq_start=1).encode(sent, SRC) for a in decode(p).adverts]
    for s, g in zip(sent, got):
        for before, after in ((s.stamp, g.stamp), (s.echo_stamp, g.echo_stamp)):
            # never later, and less than a microsecond (+ float spacing) earlier; exact: Sterbenz
            assert 0 <= before - after < 1e-6 + math.ulp(before)
    assert [a for p in Encoder(seq_start=1).encode(got, SRC) for a in decode(p).adverts] == got


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes(data):
    assert isinstance(one_reason(receiver([]), data), Reject)


@FUZZ
@given(node_adverts, st.data())
def test_truncated(adverts, data):
    pkt = signed(adverts)
    cut = data.draw(st.integers(0, len(pkt) - 1))
    assert one_reason(receiver(adverts), pkt[:cut]) is Reject.TRUNCATED


@FUZZ
@given(node_adverts, st.binary(min_size=1, max_size=1600))
def test_oversized(adverts, extra):
    pkt = signed(adverts)
    assert isinstance(one_reason(receiver(adverts), pkt + extra), Reject)
    # even with the IP total length claiming the extra bytes, nothing but a reject comes out
    grown = bytearray(pkt + extra)
    grown[2:4] = struct.pack(">H", min(len(grown), 0xFFFF))
    assert isinstance(one_reason(receiver(adverts), rechecksum(grown)), Reject)


@FUZZ
@given(node_adverts, st.data())
def test_bit_flips_never_forge_content(adverts, data):
    """Flipped bits are rejected; the only way through is a flip the HMAC does not cover
    (IP ID, say, with a compensating flip) and then the content is the original's."""
    genuine = signed(adverts)
    pkt = bytearray(genuine)
    for bit in data.draw(st.lists(st.integers(0, len(pkt) * 8 - 1), min_size=1, max_size=4,
                                  unique=True)):
        pkt[bit // 8] ^= 1 << (bit % 8)
    result = one_reason(receiver(adverts), bytes(pkt))
    assert isinstance(result, Reject) or (result.adverts, result.seq) == \
        (decode(genuine).adverts, 1)


@FUZZ
@given(node_adverts, st.data())
def test_single_bit_flip_always_rejected(adverts, data):
    pkt = bytearray(signed(adverts))
    bit = data.draw(st.integers(0, len(pkt) * 8 - 1))
    pkt[bit // 8] ^= 1 << (bit % 8)
    assert isinstance(one_reason(receiver(adverts, require_auth=False), bytes(pkt)), Reject)


def envelope(pkt: bytes | bytearray) -> set[int]:
    """Byte offsets read before the HMAC check (they say where the signed part is) and not
    covered by it: VRRP version/type, address count, checksum, magic, trailer version."""
    t = trailer_at(pkt)
    return {20, 23, 26, 27, *range(t, t + 5)}


@FUZZ
@given(node_adverts, st.data())
def test_rechecksummed_tampering_is_always_auth(adverts, data):
    """Verify before believing: an attacker who edits any byte the HMAC covers (record
    count, lengths, names, sequence, stamps, the scheme byte, the HMAC itself) and fixes up
    both checksums gets `auth`, never a reason that shows a claim was read first
    (malformed, truncated, replay, unknown_gateway, …)."""
    pkt = bytearray(signed(adverts))
    skip = envelope(pkt)
    pos = data.draw(st.integers(21, len(pkt) - 1).filter(lambda p: p not in skip))
    pkt[pos] ^= data.draw(st.integers(1, 255))
    assert one_reason(receiver(adverts), rechecksum(pkt)) is Reject.AUTH


@FUZZ
@given(node_adverts, st.integers(1, 2**63))
def test_sequence_bumped_copy_is_auth_and_moves_no_window(adverts, bump):
    r, genuine = receiver(adverts), signed(adverts, seq=1000)
    assert isinstance(one_reason(r, genuine), Frame)
    bumped = bytearray(genuine)
    at = trailer_at(bumped) + 8
    seq = struct.unpack_from(">Q", bumped, at)[0]
    struct.pack_into(">Q", bumped, at, (seq + bump) % 2**64)
    assert one_reason(r, rechecksum(bumped)) is Reject.AUTH
    assert isinstance(one_reason(r, signed(adverts, seq=1001)), Frame)   # window untouched


@FUZZ
@given(node_adverts)
def test_valid_but_replayed(adverts):
    r, pkt = receiver(adverts), signed(adverts)
    assert isinstance(one_reason(r, pkt), Frame)
    assert one_reason(r, pkt) is Reject.REPLAY


def test_decode_accepts_memoryview_and_bytearray():
    advert = Advert("a", "egress-1", 42, Role.STANDBY, 0, 1, 100, None, True, True)
    pkt = signed([advert])
    assert decode(memoryview(pkt)).adverts == decode(bytearray(pkt)).adverts == (advert,)


def test_known_edge_cases():
    advert = Advert("a", "egress-1", 42, Role.STANDBY, 0, 1, 100, None, True, True)
    pkt = bytearray(signed([advert]))
    t, r = trailer_at(pkt), first_record_at(pkt)
    for patch, reason in (((0, 0x65), Reject.MALFORMED),       # IP version 6
                          ((9, 17), Reject.MALFORMED),          # not protocol 112
                          ((8, 254), Reject.TTL),
                          ((20, 0x21), Reject.VERSION),
                          ((20, 0x32), Reject.TYPE),
                          ((t + 4, 1), Reject.VERSION),         # trailer v1: no stamps
                          ((t + 4, 2), Reject.VERSION),         # trailer v2: one gateway
                          ((t + 4, 4), Reject.VERSION),
                          ((t + 6, 2), Reject.AUTH),            # unknown auth scheme
                          ((t + 7, 0), Reject.AUTH),            # a claim changed: not signed
                          ((r + 3, HEARD_MAX + 1), Reject.AUTH)):
        bad = bytearray(pkt)
        bad[patch[0]] = patch[1]
        assert receiver([advert]).process(rechecksum(bad), 0) is reason, patch
    # a signing peer's bad claims are still refused once authenticated
    for patch in ((t + 16, 0xFF), (r + 14, 0xFF),   # stamps beyond STAMP_MAX: could not echo
                  (r + 3, HEARD_MAX + 1), (t + 7, 0), (t + 5, 1), (r, 43)):
        bad = bytearray(pkt)
        bad[patch[0]] = patch[1]
        assert receiver([advert]).process(resign(bad), 0) is Reject.MALFORMED, patch
