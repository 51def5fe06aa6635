"""Verifying received heartbeats: authentication, replay window, reject counters.

The :class:`Receiver` is the only stateful part of receive. It is sans-I/O:
the transport hands it datagrams and ``now`` (the loop clock), it returns the
frame or the reject reason and counts both, so the agent exports
``counters`` as metrics without knowing the reasons in advance.
"""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass, field

from vipmgr.wire.codec import decode
from vipmgr.wire.keys import KeyRing
from vipmgr.wire.message import Frame, Reject

REPLAY_WINDOW = 64          # out-of-order tolerance, in sequence numbers
PEERS_PER_GATEWAY_MAX = 255  # distinct sender names kept per gateway
LOGGED_REJECTS = frozenset({Reject.AUTH, Reject.REPLAY})  # what an attacker's packets become
REJECT_LOG_INTERVAL = 10.0   # seconds: one line per source and reason, then a count
REJECT_LOG_SOURCES_MAX = 1024  # spoofed sources cannot grow the log state without bound


@dataclass(slots=True)
class _PeerState:
    """Highest sequence seen plus a bitmap of the REPLAY_WINDOW below it (RFC 4303 style)."""

    top: int
    seen: int = 1
    last_heard: float = 0.0
    frame: Frame | None = None

    def admit(self, seq: int) -> bool:
        if seq > self.top:
            shift = seq - self.top
            self.seen = ((self.seen << shift) | 1) & ((1 << REPLAY_WINDOW) - 1) \
                if shift < REPLAY_WINDOW else 1
            self.top = seq
            return True
        age = self.top - seq
        if age >= REPLAY_WINDOW or self.seen >> age & 1:
            return False
        self.seen |= 1 << age
        return True


@dataclass
class RejectLog:
    """Rate-limited log lines for rejected heartbeats: at most one line per
    ``interval`` per (source address, reason), carrying how many arrived since
    the previous line — a flood of forgeries is visible without flooding the log.

    The source is what the IP header says: unauthenticated, so it is reported,
    never trusted. Sans-I/O: :meth:`note` returns the line to log, or None.
    """

    interval: float = REJECT_LOG_INTERVAL
    _last: dict[tuple[str, Reject], tuple[float, int]] = field(default_factory=dict)

    def note(self, datagram: bytes, reason: Reject, now: float) -> str | None:
        if reason not in LOGGED_REJECTS:
            return None
        src = socket.inet_ntoa(bytes(datagram[12:16])) if len(datagram) >= 20 else "?"
        key = (src, reason)
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval:
            self._last[key] = (last[0], last[1] + 1)
            return None
        if last is None and len(self._last) >= REJECT_LOG_SOURCES_MAX:
            self._last.clear()
        self._last[key] = (now, 0)
        if last is None or not last[1]:
            return f"heartbeat rejected as {reason} from {src}"
        return (f"heartbeat rejected as {reason} from {src}: {last[1] + 1} since the line "
                f"{now - last[0]:.0f} s ago")


@dataclass
class Receiver:
    """Per-node receive state shared by every interface's transport.

    ``gateways`` maps gateway name to its effective VRID
    (:func:`vipmgr.resources.vrid.effective_vrid`); adverts for other gateways
    are rejected. ``counters`` holds one entry per :class:`Reject` value that
    occurred plus ``accepted``.
    """

    node: str
    gateways: dict[str, int]
    keyring: KeyRing = field(default_factory=KeyRing)
    counters: Counter[str] = field(default_factory=Counter)
    reject_log: RejectLog = field(default_factory=RejectLog)
    _peers: dict[tuple[str, str], _PeerState] = field(default_factory=dict)
    _per_gateway: Counter[str] = field(default_factory=Counter)

    def set_gateways(self, gateways: dict[str, int]) -> None:
        """Replace the gateway map; state of peers of dropped gateways is forgotten."""
        self.gateways = dict(gateways)
        for key in [k for k in self._peers if k[0] not in self.gateways]:
            del self._peers[key]
            self._per_gateway[key[0]] -= 1

    def process(self, datagram: bytes, now: float) -> Frame | Reject:
        """Verify one datagram; never raises on what the datagram contains."""
        result = self._verify(datagram, now)
        self.counters[result if isinstance(result, Reject) else "accepted"] += 1
        return result

    def _verify(self, datagram: bytes, now: float) -> Frame | Reject:
        parsed = decode(datagram, self.keyring)   # HMAC first: see codec.decode
        if isinstance(parsed, Reject):
            return parsed
        frame = parsed
        advert = frame.advert
        vrid = self.gateways.get(advert.gateway)
        if vrid is None:
            return Reject.UNKNOWN_GATEWAY
        if vrid != advert.vrid:
            return Reject.VRID
        if advert.node == self.node:
            return Reject.OWN
        key = (advert.gateway, advert.node)
        state = self._peers.get(key)
        if state is None:
            if self._per_gateway[advert.gateway] >= PEERS_PER_GATEWAY_MAX:
                return Reject.CAPACITY
            state = self._peers[key] = _PeerState(top=frame.seq)
            self._per_gateway[advert.gateway] += 1
        elif not state.admit(frame.seq):
            return Reject.REPLAY
        state.last_heard = now
        state.frame = frame
        return frame

    def heard(self, gateway: str, now: float, k: float) -> dict[str, Frame]:
        """Peers of ``gateway`` heard within ``k`` of their own advertised intervals.

        A peer silent for longer than k × interval is "suspect"; what to do
        about it is the election core's decision, not the wire's.
        """
        return {node: st.frame for (gw, node), st in self._peers.items()
                if gw == gateway and st.frame is not None
                and now - st.last_heard <= k * st.frame.advert.interval_ms / 1000}

    def forget(self, gateway: str, node: str) -> None:
        """Drop a peer's replay state (e.g. the node was removed from the store)."""
        if self._peers.pop((gateway, node), None) is not None:
            self._per_gateway[gateway] -= 1

