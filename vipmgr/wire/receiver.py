"""Verifying received heartbeats: authentication, replay window, reject counters.

The :class:`Receiver` is the only stateful part of receive. It is sans-I/O:
the transport hands it datagrams and ``now`` (the loop clock), it returns the
frame or the reject reason and counts both, so the agent exports
``counters`` as metrics without knowing the reasons in advance.
"""

from __future__ import annotations

import hmac
from collections import Counter
from dataclasses import dataclass, field, replace

from vipmgr.wire.codec import decode
from vipmgr.wire.keys import KeyRing
from vipmgr.wire.message import Frame, Reject

REPLAY_WINDOW = 64          # out-of-order tolerance, in sequence numbers
PEERS_PER_GATEWAY_MAX = 255  # distinct sender names kept per gateway


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
        parsed = decode(datagram)
        if isinstance(parsed, Reject):
            return parsed
        frame, mac, signed = parsed
        key_index = None
        if mac is not None and self.keyring.keys:
            key_index = next((i for i, k in enumerate(self.keyring.keys)
                              if hmac.compare_digest(hmac.digest(k, signed, "sha256"), mac)),
                             None)
            if key_index is None:
                return Reject.AUTH
        elif self.keyring.require_auth:
            return Reject.AUTH
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
        if key_index is not None:
            frame = replace(frame, key_index=key_index)
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
