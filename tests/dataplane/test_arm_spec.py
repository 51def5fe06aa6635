"""One specification of the dead-man arming (``ArmTarget.guard``/``elements``), two
renderers: nft text for the reconcile's transaction, netlink for the refresh (no root)."""

from __future__ import annotations

import socket
import struct

import pytest

from vipmgr.dataplane import netlink as nl
from vipmgr.dataplane import nftarm
from vipmgr.dataplane.nftstate import ArmElement, ArmTarget

VIP_TARGET = ArmTarget("egress-gw", "192.0.2.100", True, 2.0)
PRIMARY_TARGET = ArmTarget("gw", "198.51.100.7", False, 2.0)


def test_the_spec_lists_the_guard_and_the_armed_elements():
    assert VIP_TARGET.guard() == ArmElement("inet", "g-egress-gw-egress", "ipv4_addr",
                                            "192.0.2.100")
    assert VIP_TARGET.elements(1500) == [
        ArmElement("inet", "g-egress-gw-armed", "nf_proto", "ipv4", 1500),
        ArmElement("arp", "armed", "ipv4_addr", "192.0.2.100", 1500)]
    assert PRIMARY_TARGET.elements(300) == [
        ArmElement("inet", "g-gw-armed", "nf_proto", "ipv4", 300)]


def test_nft_text_arming_is_what_the_reconcile_always_ran():
    assert VIP_TARGET.arm_lines(1500) == [
        "add element inet vipmgr g-egress-gw-armed { ipv4 timeout 1500ms expires 1500ms }",
        "add element arp vipmgr armed { 192.0.2.100 timeout 1500ms expires 1500ms }"]
    assert PRIMARY_TARGET.arm_lines(300) == [
        "add element inet vipmgr g-gw-armed { ipv4 timeout 300ms expires 300ms }"]
    assert PRIMARY_TARGET.arm_lines(300, guarded=True) == [
        "delete element inet vipmgr g-gw-egress { 198.51.100.7 }",
        "add element inet vipmgr g-gw-egress { 198.51.100.7 }",
        "add element inet vipmgr g-gw-armed { ipv4 timeout 300ms expires 300ms }"]


def _decode(batch: bytes) -> list[tuple[str, ArmElement]]:
    """The set-element messages of a refresh batch, back as (op, ArmElement)."""
    families = {v: k for k, v in nftarm._FAMILIES.items()}
    out = []
    for kind, _flags, _seq, off, end in nl.messages(batch):
        if kind not in (nftarm.NFT_MSG_NEWSETELEM, nftarm.NFT_MSG_DELSETELEM):
            continue
        family = families[batch[off + nl.HEADER.size]]
        top = nl.attr_map(batch, off + nl.HEADER.size + 4, end)
        set_name = top[nftarm.SET_ELEM_LIST_SET].rstrip(b"\0").decode()
        elements = top[nftarm.SET_ELEM_LIST_ELEMENTS]
        (elem,) = [elements[o:e] for k, o, e in nl.attrs(elements, 0, len(elements))]
        fields = nl.attr_map(elem, 0, len(elem))
        key_attr = fields[nftarm.SET_ELEM_KEY]
        key = nl.attr_map(key_attr, 0, len(key_attr))[nftarm.DATA_VALUE]
        if len(key) == 4:
            key_type, text = "ipv4_addr", socket.inet_ntoa(key)
        else:
            key_type, text = "nf_proto", {nftarm.NFPROTO_IPV4: "ipv4"}[key[0]]
        timeout = fields.get(nftarm.SET_ELEM_TIMEOUT)
        if timeout is not None:
            assert fields[nftarm.SET_ELEM_EXPIRATION] == timeout
        ms = struct.unpack(">Q", timeout)[0] if timeout is not None else None
        op = "add" if kind == nftarm.NFT_MSG_NEWSETELEM else "delete"
        out.append((op, ArmElement(family, set_name, key_type, text, ms)))
    return out


@pytest.mark.parametrize("target, ms", [(VIP_TARGET, 1500), (PRIMARY_TARGET, 300)])
def test_the_netlink_refresh_sends_exactly_the_guarded_spec(monkeypatch, target, ms):
    sock = nftarm.ArmSocket()
    sent: list[bytes] = []
    monkeypatch.setattr(sock, "send", sent.append)
    monkeypatch.setattr(sock, "_await_acks", lambda owners: None)
    try:
        sock.refresh([(target, ms)])
    finally:
        sock.close()
    guard = target.guard()
    assert _decode(sent[0]) == [("delete", guard), ("add", guard),
                                *(("add", e) for e in target.elements(ms))]
    # and the nft text renderer says the same, line for line
    assert [f"{op} element {e.family} vipmgr {e.set_name} {e.nft()}"
            for op, e in _decode(sent[0])] == target.arm_lines(ms, guarded=True)
