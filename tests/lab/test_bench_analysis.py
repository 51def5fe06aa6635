"""The failover benchmark's arithmetic on synthetic instrument logs: every figure can be wrong."""

from __future__ import annotations

import math

import pytest

from vipmgr.lab.analysis import (
    Sent,
    analyze,
    dual_answers,
    mac_sequence,
    outage,
    percentile,
    summarize,
)
from vipmgr.lab.echo import UdpRecord
from vipmgr.lab.probe import ArpAnswer, _arp_answer_mac, _arp_request

VIP = "192.0.2.100"
MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
T0 = 100.0


def stream(first: int, count: int, *, gap: range = range(0), wrong: dict[int, str] | None = None,
           mac_of=lambda seq: MAC_A) -> tuple[list[UdpRecord], list[UdpRecord]]:
    """Echo UDP and L2 logs of a 1 kHz stream: ``gap`` seqs lost, ``wrong`` seqs SNATed badly."""
    udp, l2 = [], []
    for seq in range(first, first + count):
        if seq in gap:
            continue
        source = (wrong or {}).get(seq, VIP)
        arrival = T0 + (seq - first) / 1000 + 0.0002
        udp.append(UdpRecord(seq, source, arrival))
        l2.append(UdpRecord(seq, source, arrival, mac_of(seq)))
    return udp, l2


def test_a_known_gap_and_wrong_sources_give_exact_figures():
    # 1000 datagrams, fault at 0.5 s; seqs 500-579 never arrive (an 80 ms hole), then
    # 585-589 arrive with a node's own address instead of the VIP.
    wrong = {seq: "192.0.2.12" for seq in range(585, 590)}
    udp, l2 = stream(0, 1000, gap=range(500, 580), wrong=wrong,
                     mac_of=lambda seq: MAC_A if seq < 500 else MAC_B)
    udp.append(udp[10])  # one duplicate
    udp.append(UdpRecord(5000, "198.18.0.22", T0 + 0.3))  # another trial's datagram: ignored
    result = analyze(0, "crash", T0 + 0.4995, Sent(0, 1000, T0, T0 + 0.999), VIP, udp, l2, [],
                     "gw-a", "gw-b", {MAC_A: "gw-a", MAC_B: "gw-b"})
    # good arrivals: 499 at +0.4992, then (580-584 are good) 580 at +0.5802
    assert result.outage_ms == pytest.approx(81.0)
    assert result.lost == 80 and result.received == 920 and result.sent == 1000
    assert result.duplicates == 1
    assert result.wrong_source == 5 and result.wrong_sources == {"192.0.2.12": 5}
    assert result.served_by == ["gw-a", "gw-b"] and result.mac_flip_backs == 0
    assert result.recovered


def test_wrong_source_datagrams_do_not_hide_an_outage():
    # Datagrams keep arriving, but from the wrong address: the service is out all the same.
    wrong = {seq: "198.18.0.22" for seq in range(500, 700)}
    udp, l2 = stream(0, 1000, wrong=wrong)
    result = analyze(0, "crash", T0 + 0.4995, Sent(0, 1000, T0, T0 + 0.999), VIP, udp, l2, [],
                     "gw-a", "gw-b")
    assert result.outage_ms == pytest.approx(201.0)
    assert result.lost == 0 and result.wrong_source == 200


def test_a_stream_that_never_recovers_is_flagged_with_a_lower_bound():
    udp, l2 = stream(0, 1000, gap=range(500, 1000))
    result = analyze(0, "freeze", T0 + 0.4995, Sent(0, 1000, T0, T0 + 0.999), VIP, udp, l2, [],
                     "gw-a", None)
    assert not result.recovered
    assert result.outage_ms == pytest.approx(499.8)
    assert result.lost == 500


def test_gaps_before_the_fault_are_not_the_outage():
    gaps = [T0 + i / 1000 for i in range(1000) if not 100 <= i < 300]  # 200 ms hole before
    assert outage(gaps, T0 + 0.5, T0 + 1.0) == (pytest.approx(0.001), True)
    assert outage([], T0, T0 + 1.0) == (1.0, False)


def test_dual_answers_count_probes_answered_by_two_macs():
    answers = [ArpAnswer(1, MAC_A, T0), ArpAnswer(2, MAC_A, T0 + 0.01),
               ArpAnswer(2, MAC_B, T0 + 0.0101), ArpAnswer(3, MAC_B, T0 + 0.02),
               ArpAnswer(3, MAC_B, T0 + 0.0201), ArpAnswer(5, MAC_A, T0 + 0.04),
               ArpAnswer(5, MAC_B, T0 + 0.04)]
    assert dual_answers(answers) == (2, 4)
    assert dual_answers([]) == (0, 0)


def test_mac_flip_backs_catch_two_nodes_forwarding_for_the_vip():
    recs = [UdpRecord(i, VIP, T0 + i, mac) for i, mac in
            enumerate([MAC_A, MAC_A, MAC_B, MAC_A, MAC_B, MAC_B])]
    assert mac_sequence(recs) == ([MAC_A, MAC_B, MAC_A, MAC_B], 2)
    assert mac_sequence(recs[:3]) == ([MAC_A, MAC_B], 0)


def test_percentiles_are_nearest_rank_and_summary_totals_add_up():
    assert percentile([5, 1, 3], 50) == 3
    assert percentile(list(range(1, 11)), 99) == 10
    assert percentile(list(range(1, 201)), 99) == 198
    assert math.isnan(percentile([], 50))
    udp, l2 = stream(0, 100, gap=range(40, 50))
    a = analyze(0, "crash", T0 + 0.0395, Sent(0, 100, T0, T0 + 0.099), VIP, udp, l2, [], "a", "b")
    udp, l2 = stream(100, 100, gap=range(130, 160), wrong={170: "198.18.0.22"})
    b = analyze(1, "crash", T0 + 0.0295, Sent(100, 100, T0, T0 + 0.099), VIP, udp, l2, [],
                "b", "a")
    summary = summarize([a, b])
    assert summary["outage_ms"] == {"p50": 11.0, "p99": 31.0, "max": 31.0}
    assert (summary["lost"], summary["wrong_source"], summary["sent"]) == (40, 1, 200)


def test_the_arp_probe_frame_and_answer_parser():
    mac = bytes.fromhex("020000000001")
    frame = _arp_request(mac, VIP)
    assert len(frame) == 42 and frame[:6] == b"\xff" * 6 and frame[28:32] == bytes(4)
    # an answer from MAC_B: sender hardware MAC_B, sender IP = the VIP
    reply = (bytes(6) + bytes.fromhex(MAC_B.replace(":", "")) + b"\x08\x06"
             + b"\x00\x01\x08\x00\x06\x04\x00\x02" + bytes.fromhex(MAC_B.replace(":", ""))
             + bytes([192, 0, 2, 100]) + mac + bytes(4))
    assert _arp_answer_mac(reply, bytes([192, 0, 2, 100])) == MAC_B
    assert _arp_answer_mac(reply, bytes([192, 0, 2, 101])) is None
    assert _arp_answer_mac(frame, bytes([192, 0, 2, 100])) is None  # our own probe
