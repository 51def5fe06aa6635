"""Receiver: authentication and key rotation, the per-node replay window, gateway
filtering of records, silence per gateway."""

from __future__ import annotations

import dataclasses

from heartbeat_attacks import tampered
from vipmgr.wire.codec import Encoder
from vipmgr.wire.keys import KeyRing, seal, unseal
from vipmgr.wire.message import Frame, Reject
from vipmgr.wire.receiver import REPLAY_WINDOW, SENDERS_MAX, Receiver, RejectLog

SRC = "192.0.2.1"
GATEWAYS = {"egress-1": 42, "egress-2": 7}


def rx(keys=(), require_auth=False, node="node-z") -> Receiver:
    return Receiver(node=node, gateways=dict(GATEWAYS), keyring=KeyRing(tuple(keys), require_auth))


def one(enc: Encoder, *adverts) -> bytes:
    [pkt] = enc.encode(adverts, SRC)
    return pkt


def test_accepts_and_counts(advert, advert2):
    r = rx()
    frame = r.process(one(Encoder(seq_start=1), advert, advert2), now=0.0)
    assert isinstance(frame, Frame) and frame.adverts == (advert, advert2) and frame.src == SRC
    assert r.counters == {"accepted": 1} and r.records_dropped == {}


def test_exact_replay_is_rejected(advert):
    r, pkt = rx(), one(Encoder(seq_start=1), advert)
    assert isinstance(r.process(pkt, 0.0), Frame)
    assert r.process(pkt, 0.1) is Reject.REPLAY
    assert r.counters == {"accepted": 1, "replay": 1}


def test_window_tolerates_reordering_but_not_old_or_duplicate(advert):
    r, enc = rx(), Encoder(seq_start=1000)
    pkts = [one(enc, advert) for _ in range(REPLAY_WINDOW + 2)]
    assert isinstance(r.process(pkts[-1], 0), Frame)            # newest first
    assert isinstance(r.process(pkts[2], 0), Frame)             # inside the window, late
    assert r.process(pkts[2], 0) is Reject.REPLAY               # ... but only once
    assert r.process(pkts[1], 0) is Reject.REPLAY               # just fell out of the window
    assert r.process(pkts[0], 0) is Reject.REPLAY


def test_one_replay_window_per_sender_node_across_gateways(advert, advert2):
    """A node sends one sequence stream for all its gateways: a sequence seen for one
    gateway is a replay for any other; another node's stream is its own."""
    r = rx()
    assert isinstance(r.process(one(Encoder(seq_start=10), advert), 0), Frame)
    assert r.process(one(Encoder(seq_start=10), advert2), 0) is Reject.REPLAY
    assert isinstance(r.process(one(Encoder(seq_start=11), advert2), 0), Frame)
    other = [dataclasses.replace(a, node="node-b") for a in (advert, advert2)]
    assert isinstance(r.process(one(Encoder(seq_start=10), *other), 0), Frame)
    assert r.counters == {"accepted": 3, "replay": 1}


def test_restarted_sender_rejoins(advert):
    r = rx()
    old = Encoder()                                   # seeded from the wall clock
    for _ in range(1000):
        assert isinstance(r.process(one(old, advert), 0), Frame)
    assert isinstance(r.process(one(Encoder(), advert), 1), Frame)


def test_two_keys_accepted_for_rotation(advert, keys):
    a, b = keys
    r = rx(keys=(b, a), require_auth=True)
    fa = r.process(one(Encoder(a, seq_start=1), advert), 0)
    fb = r.process(one(Encoder(b, seq_start=2), advert), 0)
    assert (fa.key_index, fb.key_index) == (1, 0)
    assert fa.authenticated and fb.authenticated


def test_wrong_key_missing_mac_and_forged_high_sequence(advert, keys):
    a, b = keys
    r = rx(keys=(a,), require_auth=True)
    assert r.process(one(Encoder(b, seq_start=2**63), advert), 0) is Reject.AUTH
    assert r.process(one(Encoder(None, seq_start=2**63), advert), 0) is Reject.AUTH
    # the forged sequences did not poison the replay window
    assert isinstance(r.process(one(Encoder(a, seq_start=5), advert), 0), Frame)
    assert r.counters == {"auth": 2, "accepted": 1}


def test_auth_optional_mode_still_verifies_signed_packets(advert, keys):
    a, b = keys
    r = rx(keys=(a,), require_auth=False)
    assert isinstance(r.process(one(Encoder(None, seq_start=1), advert), 0), Frame)
    assert r.process(one(Encoder(b, seq_start=2), advert), 0) is Reject.AUTH


def test_records_of_other_gateways_are_dropped_the_rest_accepted(advert, advert2):
    r, enc = rx(), Encoder(seq_start=1)
    unknown = dataclasses.replace(advert2, gateway="egress-9")
    other_vrid = dataclasses.replace(advert2, vrid=8)
    frame = r.process(one(enc, unknown, advert, other_vrid), 0)
    assert frame.adverts == (advert,) and frame.seq == 1
    assert r.records_dropped == {"unknown_gateway": 1, "vrid": 1}
    assert r.counters == {"accepted": 1}
    assert set(r.heard("egress-1", 0, 3)) == {"node-a"} and r.heard("egress-2", 0, 3) == {}


def test_no_record_for_us_rejects_the_datagram_and_leaves_the_window(advert, advert2):
    r = rx()
    unknown = dataclasses.replace(advert, gateway="egress-9")
    assert r.process(one(Encoder(seq_start=1000), unknown), 0) is Reject.UNKNOWN_GATEWAY
    assert r.process(one(Encoder(seq_start=1001), unknown,
                         dataclasses.replace(advert2, vrid=8)), 0) is Reject.VRID
    # far below 1000: had either touched node-a's window, this would be a replay
    assert isinstance(r.process(one(Encoder(seq_start=1), advert), 0), Frame)
    assert r.records_dropped == {}       # counted once, as the datagram's reason
    assert r.counters == {"unknown_gateway": 1, "vrid": 1, "accepted": 1}


def test_own_name_comes_before_the_gateway_check(advert):
    r, enc = rx(node="node-a"), Encoder(seq_start=1)
    assert r.process(one(enc, advert), 0) is Reject.OWN
    assert r.process(one(enc, dataclasses.replace(advert, gateway="egress-9")), 0) is Reject.OWN


def test_silence_is_k_times_the_interval_of_each_gateways_advert(advert, advert2):
    r, enc = rx(), Encoder(seq_start=1)
    slow = dataclasses.replace(advert2, interval_ms=100)
    r.process(one(enc, advert, slow), now=10.0)               # 20 ms and 100 ms
    assert r.heard("egress-1", now=10.059, k=3) == {"node-a": advert}
    assert r.heard("egress-1", now=10.061, k=3) == {}
    assert r.heard("egress-2", now=10.061, k=3) == {"node-a": slow}
    assert r.heard("egress-3", now=10.0, k=3) == {}
    # a later datagram without egress-1 refreshes egress-2 only
    fresher = dataclasses.replace(slow, priority=91)
    r.process(one(enc, fresher), now=10.2)
    assert r.heard("egress-2", now=10.45, k=3) == {"node-a": fresher}
    assert r.heard("egress-1", now=10.2, k=3) == {}


def test_capacity_is_per_sender_node_and_forgetting(advert, advert2):
    r, enc = rx(), Encoder(seq_start=1)
    for i in range(SENDERS_MAX):
        node = [dataclasses.replace(a, node=f"n{i}") for a in (advert, advert2)]
        assert isinstance(r.process(one(enc, *node), 0), Frame)
    more = dataclasses.replace(advert, node="one-more")
    assert r.process(one(enc, more), 0) is Reject.CAPACITY
    # forgetting a (gateway, node) drops what was heard, not the sender's window
    r.forget("egress-1", "n0")
    assert "n0" not in r.heard("egress-1", 0, 3) and "n0" in r.heard("egress-2", 0, 3)
    assert r.process(one(enc, more), 0) is Reject.CAPACITY
    r.forget_node("n0")
    assert isinstance(r.process(one(enc, more), 0), Frame)
    r.set_gateways({"egress-2": 7})
    assert r.heard("egress-1", 0, 3) == {} and len(r.heard("egress-2", 0, 3)) == SENDERS_MAX
    r.set_gateways({})
    assert r.heard("egress-2", 0, 3) == {}
    assert r.process(one(enc, advert), 0) is Reject.UNKNOWN_GATEWAY


def test_forget_node_lets_a_sender_whose_clock_stepped_back_rejoin(advert):
    r = rx()
    assert isinstance(r.process(one(Encoder(seq_start=10**6), advert), 0), Frame)
    assert r.process(one(Encoder(seq_start=10), advert), 0) is Reject.REPLAY
    r.forget_node("node-a")
    assert isinstance(r.process(one(Encoder(seq_start=10), advert), 0), Frame)


# --- attacks on the segment (issue: "counted as replay") -----------------------------------

def captured(adverts, keys):
    """A genuine heartbeat as captured on the segment (the golden bytes of test_wire_codec)."""
    return one(Encoder(keys[0], seq_start=0x0102030405060708), *adverts)


def test_every_tampering_of_a_captured_heartbeat_is_auth_and_changes_nothing(
        advert, advert2, keys):
    genuine = captured((advert, advert2), keys)
    r = rx(keys=(keys[0],), require_auth=True)
    assert isinstance(r.process(genuine, 0.0), Frame)
    forgeries = tampered(genuine)
    for name, forged in forgeries.items():
        for _ in range(20):
            assert r.process(forged, 0.01) is Reject.AUTH, name
    assert r.counters == {"accepted": 1, "auth": 20 * len(forgeries)}
    # nothing moved: the peer is still the genuine adverts, heard at 0.0, window at its seq
    assert r.heard("egress-1", 0.0, 3) == {"node-a": advert}
    assert r.heard("egress-2", 0.0, 3) == {"node-a": advert2}
    assert r.heard("egress-1", 0.061, 3) == {}
    nxt = one(Encoder(keys[0], seq_start=0x0102030405060709), advert, advert2)
    assert isinstance(r.process(nxt, 0.02), Frame)


def test_replayed_capture_is_replay_after_auth(advert, advert2, keys):
    genuine = captured((advert, advert2), keys)
    r = rx(keys=(keys[0],), require_auth=True)
    assert isinstance(r.process(genuine, 0.0), Frame)
    for _ in range(20):
        assert r.process(genuine, 0.01) is Reject.REPLAY
    assert r.counters == {"accepted": 1, "replay": 20}


def test_a_forger_without_the_key_never_gets_in(advert, keys):
    r = rx(keys=(keys[0],), require_auth=True)
    forger = Encoder(keys[1], seq_start=2**64 - 100)
    for prio in (0, 255):
        assert r.process(one(forger, dataclasses.replace(advert, priority=prio)), 0) \
            is Reject.AUTH
    assert r.heard("egress-1", 0, 3) == {} and r.counters == {"auth": 2}


def test_reject_log_is_one_line_per_source_and_interval_with_a_count(advert, keys):
    log = RejectLog(interval=10.0)
    forged = tampered(captured((advert,), keys))["priority"]
    lines = [log.note(forged, Reject.AUTH, 100.0 + i * 0.1) for i in range(20)]
    assert [x for x in lines if x] == ["heartbeat rejected as auth from 192.0.2.1"]
    assert log.note(forged, Reject.AUTH, 110.5) == \
        "heartbeat rejected as auth from 192.0.2.1: 20 since the line 10 s ago"
    other = bytearray(forged)
    other[12:16] = bytes((203, 0, 113, 9))
    assert log.note(bytes(other), Reject.AUTH, 110.6) == "heartbeat rejected as auth from 203.0.113.9"
    assert log.note(forged, Reject.OWN, 110.7) is None           # not an attacker's signature
    assert log.note(b"\x45", Reject.AUTH, 110.8) == "heartbeat rejected as auth from ?"


def test_other_channels_seal_with_the_heartbeat_keys_and_cannot_be_crossed(advert, keys):
    a, b = keys
    sender, rotated, other = KeyRing((a,)), KeyRing((b, a)), KeyRing((b,))
    msg = seal(sender, "conntrack", b"flow 198.51.100.10:4242")
    assert unseal(rotated, "conntrack", msg) == b"flow 198.51.100.10:4242"   # old key, overlap
    assert unseal(other, "conntrack", msg) is None                          # not our key
    assert unseal(rotated, "other-channel", msg) is None                    # domain separated
    tampered = bytearray(msg)
    tampered[0] ^= 1
    assert unseal(rotated, "conntrack", bytes(tampered)) is None
    assert unseal(rotated, "conntrack", msg[:10]) is None and unseal(KeyRing(), "conntrack", msg) is None
    # a heartbeat's HMAC never verifies as a channel message, nor the reverse
    hb = one(Encoder(a, seq_start=1), advert)[20:]
    assert unseal(sender, "conntrack", hb[:6] + b"\0\0" + hb[8:]) is None
