"""Fuzzing the receive path: whatever arrives, no exception and exactly one counted reason."""

from __future__ import annotations

import dataclasses
import hmac
import math
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heartbeat_attacks import rechecksum
from vipmgr.wire.codec import STAMP_US_MAX, Encoder, decode
from vipmgr.wire.keys import KeyRing
from vipmgr.wire.message import HEARD_MAX, STAMP_MAX, Advert, Frame, Reject, Role
from vipmgr.wire.receiver import Receiver

SRC = "192.0.2.1"
KEY = bytes(range(32))
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)
# whole microseconds (what a decoded stamp is), so the round trip is exact
stamps = st.integers(0, STAMP_US_MAX - 1).map(lambda us: us / 1_000_000)
adverts = st.builds(
    Advert, node=names, gateway=st.just("egress-1"), vrid=st.just(42),
    role=st.sampled_from(Role), epoch=st.integers(0, 2**64 - 1), priority=st.integers(0, 255),
    interval_ms=st.integers(1, 65535),
    egress_ip=st.one_of(st.none(), st.ip_addresses(v=4, network="198.51.100.0/24").map(str)),
    healthy=st.booleans(), etcd_reachable=st.booleans(),
    heard=st.lists(names, max_size=HEARD_MAX).map(tuple), stamp=stamps,
    echo_node=st.one_of(st.none(), names), echo_stamp=stamps)


def receiver(require_auth: bool = True) -> Receiver:
    return Receiver(node="node-z", gateways={"egress-1": 42},
                    keyring=KeyRing((KEY,), require_auth=require_auth))


def signed(advert: Advert, seq: int = 1) -> bytes:
    return Encoder(KEY, seq_start=seq).encode(advert, SRC)


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
@given(adverts, st.integers(0, 2**64 - 1))
def test_round_trip(advert, seq):
    pkt = Encoder(KEY, seq_start=seq).encode(advert, SRC)
    frame = receiver().process(pkt, 0.0)
    assert isinstance(frame, Frame) and frame.advert == advert and frame.seq == seq


@FUZZ
@given(adverts, st.floats(0, STAMP_MAX, exclude_max=True), st.floats(0, STAMP_MAX, exclude_max=True))
def test_any_stamp_decodes_to_its_microsecond_floor(advert, stamp, echo_stamp):
    sent = dataclasses.replace(advert, stamp=stamp, echo_stamp=echo_stamp)
    got = decode(Encoder(seq_start=1).encode(sent, SRC)).advert
    for before, after in ((stamp, got.stamp), (echo_stamp, got.echo_stamp)):
        # never later, and less than a microsecond (+ float spacing) earlier; exact: Sterbenz
        assert 0 <= before - after < 1e-6 + math.ulp(before)
    assert decode(Encoder(seq_start=1).encode(got, SRC)).advert == got


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes(data):
    assert isinstance(one_reason(receiver(), data), Reject)


@FUZZ
@given(adverts, st.data())
def test_truncated(advert, data):
    pkt = signed(advert)
    cut = data.draw(st.integers(0, len(pkt) - 1))
    assert one_reason(receiver(), pkt[:cut]) is Reject.TRUNCATED


@FUZZ
@given(adverts, st.binary(min_size=1, max_size=1600))
def test_oversized(advert, extra):
    pkt = signed(advert)
    assert isinstance(one_reason(receiver(), pkt + extra), Reject)
    # even with the IP total length claiming the extra bytes, nothing but a reject comes out
    grown = bytearray(pkt + extra)
    grown[2:4] = struct.pack(">H", min(len(grown), 0xFFFF))
    assert isinstance(one_reason(receiver(), rechecksum(grown)), Reject)


@FUZZ
@given(adverts, st.data())
def test_bit_flips_never_forge_content(advert, data):
    """Flipped bits are rejected; the only way through is a flip the HMAC does not cover
    (IP ID, say, with a compensating flip) and then the content is the original's."""
    pkt = bytearray(signed(advert))
    for bit in data.draw(st.lists(st.integers(0, len(pkt) * 8 - 1), min_size=1, max_size=4,
                                  unique=True)):
        pkt[bit // 8] ^= 1 << (bit % 8)
    result = one_reason(receiver(), bytes(pkt))
    assert isinstance(result, Reject) or (result.advert, result.seq) == (advert, 1)


@FUZZ
@given(adverts, st.data())
def test_single_bit_flip_always_rejected(advert, data):
    pkt = bytearray(signed(advert))
    bit = data.draw(st.integers(0, len(pkt) * 8 - 1))
    pkt[bit // 8] ^= 1 << (bit % 8)
    assert isinstance(one_reason(receiver(require_auth=False), bytes(pkt)), Reject)


def envelope(pkt: bytes | bytearray) -> set[int]:
    """Byte offsets read before the HMAC check (they say where the signed part is) and not
    covered by it: VRRP version/type, address count, checksum, magic, trailer version."""
    trailer = 20 + 8 + 4 * pkt[23]
    return {20, 23, 26, 27, *range(trailer, trailer + 5)}


@FUZZ
@given(adverts, st.data())
def test_rechecksummed_tampering_is_always_auth(advert, data):
    """Verify before believing: an attacker who edits any byte the HMAC covers (lengths,
    names, sequence, stamps, the scheme byte, the HMAC itself) and fixes up both checksums
    gets `auth`, never a reason that shows a claim was read first (malformed, truncated,
    replay, unknown_gateway, …)."""
    pkt = bytearray(signed(advert))
    skip = envelope(pkt)
    pos = data.draw(st.integers(21, len(pkt) - 1).filter(lambda p: p not in skip))
    pkt[pos] ^= data.draw(st.integers(1, 255))
    assert one_reason(receiver(), rechecksum(pkt)) is Reject.AUTH


@FUZZ
@given(adverts, st.integers(1, 2**63))
def test_sequence_bumped_copy_is_auth_and_moves_no_window(advert, bump):
    r, genuine = receiver(), signed(advert, seq=1000)
    assert isinstance(one_reason(r, genuine), Frame)
    bumped = bytearray(genuine)
    trailer = 20 + 8 + 4 * bumped[23]
    seq = struct.unpack_from(">Q", bumped, trailer + 8)[0]
    struct.pack_into(">Q", bumped, trailer + 8, (seq + bump) % 2**64)
    assert one_reason(r, rechecksum(bumped)) is Reject.AUTH
    assert isinstance(one_reason(r, signed(advert, seq=1001)), Frame)   # window untouched


@FUZZ
@given(adverts)
def test_valid_but_replayed(advert):
    r, pkt = receiver(), signed(advert)
    assert isinstance(one_reason(r, pkt), Frame)
    assert one_reason(r, pkt) is Reject.REPLAY


def test_decode_accepts_memoryview_and_bytearray():
    advert = Advert("a", "egress-1", 42, Role.STANDBY, 0, 1, 100, None, True, True)
    pkt = signed(advert)
    assert decode(memoryview(pkt)).advert == decode(bytearray(pkt)).advert == advert


def test_known_edge_cases():
    advert = Advert("a", "egress-1", 42, Role.STANDBY, 0, 1, 100, None, True, True)
    pkt = bytearray(signed(advert))
    for patch, reason in (((0, 0x65), Reject.MALFORMED),       # IP version 6
                          ((9, 17), Reject.MALFORMED),          # not protocol 112
                          ((8, 254), Reject.TTL),
                          ((20, 0x21), Reject.VERSION),
                          ((20, 0x32), Reject.TYPE),
                          ((32, 1), Reject.VERSION),            # trailer v1: no stamps
                          ((32, 3), Reject.VERSION),
                          ((34, 2), Reject.AUTH),               # unknown auth scheme
                          ((54, 0xFF), Reject.AUTH),            # a claim changed: not signed
                          ((35, HEARD_MAX + 1), Reject.AUTH)):
        bad = bytearray(pkt)
        bad[patch[0]] = patch[1]
        assert receiver().process(rechecksum(bad), 0) is reason, patch
    # a signing peer's bad claims are still refused once authenticated
    for patch in ((54, 0xFF), (62, 0xFF),       # stamps beyond STAMP_MAX: echoing could not encode
                  (35, HEARD_MAX + 1)):
        bad = bytearray(pkt)
        bad[patch[0]] = patch[1]
        assert receiver().process(resign(bad), 0) is Reject.MALFORMED, patch
