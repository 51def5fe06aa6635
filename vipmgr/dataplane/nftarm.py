"""The dead-man refresh as one hand-built nf_tables netlink batch.

libnftables fetches a cache before every batch (the table's sets, and the
elements of its interval sets), so its cost grows with the selection: 1.3 ms
for a gateway with 10,000 sources and 1,000 CIDRs, against ~30 µs for the
transaction itself. The refresh runs every advert interval and must not grow
with the table, so it speaks netlink directly: three or four set-element
messages in one batch (one transaction), no cache, no parsing.

The agent's once-a-second read of the drop counters speaks netlink directly too
(``CounterReader``): ``list counters`` through libnftables fetches the same cache
first, ~11 ms at that size, on the thread every reconcile queues behind.

The batch is the one ``ArmTarget`` describes (vipmgr.dataplane.nftstate): the
egress element deleted and re-added (the guard: ENOENT once a reconcile has
withdrawn the gateway, which aborts the whole transaction), then the armed
elements added with ``timeout`` and ``expires`` (which moves the expiry of an
existing element).
"""

from __future__ import annotations

import errno
import os
import socket
import struct

from vipmgr.dataplane import layout as L
from vipmgr.dataplane.kernel import KernelError, NftMissing
from vipmgr.dataplane.nftstate import ArmTarget

NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP, NLM_F_CREATE = 0x1, 0x4, 0x300, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 16, 17
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWSETELEM = (NFNL_SUBSYS_NFTABLES << 8) | 12
NFT_MSG_DELSETELEM = (NFNL_SUBSYS_NFTABLES << 8) | 14
NFT_MSG_NEWOBJ = (NFNL_SUBSYS_NFTABLES << 8) | 18
NFT_MSG_GETOBJ = (NFNL_SUBSYS_NFTABLES << 8) | 19
NFPROTO_INET, NFPROTO_IPV4, NFPROTO_ARP = 1, 2, 3
# nf_tables attributes
SET_ELEM_LIST_TABLE, SET_ELEM_LIST_SET, SET_ELEM_LIST_ELEMENTS = 1, 2, 3
LIST_ELEM = 1
SET_ELEM_KEY, SET_ELEM_TIMEOUT, SET_ELEM_EXPIRATION = 1, 4, 5
DATA_VALUE = 1
OBJ_TABLE, OBJ_NAME, OBJ_TYPE, OBJ_DATA = 1, 2, 3, 4
OBJECT_COUNTER = 1
COUNTER_PACKETS = 2


def _attr(kind: int, payload: bytes) -> bytes:
    pad = (4 - len(payload) % 4) % 4
    return struct.pack("=HH", 4 + len(payload), kind) + payload + b"\0" * pad


def _nested(kind: int, *attrs: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(attrs))


def _element(key: bytes, timeout_ms: int | None) -> bytes:
    attrs = [_nested(SET_ELEM_KEY, _attr(DATA_VALUE, key))]
    if timeout_ms is not None:
        attrs += [_attr(SET_ELEM_TIMEOUT, struct.pack(">Q", timeout_ms)),
                  _attr(SET_ELEM_EXPIRATION, struct.pack(">Q", timeout_ms))]
    return _nested(LIST_ELEM, *attrs)


class ArmSocket:
    """A NETLINK_NETFILTER socket for refresh batches; open and use it on one thread."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self._sock.bind((0, 0))
        self._sock.settimeout(2.0)
        self._seq = 0

    def _msg(self, kind: int, flags: int, family: int, res_id: int, body: bytes) -> bytes:
        self._seq += 1
        payload = struct.pack("=BBH", family, 0, socket.htons(res_id)) + body
        return struct.pack("=IHHII", 16 + len(payload), kind, flags, self._seq, 0) + payload

    def _set_elem(self, kind: int, family: int, set_name: str, element: bytes) -> bytes:
        flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE if kind == NFT_MSG_NEWSETELEM else 0)
        body = (_attr(SET_ELEM_LIST_TABLE, L.TABLE.encode() + b"\0")
                + _attr(SET_ELEM_LIST_SET, set_name.encode() + b"\0")
                + _nested(SET_ELEM_LIST_ELEMENTS, element))
        return self._msg(kind, flags, family, 0, body)

    def refresh(self, target: ArmTarget, ms: int) -> None:
        """Run ``target``'s refresh transaction for ``ms``; NftMissing when the guard fails."""
        egress = _element(socket.inet_aton(target.egress_ip), None)
        egress_set = L.gateway_egress(target.gateway)
        begin = self._msg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, b"")
        msgs = [self._set_elem(NFT_MSG_DELSETELEM, NFPROTO_INET, egress_set, egress),
                self._set_elem(NFT_MSG_NEWSETELEM, NFPROTO_INET, egress_set, egress),
                self._set_elem(NFT_MSG_NEWSETELEM, NFPROTO_INET, L.gateway_armed(target.gateway),
                               _element(bytes([NFPROTO_IPV4]), ms))]
        if target.vip:
            msgs.append(self._set_elem(NFT_MSG_NEWSETELEM, NFPROTO_ARP, L.ARP_ARMED,
                                       _element(socket.inet_aton(target.egress_ip), ms)))
        end = self._msg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, b"")
        self._sock.send(b"".join([begin, *msgs, end]))
        self._await_acks(range(self._seq - len(msgs), self._seq), target)

    def _await_acks(self, seqs: range, target: ArmTarget) -> None:
        # the kernel answers while processing send(): everything is queued already, but an
        # aborted batch may leave some messages unanswered, so stop at the first failure
        pending, failure = set(seqs), 0
        while pending:
            try:
                data = self._sock.recv(65536, socket.MSG_DONTWAIT if failure else 0)
            except BlockingIOError:
                break
            except socket.timeout as exc:
                raise KernelError(f"dead-man refresh of {target.gateway}: no answer from "
                                  "nf_tables") from exc
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _, seq, _ = struct.unpack_from("=IHHII", data, offset)
                if kind == NLMSG_ERROR and seq in pending:
                    pending.discard(seq)
                    (code,) = struct.unpack_from("=i", data, offset + 16)
                    failure = failure or -code
                offset += (length + 3) & ~3
        if failure == errno.ENOENT:
            raise NftMissing(f"dead-man refresh of {target.gateway}: not active in the kernel")
        if failure:
            raise KernelError(f"dead-man refresh of {target.gateway}: {os.strerror(failure)}")

    def close(self) -> None:
        self._sock.close()


def _attrs(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    """Netlink attributes in ``data[offset:end]`` by type (nested flag dropped)."""
    out = {}
    while offset + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        out[kind & ~NLA_F_NESTED] = data[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return out


class CounterReader:
    """Packets of every named counter in ``table inet vipmgr``, by one netlink dump (~50 µs).

    Open and use it on one thread."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self._sock.bind((0, 0))
        self._sock.settimeout(2.0)
        self._seq = 0

    def packets(self) -> dict[str, int]:
        """Counter name -> packets; empty when the table does not exist."""
        self._seq += 1
        body = (struct.pack("=BBH", NFPROTO_INET, 0, 0)
                + _attr(OBJ_TABLE, L.TABLE.encode() + b"\0")
                + _attr(OBJ_TYPE, struct.pack(">I", OBJECT_COUNTER)))
        self._sock.send(struct.pack("=IHHII", 16 + len(body), NFT_MSG_GETOBJ,
                                    NLM_F_REQUEST | NLM_F_DUMP, self._seq, 0) + body)
        out: dict[str, int] = {}
        while True:
            try:
                data = self._sock.recv(65536)
            except socket.timeout as exc:
                raise KernelError("reading the nft counters: no answer from nf_tables") from exc
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _, seq, _ = struct.unpack_from("=IHHII", data, offset)
                if seq == self._seq:
                    if kind == NLMSG_DONE:
                        return out
                    if kind == NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", data, offset + 16)
                        if -code == errno.ENOENT:
                            return {}
                        raise KernelError(f"reading the nft counters: {os.strerror(-code)}")
                    if kind == NFT_MSG_NEWOBJ:
                        attrs = _attrs(data, offset + 20, offset + length)
                        name = attrs[OBJ_NAME].rstrip(b"\0").decode()
                        counter = _attrs(attrs[OBJ_DATA], 0, len(attrs[OBJ_DATA]))
                        out[name] = struct.unpack(">Q", counter[COUNTER_PACKETS])[0]
                offset += (length + 3) & ~3

    def close(self) -> None:
        self._sock.close()
