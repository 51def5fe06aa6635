"""Conntrack state of a VirtualIPAddress gateway's flows: read, follow, inject (ctnetlink).

A VIP gateway's flows survive a failover when the new active node knows them
before it announces the VIP: the entries, with their SNAT mapping (VM address
and port -> VIP and port), are replicated from the active node to its standbys
(vipmgr.agent.ctsync) and injected into the new active's kernel before its VIP
is added. This module is the kernel side, over raw ctnetlink with ``struct``
(no pyroute2 parsing: the active node reads one event per new flow and per
ended flow, 20,000 a second at 10,000 new flows a second):

- ``CtSocket.dump(vip)``: the entries the kernel SNATed to ``vip``;
- ``CtEvents``: a socket subscribed to the NEW and DESTROY event groups (not
  UPDATE: a TCP flow's state changes would triple the events; the injected
  state is derived instead, see ``inject_state``), read without blocking;
- ``CtSocket.inject(vip, flows)``: create the entries with ``CTA_NAT_SRC`` =
  VIP and port, so the kernel sets up the NAT binding itself (reply tuple,
  the NAT bysource hash that keeps a new flow off a taken VIP port);
- ``vip_input_rules(vip)``: the nft rules a VIP gateway's members need so a
  packet to the VIP that the node has no state for is dropped, not answered
  with a RST by the local stack (the server retransmits it, by then the state
  is there).

Only IPv4 TCP and UDP entries in conntrack zone 0 are handled (the gateway's
selected traffic); ICMP echo flows are not replicated (a lost ping is resent).
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass
from typing import Iterable, Mapping

from vipmgr.dataplane import netlink as nl
from vipmgr.dataplane.netlink import NLA_TYPE_MASK

NFNL_SUBSYS_CTNETLINK = 1
CT_NEW = (NFNL_SUBSYS_CTNETLINK << 8) | 0
CT_GET = (NFNL_SUBSYS_CTNETLINK << 8) | 1
CT_DELETE = (NFNL_SUBSYS_CTNETLINK << 8) | 2
NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_DESTROY = 1, 3

# ctattr_type
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_PROTOINFO = 1, 2, 3, 4
CTA_NAT_SRC, CTA_TIMEOUT, CTA_ZONE = 6, 7, 18
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST = 1, 2
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_PROTOINFO_TCP = 1
CTA_PROTOINFO_TCP_STATE, CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, CTA_PROTOINFO_TCP_FLAGS_REPLY = 1, 4, 5
CTA_NAT_V4_MINIP, CTA_NAT_V4_MAXIP, CTA_NAT_PROTO = 1, 2, 3
CTA_PROTONAT_PORT_MIN, CTA_PROTONAT_PORT_MAX = 1, 2

IPS_SEEN_REPLY, IPS_ASSURED, IPS_CONFIRMED, IPS_SRC_NAT = 0x2, 0x4, 0x8, 0x10
TCP, UDP = 6, 17
# TCP conntrack states (enum tcp_conntrack)
TCP_SYN_SENT, TCP_SYN_RECV, TCP_ESTABLISHED, TCP_TIME_WAIT, TCP_CLOSE, TCP_SYN_SENT2 = \
    1, 2, 3, 7, 8, 9
IP_CT_TCP_FLAG_BE_LIBERAL = 0x08
# The timeout an injected entry starts with: its first packet resets it to the
# state's own timeout (5 days for an established TCP flow), so a flow that ended
# meanwhile only lingers this long.
INJECT_TIMEOUT = {TCP: 300, UDP: 120}
TIMEOUT = 5.0  # s: a dump that stalls this long is an error
CHUNK = 128  # create messages per send(): their error answers always fit the receive buffer

_NFGEN_V4 = nl.nfgenmsg(socket.AF_INET)
_BODY = nl.HEADER.size + len(_NFGEN_V4)  # where a ct message's attributes start


@dataclass(frozen=True, slots=True)
class Flow:
    """One SNATed flow: the original tuple (VM side) and the VIP port it was mapped to.

    ``state`` is the TCP conntrack state the entry had when it was read (0 for UDP).
    """

    proto: int
    src: str
    sport: int
    dst: str
    dport: int
    nat_port: int
    state: int = 0

    @property
    def key(self) -> tuple[int, str, int, str, int]:
        return (self.proto, self.src, self.sport, self.dst, self.dport)


# One flow on the replication wire (vipmgr.agent.ctsync): proto (| ENDED), TCP state,
# src, dst, sport, dport, VIP port. Built here straight from the event bytes.
RECORD = struct.Struct("!BB4s4sHHH")
ENDED = 0x80


def record(flow: Flow, ended: bool = False) -> bytes:
    return RECORD.pack(flow.proto | (ENDED if ended else 0), flow.state,
                       socket.inet_aton(flow.src), socket.inet_aton(flow.dst), flow.sport,
                       flow.dport, flow.nat_port)


@dataclass
class InjectResult:
    created: int = 0
    existed: int = 0  # the kernel already had the tuple (e.g. picked up mid-stream)
    skipped: int = 0  # ended TCP flows (TIME_WAIT, CLOSE): nothing to resume
    failed: dict[str, int] | None = None  # errno name -> count

    def add_failure(self, err: int) -> None:
        name = errno.errorcode.get(err, str(err))
        self.failed = self.failed or {}
        self.failed[name] = self.failed.get(name, 0) + 1


def inject_state(flow: Flow) -> int | None:
    """The TCP state an injected entry gets, or None: do not inject.

    Only NEW events are followed, so a young flow is known as SYN_SENT; a flow
    the new active resumes is past its handshake as far as anyone can tell, and
    a SYN_SENT entry would mark the next mid-stream segment invalid. Ended
    flows are left out."""
    if flow.proto != TCP:
        return 0
    if flow.state in (TCP_TIME_WAIT, TCP_CLOSE):
        return None
    if flow.state in (0, TCP_SYN_SENT, TCP_SYN_RECV, TCP_SYN_SENT2):
        return TCP_ESTABLISHED
    return flow.state


# --- netlink encoding ---------------------------------------------------------------
#
# A create request and the head of every ct message the kernel sends have a fixed
# layout for an IPv4 TCP/UDP entry, so both are one ``struct`` each (building one with
# an attribute helper per field cost ~27 us, parsing one attribute by attribute ~60 us:
# the active reads two messages per flow). Attribute headers are host-endian, values
# big-endian: ports and u32s are packed through htons/htonl in native order.

_NEST = nl.NLA_F_NESTED
_TUPLE_FMT = "HH" "HH" "HH4s" "HH4s" "HH" "HHB3x" "HHH2x" "HHH2x"   # 52 bytes
_TUPLE = struct.Struct("=" + _TUPLE_FMT)
_NAT_FMT = "HH" "HH4s" "HH4s" "HH" "HHH2x" "HHH2x"                  # 40 bytes
_HEAD_FMT = "=IHHII" "BBH" + _TUPLE_FMT + _TUPLE_FMT + "HHI" "HHI" + _NAT_FMT
_CREATE_UDP = struct.Struct(_HEAD_FMT)
_CREATE_TCP = struct.Struct(_HEAD_FMT + "HH" "HH" "HHB3x" "HHBB2x" "HHBB2x")  # + 32 bytes
_TUPLE_LEN, _NAT_LEN = 52, 40
_STATUS = socket.htonl(IPS_SEEN_REPLY | IPS_ASSURED | IPS_CONFIRMED)


def _tuple_fields(kind: int, proto: int, src: bytes, sport: int, dst: bytes, dport: int):
    return (_TUPLE_LEN, kind | _NEST, 20, CTA_TUPLE_IP | _NEST, 8, CTA_IP_V4_SRC, src,
            8, CTA_IP_V4_DST, dst, 28, CTA_TUPLE_PROTO | _NEST, 5, CTA_PROTO_NUM, proto,
            6, CTA_PROTO_SRC_PORT, socket.htons(sport), 6, CTA_PROTO_DST_PORT,
            socket.htons(dport))


def create_message(seq: int, flags: int, vip: bytes, flow: Flow, state: int,
                   timeout: int | None = None) -> bytes:
    """A whole CT_NEW request creating ``flow`` SNATed to ``vip`` (4 bytes).

    The reply tuple is the plain inverse of the original (as conntrackd sends it): the
    kernel's NAT setup (``CTA_NAT_SRC``: exactly the VIP and port) rewrites it and marks
    the entry SNATed, as if our own SNAT rule had chosen that mapping. The status carries
    CONFIRMED: the kernel sets it on a created entry and refuses a status that would
    clear it (EBUSY). TCP entries get liberal window tracking: the new active saw none
    of the flow's segments."""
    f = flow
    src, dst = socket.inet_aton(f.src), socket.inet_aton(f.dst)
    tcp = f.proto == TCP
    packer = _CREATE_TCP if tcp else _CREATE_UDP
    port = socket.htons(f.nat_port)
    fields = [packer.size, CT_NEW, flags, seq, 0, socket.AF_INET, 0, 0,
              *_tuple_fields(CTA_TUPLE_ORIG, f.proto, src, f.sport, dst, f.dport),
              *_tuple_fields(CTA_TUPLE_REPLY, f.proto, dst, f.dport, src, f.sport),
              8, CTA_STATUS, _STATUS,
              8, CTA_TIMEOUT, socket.htonl(timeout or INJECT_TIMEOUT[f.proto]),
              _NAT_LEN, CTA_NAT_SRC | _NEST, 8, CTA_NAT_V4_MINIP, vip, 8, CTA_NAT_V4_MAXIP, vip,
              20, CTA_NAT_PROTO | _NEST, 6, CTA_PROTONAT_PORT_MIN, port,
              6, CTA_PROTONAT_PORT_MAX, port]
    if tcp:
        lib = IP_CT_TCP_FLAG_BE_LIBERAL
        fields += [32, CTA_PROTOINFO | _NEST, 28, CTA_PROTOINFO_TCP | _NEST,
                   5, CTA_PROTOINFO_TCP_STATE, state,
                   6, CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, lib, lib,
                   6, CTA_PROTOINFO_TCP_FLAGS_REPLY, lib, lib]
    return packer.pack(*fields)


# --- netlink decoding ---------------------------------------------------------------


def _fixed_tuple(buf: bytes, off: int, kind: int) -> tuple[bytes, bytes, int, int, int] | None:
    """The tuple at ``off`` if it has the kernel's usual IPv4 layout (no zone inside)."""
    if len(buf) < off + _TUPLE_LEN:
        return None
    (l0, t0, l1, t1, l2, t2, src, l3, t3, dst, l4, t4, l5, t5, proto, l6, t6, sport,
     l7, t7, dport) = _TUPLE.unpack_from(buf, off)
    if (l0 != _TUPLE_LEN or t0 & NLA_TYPE_MASK != kind or l1 != 20 or l2 != 8 or t2 != 1
            or l3 != 8 or t3 != 2 or l4 != 28 or l5 != 5 or l6 != 6 or t6 != 2
            or l7 != 6 or t7 != 3):
        return None
    return src, dst, proto, socket.ntohs(sport), socket.ntohs(dport)


def _parse_tuple(buf: bytes, off: int, end: int) -> tuple[bytes, bytes, int, int, int]:
    src = dst = b""
    proto = sport = dport = 0
    for kind, a, b in nl.attrs(buf, off, end):
        if kind == CTA_TUPLE_IP:
            for k, x, y in nl.attrs(buf, a, b):
                if k == CTA_IP_V4_SRC:
                    src = buf[x:y]
                elif k == CTA_IP_V4_DST:
                    dst = buf[x:y]
        elif kind == CTA_TUPLE_PROTO:
            for k, x, y in nl.attrs(buf, a, b):
                if k == CTA_PROTO_NUM:
                    proto = buf[x]
                elif k == CTA_PROTO_SRC_PORT:
                    sport = (buf[x] << 8) | buf[x + 1]
                elif k == CTA_PROTO_DST_PORT:
                    dport = (buf[x] << 8) | buf[x + 1]
    return src, dst, proto, sport, dport


def parse_entry(buf: bytes, off: int, end: int, vips: Mapping[bytes, str],
                with_state: bool = False) -> tuple[str, Flow] | None:
    """A ct message's attributes -> (the VIP it is SNATed to, the flow), or None for an
    entry that is not an IPv4 TCP/UDP SNAT to one of ``vips`` (4-byte address -> text):
    the node's own connections, other NATs, ICMP, IPv6, other zones.

    An entry is SNATed to a VIP when its reply goes to the VIP and its original source
    is someone else. In the kernel's layout the two tuples come first, then the zone
    if it is not the default one: one unpack per tuple and a peek decide; the TCP
    state (``with_state``: the dump; events do not need it) is looked up after that."""
    orig = _fixed_tuple(buf, off, CTA_TUPLE_ORIG)
    reply = _fixed_tuple(buf, off + _TUPLE_LEN, CTA_TUPLE_REPLY) if orig else None
    if reply is None:
        return _parse_any_layout(buf, off, end, vips)
    rest = off + 2 * _TUPLE_LEN
    vip = vips.get(reply[1])
    if vip is None or reply[1] == orig[0]:
        return None
    if rest + 4 <= end and nl.ATTR.unpack_from(buf, rest)[1] & NLA_TYPE_MASK == CTA_ZONE:
        return None
    src, dst, proto, sport, dport = orig
    if proto != TCP and proto != UDP:
        return None
    state = _tcp_state(buf, rest, end) if with_state and proto == TCP else 0
    return vip, Flow(proto, socket.inet_ntoa(src), sport, socket.inet_ntoa(dst), dport,
                     reply[4], state)


def _tcp_state(buf: bytes, off: int, end: int) -> int:
    for kind, a, b in nl.attrs(buf, off, end):
        if kind == CTA_PROTOINFO:
            for k, x, y in nl.attrs(buf, a, b):
                if k == CTA_PROTOINFO_TCP:
                    for k2, x2, _y2 in nl.attrs(buf, x, y):
                        if k2 == CTA_PROTOINFO_TCP_STATE:
                            return buf[x2]
    return 0


def _parse_any_layout(buf: bytes, off: int, end: int, vips: Mapping[bytes, str]
                      ) -> tuple[str, Flow] | None:
    """``parse_entry`` for a message whose tuples are not in the usual layout."""
    orig = reply = None
    for kind, a, b in nl.attrs(buf, off, end):
        if kind == CTA_TUPLE_ORIG:
            orig = _parse_tuple(buf, a, b)
        elif kind == CTA_TUPLE_REPLY:
            reply = _parse_tuple(buf, a, b)
        elif kind == CTA_ZONE:
            return None
    if orig is None or reply is None:
        return None
    vip = vips.get(reply[1])
    src, dst, proto, sport, dport = orig
    if vip is None or proto not in (TCP, UDP) or len(src) != 4 or reply[1] == src:
        return None
    return vip, Flow(proto, socket.inet_ntoa(src), sport, socket.inet_ntoa(dst), dport,
                     reply[4], _tcp_state(buf, off, end) if proto == TCP else 0)


def vip_keys(vips: Iterable[str]) -> dict[bytes, str]:
    return {socket.inet_aton(v): v for v in vips}


class CtSocket(nl.NetlinkSocket):
    """Dump and create conntrack entries; open and use it on one thread (of the namespace)."""

    def __init__(self) -> None:
        super().__init__(nl.NETLINK_NETFILTER, rcvbuf=4 << 20, timeout=TIMEOUT)

    def dump(self, vips: Iterable[str]) -> dict[str, list[Flow]]:
        """Every entry SNATed to one of ``vips``, per VIP (one walk of the table)."""
        want: dict[str, list[Flow]] = {v: [] for v in vips}
        keys = vip_keys(want)
        for _kind, data, off, end in self.dump_messages(CT_GET, _NFGEN_V4, "conntrack dump"):
            got = parse_entry(data, off + _BODY, end, keys, with_state=True)
            if got is not None:
                want[got[0]].append(got[1])
        return want

    def inject(self, vip: str, flows: Iterable[Flow], timeout: int | None = None
               ) -> InjectResult:
        """Create ``flows`` SNATed to ``vip``; what the kernel said, per entry.

        ``timeout`` (s) overrides ``INJECT_TIMEOUT`` (the benchmark's self-expiring load).
        Messages go ``CHUNK`` per ``send()`` without ACK requests: ctnetlink handles a
        send synchronously and answers failures only, so draining the socket after each
        send collects exactly them (half the Python work of one ACK per entry); EEXIST
        (the tuple is already tracked) is counted, not failed."""
        result = InjectResult()
        batch: list[bytes] = []
        addr = socket.inet_aton(vip)
        flags = nl.NLM_F_REQUEST | nl.NLM_F_CREATE | nl.NLM_F_EXCL
        for flow in flows:
            state = inject_state(flow)
            if state is None:
                result.skipped += 1
                continue
            batch.append(create_message(self.next_seq(), flags, addr, flow, state, timeout))
            if len(batch) == CHUNK:
                self._send_batch(batch, result)
                batch = []
        if batch:
            self._send_batch(batch, result)
        return result

    def _send_batch(self, batch: list[bytes], result: InjectResult) -> None:
        self.send(b"".join(batch))
        errors = self.drain_errors("conntrack inject")
        for _seq, err in errors:
            if err == errno.EEXIST:
                result.existed += 1
            else:
                result.add_failure(err)
        result.created += len(batch) - len(errors)


class CtEvents(nl.NetlinkSocket):
    """NEW and DESTROY events of SNATed flows, read without blocking.

    Open it on a thread of the namespace; ``fileno()`` suits ``loop.add_reader``.
    A receive buffer overrun (the kernel dropped events: ENOBUFS) is reported by
    ``read`` returning ``overrun=True``: the follower must resynchronise from a dump.
    """

    RECV_BATCH = 512  # messages per read(), so a flood cannot starve the caller

    def __init__(self, rcvbuf: int = 8 << 20) -> None:
        groups = (1 << (NFNLGRP_CONNTRACK_NEW - 1)) | (1 << (NFNLGRP_CONNTRACK_DESTROY - 1))
        super().__init__(nl.NETLINK_NETFILTER, groups, rcvbuf)
        self._sock.setblocking(False)

    def read(self, vips: Mapping[bytes, str]) -> tuple[dict[str, list[bytes]], bool]:
        """(wire records per VIP of the flows SNATed to one of ``vips`` (see ``vip_keys``),
        overrun?) for the events pending right now.

        The sender's hot path (two events per flow): a record is packed from the event's
        bytes directly, without a ``Flow`` in between; an event in another layout goes
        through ``parse_entry``."""
        out: dict[str, list[bytes]] = {}
        overrun = False
        recv = self._sock.recv
        pack = RECORD.pack
        for _ in range(self.RECV_BATCH):
            try:
                data = recv(65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                overrun = True
                continue
            for kind, _flags, _seq, off, end in nl.messages(data):
                if kind != CT_NEW and kind != CT_DELETE:
                    continue
                ended = ENDED if kind == CT_DELETE else 0
                body = off + _BODY
                orig = _fixed_tuple(data, body, CTA_TUPLE_ORIG)
                reply = _fixed_tuple(data, body + _TUPLE_LEN, CTA_TUPLE_REPLY) if orig else None
                if reply is None:
                    got = parse_entry(data, body, end, vips)
                    if got is not None:
                        out.setdefault(got[0], []).append(record(got[1], bool(ended)))
                    continue
                vip = vips.get(reply[1])
                rest = body + 2 * _TUPLE_LEN
                if (vip is None or reply[1] == orig[0] or orig[2] not in (TCP, UDP)
                        or rest + 4 <= end
                        and nl.ATTR.unpack_from(data, rest)[1] & NLA_TYPE_MASK == CTA_ZONE):
                    continue
                out.setdefault(vip, []).append(
                    pack(orig[2] | ended, 0, orig[0], orig[1], orig[3], orig[4], reply[4]))
        return out, overrun

    def close(self) -> None:
        self._sock.close()


def vip_input_rules(vip: str, counter: str | None = None) -> list[str]:
    """nft rules (for an ``input`` hook chain of ``table inet``) that drop, instead of
    letting the local stack reset, packets to a VIP that match no conntrack entry.

    During a failover the server's retransmission can reach the new active before its
    entries are injected (or for a flow it never learned); the local stack would answer
    the VIP-addressed segment with a RST and the connection would die. Dropped, the
    segment is retransmitted and finds the entry. ``ct state invalid`` covers segments
    the TCP tracker refuses (they are not de-NATed either and would reach the stack);
    a new TCP segment other than a plain SYN is one nobody here tracks. A SYN to the
    VIP is left alone (nothing listens there; the RST is the right answer)."""
    count = f"counter name \"{counter}\" " if counter else "counter "
    return [f"ip daddr {vip} ct state invalid {count}drop",
            f"ip daddr {vip} meta l4proto tcp ct state new "
            f"tcp flags & (fin | syn | rst | ack) != syn {count}drop"]
