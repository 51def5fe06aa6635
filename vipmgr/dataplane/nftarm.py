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

The batch is the one ``ArmTarget`` describes (vipmgr.dataplane.nftstate), the
same spec the reconcile's nft text arming renders (``ArmTarget.arm_lines``): the
egress element (``guard()``) deleted and re-added (ENOENT once a reconcile has
withdrawn the gateway, which aborts the whole transaction), then ``elements(ms)``
added with ``timeout`` and ``expires`` (which moves the expiry of an existing
element).
"""

from __future__ import annotations

import errno
import socket
import struct

from vipmgr.dataplane import layout as L
from vipmgr.dataplane import netlink as nl
from vipmgr.dataplane.kernel import KernelError, NftMissing
from vipmgr.dataplane.nftstate import ArmElement, ArmTarget

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
TIMEOUT = 2.0  # s: nf_tables answers while send() runs; silence this long is an error


_FAMILIES = {"inet": NFPROTO_INET, "arp": NFPROTO_ARP}
_NFPROTO_KEYS = {"ipv4": NFPROTO_IPV4}  # nf_proto set keys, as nft names them


def _key(element: ArmElement) -> bytes:
    """The element's key as the kernel stores it, for its set's type."""
    if element.key_type == "ipv4_addr":
        return socket.inet_aton(element.key)
    if element.key_type == "nf_proto":
        return bytes([_NFPROTO_KEYS[element.key]])
    raise ValueError(f"no netlink encoding for a {element.key_type} set element")


def _element(element: ArmElement) -> bytes:
    attrs = [nl.nested(SET_ELEM_KEY, nl.attr(DATA_VALUE, _key(element)))]
    if element.timeout_ms is not None:
        attrs += [nl.attr(SET_ELEM_TIMEOUT, struct.pack(">Q", element.timeout_ms)),
                  nl.attr(SET_ELEM_EXPIRATION, struct.pack(">Q", element.timeout_ms))]
    return nl.nested(LIST_ELEM, *attrs)


class ArmSocket(nl.NetlinkSocket):
    """A NETLINK_NETFILTER socket for refresh batches; open and use it on one thread."""

    def __init__(self) -> None:
        super().__init__(nl.NETLINK_NETFILTER, timeout=TIMEOUT)

    def _msg(self, kind: int, flags: int, family: int, res_id: int, body: bytes) -> bytes:
        return self.request(kind, flags, nl.nfgenmsg(family, res_id) + body)

    def _set_elem(self, kind: int, element: ArmElement) -> bytes:
        flags = (nl.NLM_F_REQUEST | nl.NLM_F_ACK
                 | (nl.NLM_F_CREATE if kind == NFT_MSG_NEWSETELEM else 0))
        body = (nl.attr(SET_ELEM_LIST_TABLE, L.TABLE.encode() + b"\0")
                + nl.attr(SET_ELEM_LIST_SET, element.set_name.encode() + b"\0")
                + nl.nested(SET_ELEM_LIST_ELEMENTS, _element(element)))
        return self._msg(kind, flags, _FAMILIES[element.family], 0, body)

    def refresh(self, items: list[tuple[ArmTarget, int]]) -> None:
        """Run the refresh of every ``(target, ms)`` in ONE transaction (one send, one
        commit: the node's advert refreshes all the gateways it holds at once).
        NftMissing names the first target whose guard failed; the batch is atomic, so
        then none of it applied."""
        begin = self._msg(NFNL_MSG_BATCH_BEGIN, nl.NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, b"")
        msgs: list[bytes] = []
        owners: dict[int, ArmTarget] = {}  # netlink seq -> the target the message is for
        for target, ms in items:
            guard = target.guard()
            mine = [self._set_elem(NFT_MSG_DELSETELEM, guard),
                    self._set_elem(NFT_MSG_NEWSETELEM, guard),
                    *(self._set_elem(NFT_MSG_NEWSETELEM, e) for e in target.elements(ms))]
            msgs += mine
            owners.update(dict.fromkeys(range(self.seq - len(mine) + 1, self.seq + 1), target))
        end = self._msg(NFNL_MSG_BATCH_END, nl.NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, b"")
        self.send(b"".join([begin, *msgs, end]))
        self._await_acks(owners)

    def _await_acks(self, owners: dict[int, ArmTarget]) -> None:
        # the kernel answers while processing send(): everything is queued already, but an
        # aborted batch may leave some messages unanswered, so stop at the first failure
        pending, failure, failed = set(owners), 0, None
        names = ", ".join(sorted({t.gateway for t in owners.values()}))
        while pending:
            try:
                data = self.recv_nowait() if failure else self._sock.recv(65536)
            except socket.timeout as exc:
                raise KernelError(f"dead-man refresh of {names}: no answer from "
                                  "nf_tables") from exc
            if data is None:
                break
            for kind, _flags, seq, off, _end in nl.messages(data):
                if kind == nl.NLMSG_ERROR and seq in pending:
                    pending.discard(seq)
                    code = nl.error_code(data, off)
                    if code and not failure:
                        failure, failed = code, owners[seq]
        if failure == errno.ENOENT:
            raise NftMissing(f"dead-man refresh of {failed.gateway}: not active in the kernel",
                             gateway=failed.gateway)
        if failure:
            raise nl.NetlinkError(f"dead-man refresh of {failed.gateway}", failure)


class CounterReader(nl.NetlinkSocket):
    """Packets of every named counter in ``table inet vipmgr``, by one netlink dump (~50 µs).

    Open and use it on one thread."""

    def __init__(self) -> None:
        super().__init__(nl.NETLINK_NETFILTER, timeout=TIMEOUT)

    def packets(self) -> dict[str, int]:
        """Counter name -> packets; empty when the table does not exist."""
        body = (nl.nfgenmsg(NFPROTO_INET)
                + nl.attr(OBJ_TABLE, L.TABLE.encode() + b"\0")
                + nl.attr(OBJ_TYPE, struct.pack(">I", OBJECT_COUNTER)))
        out: dict[str, int] = {}
        try:
            for kind, data, off, end in self.dump_messages(NFT_MSG_GETOBJ, body,
                                                           "reading the nft counters"):
                if kind == NFT_MSG_NEWOBJ:
                    attrs = nl.attr_map(data, off + nl.HEADER.size + 4, end)
                    counter = nl.attr_map(attrs[OBJ_DATA], 0, len(attrs[OBJ_DATA]))
                    name = attrs[OBJ_NAME].rstrip(b"\0").decode()
                    out[name] = struct.unpack(">Q", counter[COUNTER_PACKETS])[0]
        except nl.NetlinkError as exc:
            if exc.errno == errno.ENOENT:
                return {}
            raise
        return out
