"""Verifying received heartbeats: authentication, replay window, reject counters.

The :class:`Receiver` is the only stateful part of receive. It is sans-I/O:
the transport hands it datagrams and ``now`` (the loop clock), it returns the
frame or the reject reason and counts both, so the agent exports
``counters`` as metrics without knowing the reasons in advance.
"""

from __future__ import annotations

import dataclasses
import socket
from collections import Counter
from dataclasses import dataclass, field

from vipmgr.wire.codec import decode
from vipmgr.wire.keys import KeyRing
from vipmgr.wire.message import Advert, Frame, Reject

REPLAY_WINDOW = 64          # out-of-order tolerance, in sequence numbers
SENDERS_MAX = 255           # distinct sender nodes with a replay window
LOGGED_REJECTS = frozenset({Reject.AUTH, Reject.REPLAY})  # what an attacker's packets become
REJECT_LOG_INTERVAL = 10.0   # seconds: one line per source and reason, then a count
REJECT_LOG_SOURCES_MAX = 1024  # spoofed sources cannot grow the log state without bound


@dataclass(slots=True)
class _Window:
    """One sender node's sequence stream: the highest sequence seen plus a bitmap of the
    REPLAY_WINDOW below it (RFC 4303 style)."""

    top: int
    seen: int = 1

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
    (:func:`vipmgr.resources.vrid.effective_vrid`). ``counters`` holds one entry
    per datagram: its :class:`Reject` value or ``accepted``. Records of an accepted
    datagram for gateways not configured here, or with another VRID, are dropped
    from the returned frame and counted in ``records_dropped`` (keys
    ``Reject.UNKNOWN_GATEWAY`` and ``Reject.VRID``); a datagram with no record for
    us is rejected as a whole, with the reason of its records.

    State: one replay window per sender node (a node sends one sequence stream for
    all its gateways; at most SENDERS_MAX nodes), and per (gateway, node) the last
    accepted advert with its arrival time.
    """

    node: str
    gateways: dict[str, int]
    keyring: KeyRing = field(default_factory=KeyRing)
    counters: Counter[str] = field(default_factory=Counter)
    records_dropped: Counter[str] = field(default_factory=Counter)
    reject_log: RejectLog = field(default_factory=RejectLog)
    _windows: dict[str, _Window] = field(default_factory=dict)
    # gateway → node → (arrival on the loop clock, last accepted advert)
    _heard: dict[str, dict[str, tuple[float, Advert]]] = field(default_factory=dict)

    def set_gateways(self, gateways: dict[str, int]) -> None:
        """Replace the gateway map; what was heard for dropped gateways is forgotten."""
        self.gateways = dict(gateways)
        for gateway in [g for g in self._heard if g not in self.gateways]:
            del self._heard[gateway]

    def process(self, datagram: bytes, now: float) -> Frame | Reject:
        """Verify one datagram; never raises on what the datagram contains."""
        result = self._verify(datagram, now)
        self.counters[result if isinstance(result, Reject) else "accepted"] += 1
        return result

    def _verify(self, datagram: bytes, now: float) -> Frame | Reject:
        """Envelope → HMAC → claims (in decode) → own name → gateway filtering → replay
        window: a datagram with no record for us leaves the sender's window alone."""
        frame = decode(datagram, self.keyring)
        if isinstance(frame, Reject):
            return frame
        sender = frame.adverts[0].node
        if sender == self.node:
            return Reject.OWN
        kept = tuple(a for a in frame.adverts if self.gateways.get(a.gateway) == a.vrid)
        dropped = self._dropped(frame.adverts) if len(kept) < len(frame.adverts) else None
        if not kept:
            return Reject.VRID if dropped[Reject.VRID] else Reject.UNKNOWN_GATEWAY
        window = self._windows.get(sender)
        if window is None:
            if len(self._windows) >= SENDERS_MAX:
                return Reject.CAPACITY
            self._windows[sender] = _Window(top=frame.seq)
        elif not window.admit(frame.seq):
            return Reject.REPLAY
        for advert in kept:
            self._heard.setdefault(advert.gateway, {})[sender] = (now, advert)
        if dropped is None:
            return frame
        self.records_dropped.update(dropped)
        return dataclasses.replace(frame, adverts=kept)

    def _dropped(self, adverts: tuple[Advert, ...]) -> Counter[str]:
        """Why the records that are not for us are dropped: the gateway is not configured
        here, or its VRID differs from ours."""
        return Counter(Reject.VRID if a.gateway in self.gateways else Reject.UNKNOWN_GATEWAY
                       for a in adverts if self.gateways.get(a.gateway) != a.vrid)

    def heard(self, gateway: str, now: float, k: float) -> dict[str, Advert]:
        """Peers whose last accepted advert for ``gateway`` arrived within ``k`` of that
        advert's own interval.

        A peer silent for longer than k × interval is "suspect"; what to do
        about it is the election core's decision, not the wire's.
        """
        return {node: advert for node, (at, advert) in self._heard.get(gateway, {}).items()
                if now - at <= k * advert.interval_ms / 1000}

    def forget(self, gateway: str, node: str) -> None:
        """Drop what was heard from ``node`` for ``gateway`` (e.g. it left the gateway)."""
        self._heard.get(gateway, {}).pop(node, None)

    def forget_node(self, node: str) -> None:
        """Drop a sender's replay window (e.g. the node was removed from the store, or its
        wall clock stepped back and its sequence with it), freeing its SENDERS_MAX slot."""
        self._windows.pop(node, None)
