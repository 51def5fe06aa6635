"""The netlink framing shared by the hand-built kernel paths (vipmgr.dataplane.netlink).

No root needed: messages are checked against pyroute2's encoder (an independent
implementation) or against golden bytes, and the socket helpers are fed through a
datagram socketpair standing in for the kernel.
"""

import errno
import socket
import struct

import pytest
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from vipmgr.dataplane import layout as L
from vipmgr.dataplane import netlink as nl
from vipmgr.dataplane.kernel import KernelError
from vipmgr.dataplane.nftarm import ArmSocket, CounterReader, NFT_MSG_NEWOBJ
from vipmgr.dataplane.nftstate import ArmTarget
from vipmgr.dataplane.rtnl import RTM_NEWROUTE, RouteSocket, _parse_route

# The dead-man refresh batches as the hand-built encoder sent them before the
# framing was shared (vipmgr 0.x, nftarm.py with its own helpers): the shared
# module must not change one byte of them.
REFRESH_VIP = (
    "140000001000010001000000000000000000000a4c0000000e0a05000200000000000000"
    "010000000b0001007669706d6772000017000200672d6567726573732d67772d65677265"
    "7373000014000380100001800c00018008000100c00002644c0000000c0a050403000000"
    "00000000010000000b0001007669706d6772000017000200672d6567726573732d67772d"
    "656772657373000014000380100001800c00018008000100c0000264640000000c0a0504"
    "0400000000000000010000000b0001007669706d6772000016000200672d656772657373"
    "2d67772d61726d65640000002c000380280001800c00018005000100020000000c000400"
    "00000000000005dc0c00050000000000000005dc580000000c0a05040500000000000000"
    "030000000b0001007669706d677200000a00020061726d65640000002c00038028000180"
    "0c00018008000100c00002640c00040000000000000005dc0c00050000000000000005dc"
    "140000001100010006000000000000000000000a")
REFRESH_PRIMARY = (
    "140000001000010001000000000000000000000a440000000e0a05000200000000000000"
    "010000000b0001007669706d6772000010000200672d67772d6567726573730014000380"
    "100001800c00018008000100c6336407440000000c0a0504030000000000000001000000"
    "0b0001007669706d6772000010000200672d67772d656772657373001400038010000180"
    "0c00018008000100c63364075c0000000c0a05040400000000000000010000000b000100"
    "7669706d677200000f000200672d67772d61726d656400002c000380280001800c000180"
    "05000100020000000c000400000000000000012c0c000500000000000000012c14000000"
    "1100010005000000000000000000000a")


def test_attr_pads_to_four_bytes_and_counts_only_the_payload():
    for size in range(9):
        out = nl.attr(7, b"x" * size)
        length, kind = struct.unpack_from("=HH", out)
        assert (length, kind) == (4 + size, 7)
        assert len(out) == nl.align(4 + size) and len(out) % 4 == 0
        assert out[4 + size:] == b"\0" * (len(out) - 4 - size)


def test_nested_sets_the_flag_and_wraps_the_children():
    child = nl.attr(1, b"ab")
    out = nl.nested(3, child, child)
    assert struct.unpack_from("=HH", out) == (4 + 2 * len(child), 3 | nl.NLA_F_NESTED)
    assert [(k, out[a:b]) for k, a, b in nl.attrs(out, 0, len(out))] == [(3, child + child)]
    assert [(k, out[a:b]) for k, a, b in nl.attrs(out, 4, len(out))] == [(1, b"ab"), (1, b"ab")]


def test_attrs_stop_at_a_zero_length_attribute():
    buf = nl.attr(1, b"abcd") + b"\0" * 8
    assert [k for k, _a, _b in nl.attrs(buf, 0, len(buf))] == [1]
    assert nl.attr_map(buf, 0, len(buf)) == {1: b"abcd"}


def test_messages_walk_a_buffer_with_padding_and_stop_at_garbage():
    one = nl.message(24, 0x1, 7, b"abcde")  # 21 bytes: padded to 24 in a buffer
    two = nl.message(3, 0x2, 8, b"")
    buf = one + b"\0\0\0" + two + b"\0" * 16  # a zero-length header ends the walk
    got = list(nl.messages(buf))
    assert got == [(24, 0x1, 7, 0, 21), (3, 0x2, 8, 24, 40)]
    assert buf[got[0][3] + nl.HEADER.size:got[0][4]] == b"abcde"


def _error(seq: int, code: int) -> bytes:
    return nl.message(nl.NLMSG_ERROR, 0, seq, struct.pack("=i", -code) + b"\0" * 16)


def test_error_code_is_the_positive_errno_and_zero_for_an_ack():
    assert nl.error_code(_error(5, errno.ENOENT), 0) == errno.ENOENT
    assert nl.error_code(_error(5, 0), 0) == 0


def test_route_messages_are_what_pyroute2_encodes():
    sock = RouteSocket()
    try:
        for op, key, val, kind, flags in [
                ("replace", (201, "198.18.0.0/24"), ("unicast", "198.51.100.1"), 24, 0x501),
                ("replace", (202, "0.0.0.0/0"), ("blackhole", None), 24, 0x501),
                ("del", (201, "198.18.4.7/32"), ("unicast", "198.51.100.1"), 25, 0x1)]:
            table, dst = key
            addr, plen = dst.split("/")
            ref = rtmsg()
            ref["header"].update(type=kind, flags=flags, sequence_number=sock.seq + 1)
            ref.update(family=socket.AF_INET, dst_len=int(plen), proto=L.RT_PROTO,
                       type=1 if val[0] == "unicast" else 6, table=0)
            ref["attrs"] = ([("RTA_DST", addr)] if int(plen) else []) + (
                [("RTA_GATEWAY", val[1])] if op == "replace" and val[1] else []) + [
                ("RTA_TABLE", table)]
            ref.encode()
            assert sock._route(op, key, val) == bytes(ref.data), (op, key)
    finally:
        sock.close()


def test_a_dumped_route_parses_back():
    ref = rtmsg()
    ref["header"]["type"] = RTM_NEWROUTE
    ref.update(family=socket.AF_INET, dst_len=24, type=1, table=0)
    ref["attrs"] = [("RTA_TABLE", min(L.OWN_TABLES)), ("RTA_DST", "198.18.3.0"),
                    ("RTA_GATEWAY", "198.51.100.9")]
    ref.encode()
    data = bytes(ref.data)
    routes: dict = {}
    _parse_route(data, nl.HEADER.size, len(data), routes)
    assert routes == {(min(L.OWN_TABLES), "198.18.3.0/24"): ("unicast", "198.51.100.9")}


class _Kernel:
    """A datagram socketpair standing in for the kernel's end of a netlink socket."""

    def __init__(self, sock: nl.NetlinkSocket) -> None:
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock._sock.close()
        sock._sock = self.ours
        sock._sock.settimeout(sock._timeout)

    def answer(self, *msgs: bytes) -> None:
        self.theirs.send(b"".join(msgs))

    def sent(self) -> bytes:
        return self.theirs.recv(1 << 16)

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


@pytest.fixture
def arm():
    sock = ArmSocket()
    kernel = _Kernel(sock)
    yield sock, kernel
    kernel.close()


@pytest.mark.parametrize("target, golden", [
    (ArmTarget("egress-gw", "192.0.2.100", True, 2.0), REFRESH_VIP),
    (ArmTarget("gw", "198.51.100.7", False, 2.0), REFRESH_PRIMARY)])
def test_refresh_batch_is_byte_identical(arm, target, golden):
    sock, kernel = arm
    ms = 1500 if target.vip else 300
    n = 4 if target.vip else 3
    kernel.answer(*(_error(seq, 0) for seq in range(2, 2 + n)))  # an ACK per set-element msg
    sock.refresh([(target, ms)])
    assert kernel.sent().hex() == golden


def test_refresh_guard_failure_is_nft_missing_even_with_answers_missing(arm):
    """An aborted batch may leave messages unanswered: the ENOENT is reported at once,
    not after the socket's timeout (MSG_DONTWAIT alone would poll for the timeout)."""
    from vipmgr.dataplane.kernel import NftMissing
    sock, kernel = arm
    kernel.answer(_error(2, errno.ENOENT))
    with pytest.raises(NftMissing):
        sock.refresh([(ArmTarget("gw", "198.51.100.7", False, 2.0), 300)])


def test_refreshes_of_several_gateways_are_one_batch_and_a_missing_one_is_named(arm):
    """One send, begin + 3 messages per primary-IP target + end; the ENOENT of the
    second target's guard names that gateway (nothing of the batch applied)."""
    from vipmgr.dataplane.kernel import NftMissing
    sock, kernel = arm
    one, two = (ArmTarget("gw1", "198.51.100.7", False, 2.0),
                ArmTarget("gw2", "198.51.100.8", False, 2.0))
    kernel.answer(*(_error(seq, errno.ENOENT if seq == 5 else 0) for seq in range(2, 8)))
    with pytest.raises(NftMissing) as missing:
        sock.refresh([(one, 300), (two, 300)])
    assert missing.value.gateway == "gw2" and "gw2" in str(missing.value)
    batch = kernel.sent()  # one datagram: the whole batch
    assert socket.inet_aton("198.51.100.7") in batch and socket.inet_aton("198.51.100.8") in batch
    kernel.theirs.setblocking(False)
    with pytest.raises(BlockingIOError):
        kernel.theirs.recv(1 << 16)


def test_refresh_other_failure_names_the_gateway_and_errno(arm):
    sock, kernel = arm
    kernel.answer(*(_error(seq, errno.EPERM if seq == 3 else 0) for seq in range(2, 5)))
    with pytest.raises(KernelError, match="dead-man refresh of gw: Operation not permitted"):
        sock.refresh([(ArmTarget("gw", "198.51.100.7", False, 2.0), 300)])


def test_drain_errors_returns_failures_without_waiting_for_the_timeout():
    sock = nl.NetlinkSocket(nl.NETLINK_ROUTE, timeout=30.0)
    kernel = _Kernel(sock)
    try:
        assert sock.drain_errors("x") == []
        kernel.answer(_error(4, 0), _error(5, errno.EEXIST), nl.message(99, 0, 6, b""))
        kernel.answer(_error(7, errno.ENOENT))
        assert sock.drain_errors("x") == [(5, errno.EEXIST), (7, errno.ENOENT)]
        assert sock.drain_errors("x") == []
    finally:
        kernel.close()


def _counter(name: str, packets: int, seq: int) -> bytes:
    body = (nl.nfgenmsg(1) + nl.attr(1, L.TABLE.encode() + b"\0")
            + nl.attr(2, name.encode() + b"\0")
            + nl.nested(4, nl.attr(1, struct.pack(">Q", packets * 64)),
                        nl.attr(2, struct.pack(">Q", packets))))
    return nl.message(NFT_MSG_NEWOBJ, 2, seq, body)


def test_counter_dump_reads_its_own_answers_until_done():
    reader = CounterReader()
    kernel = _Kernel(reader)
    try:
        kernel.answer(_counter("stale", 9, 99), _counter("g-a-fenced", 3, 1))
        kernel.answer(_counter("g-a-failclosed", 0, 1), nl.message(nl.NLMSG_DONE, 2, 1, b""))
        assert reader.packets() == {"g-a-fenced": 3, "g-a-failclosed": 0}
        request = kernel.sent()
        assert struct.unpack_from("=IHHII", request)[1:4] == (
            (10 << 8) | 19, nl.NLM_F_REQUEST | nl.NLM_F_DUMP, 1)
        kernel.answer(_error(2, errno.ENOENT))  # no table yet
        assert reader.packets() == {}
        kernel.answer(_error(3, errno.EPERM))
        with pytest.raises(nl.NetlinkError) as err:
            reader.packets()
        assert err.value.errno == errno.EPERM and "reading the nft counters" in str(err.value)
    finally:
        kernel.close()
