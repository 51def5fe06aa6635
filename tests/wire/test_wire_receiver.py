"""Receiver: authentication and key rotation, replay window, gateway checks, silence."""

from __future__ import annotations

import dataclasses

from heartbeat_attacks import tampered
from vipmgr.wire.codec import Encoder
from vipmgr.wire.keys import KeyRing, seal, unseal
from vipmgr.wire.message import Frame, Reject
from vipmgr.wire.receiver import PEERS_PER_GATEWAY_MAX, REPLAY_WINDOW, Receiver, RejectLog

SRC = "192.0.2.1"


def rx(keys=(), require_auth=False, node="node-z") -> Receiver:
    return Receiver(node=node, gateways={"egress-1": 42}, keyring=KeyRing(tuple(keys), require_auth))


def test_accepts_and_counts(advert):
    r = rx()
    frame = r.process(Encoder(seq_start=1).encode(advert, SRC), now=0.0)
    assert isinstance(frame, Frame) and frame.advert == advert and frame.src == SRC
    assert r.counters == {"accepted": 1}


def test_exact_replay_is_rejected(advert):
    r, pkt = rx(), Encoder(seq_start=1).encode(advert, SRC)
    assert isinstance(r.process(pkt, 0.0), Frame)
    assert r.process(pkt, 0.1) is Reject.REPLAY
    assert r.counters == {"accepted": 1, "replay": 1}


def test_window_tolerates_reordering_but_not_old_or_duplicate(advert):
    r, enc = rx(), Encoder(seq_start=1000)
    pkts = [enc.encode(advert, SRC) for _ in range(REPLAY_WINDOW + 2)]
    assert isinstance(r.process(pkts[-1], 0), Frame)            # newest first
    assert isinstance(r.process(pkts[2], 0), Frame)             # inside the window, late
    assert r.process(pkts[2], 0) is Reject.REPLAY               # ... but only once
    assert r.process(pkts[1], 0) is Reject.REPLAY               # just fell out of the window
    assert r.process(pkts[0], 0) is Reject.REPLAY


def test_restarted_sender_rejoins(advert):
    r = rx()
    old = Encoder()                                   # seeded from the wall clock
    for _ in range(1000):
        assert isinstance(r.process(old.encode(advert, SRC), 0), Frame)
    assert isinstance(r.process(Encoder().encode(advert, SRC), 1), Frame)


def test_two_keys_accepted_for_rotation(advert, keys):
    a, b = keys
    r = rx(keys=(b, a), require_auth=True)
    fa = r.process(Encoder(a, seq_start=1).encode(advert, SRC), 0)
    fb = r.process(Encoder(b, seq_start=2).encode(advert, SRC), 0)
    assert (fa.key_index, fb.key_index) == (1, 0)
    assert fa.authenticated and fb.authenticated


def test_wrong_key_missing_mac_and_forged_high_sequence(advert, keys):
    a, b = keys
    r = rx(keys=(a,), require_auth=True)
    assert r.process(Encoder(b, seq_start=2**63).encode(advert, SRC), 0) is Reject.AUTH
    assert r.process(Encoder(None, seq_start=2**63).encode(advert, SRC), 0) is Reject.AUTH
    # the forged sequences did not poison the replay window
    assert isinstance(r.process(Encoder(a, seq_start=5).encode(advert, SRC), 0), Frame)
    assert r.counters == {"auth": 2, "accepted": 1}


def test_auth_optional_mode_still_verifies_signed_packets(advert, keys):
    a, b = keys
    r = rx(keys=(a,), require_auth=False)
    assert isinstance(r.process(Encoder(None, seq_start=1).encode(advert, SRC), 0), Frame)
    assert r.process(Encoder(b, seq_start=2).encode(advert, SRC), 0) is Reject.AUTH


def test_gateway_vrid_and_own_checks(advert):
    r, enc = rx(node="node-a"), Encoder(seq_start=1)
    assert r.process(enc.encode(advert, SRC), 0) is Reject.OWN
    r = rx()
    assert r.process(enc.encode(dataclasses.replace(advert, gateway="egress-9"), SRC), 0) \
        is Reject.UNKNOWN_GATEWAY
    assert r.process(enc.encode(dataclasses.replace(advert, vrid=43), SRC), 0) is Reject.VRID


def test_silence_is_k_times_the_senders_interval(advert):
    r, enc = rx(), Encoder(seq_start=1)
    r.process(enc.encode(advert, SRC), now=10.0)              # interval 20 ms
    assert set(r.heard("egress-1", now=10.059, k=3)) == {"node-a"}
    assert r.heard("egress-1", now=10.061, k=3) == {}
    assert r.heard("egress-2", now=10.0, k=3) == {}


def test_capacity_bound_and_gateway_removal(advert):
    r, enc = rx(), Encoder(seq_start=1)
    for i in range(PEERS_PER_GATEWAY_MAX):
        assert isinstance(r.process(enc.encode(dataclasses.replace(advert, node=f"n{i}"), SRC), 0),
                          Frame)
    assert r.process(enc.encode(dataclasses.replace(advert, node="one-more"), SRC), 0) \
        is Reject.CAPACITY
    r.set_gateways({"egress-1": 42})
    r.forget("egress-1", "n0")
    assert isinstance(r.process(enc.encode(dataclasses.replace(advert, node="one-more"), SRC), 0),
                      Frame)
    r.set_gateways({})
    assert r.heard("egress-1", 0, 3) == {}
    assert r.process(enc.encode(advert, SRC), 0) is Reject.UNKNOWN_GATEWAY


# --- attacks on the segment (issue: "counted as replay") -----------------------------------

def captured(advert, keys):
    """A genuine heartbeat as captured on the segment (the golden bytes of test_wire_codec)."""
    return Encoder(keys[0], seq_start=0x0102030405060708).encode(advert, SRC)


def test_every_tampering_of_a_captured_heartbeat_is_auth_and_changes_nothing(advert, keys):
    genuine = captured(advert, keys)
    r = rx(keys=(keys[0],), require_auth=True)
    heard = r.process(genuine, 0.0)
    assert isinstance(heard, Frame)
    forgeries = tampered(genuine)
    for name, forged in forgeries.items():
        for _ in range(20):
            assert r.process(forged, 0.01) is Reject.AUTH, name
    assert r.counters == {"accepted": 1, "auth": 20 * len(forgeries)}
    # nothing moved: the peer is still the genuine frame, heard at 0.0, window at its seq
    assert r.heard("egress-1", 0.0, 3) == {"node-a": heard}
    nxt = Encoder(keys[0], seq_start=0x0102030405060709).encode(advert, SRC)
    assert isinstance(r.process(nxt, 0.02), Frame)


def test_replayed_capture_is_replay_after_auth(advert, keys):
    genuine = captured(advert, keys)
    r = rx(keys=(keys[0],), require_auth=True)
    assert isinstance(r.process(genuine, 0.0), Frame)
    for _ in range(20):
        assert r.process(genuine, 0.01) is Reject.REPLAY
    assert r.counters == {"accepted": 1, "replay": 20}


def test_a_forger_without_the_key_never_gets_in(advert, keys):
    r = rx(keys=(keys[0],), require_auth=True)
    forger = Encoder(keys[1], seq_start=2**64 - 100)
    for prio in (0, 255):
        assert r.process(forger.encode(dataclasses.replace(advert, priority=prio), SRC), 0) \
            is Reject.AUTH
    assert r.heard("egress-1", 0, 3) == {} and r.counters == {"auth": 2}


def test_reject_log_is_one_line_per_source_and_interval_with_a_count(advert, keys):
    log = RejectLog(interval=10.0)
    forged = tampered(captured(advert, keys))["priority"]
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
    hb = Encoder(a, seq_start=1).encode(advert, SRC)[20:]
    assert unseal(sender, "conntrack", hb[:6] + b"\0\0" + hb[8:]) is None
