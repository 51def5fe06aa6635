"""Heartbeat wire protocol: one VRRPv3-framed datagram per node and interval, a vipmgr
trailer with one record per gateway, and an HMAC.

- :mod:`vipmgr.wire.message`: :class:`Advert`, :class:`Frame`, :class:`Reject` (no scapy).
- :mod:`vipmgr.wire.codec`: :class:`Encoder` (datagram builder) and :func:`decode` (pure).
- :mod:`vipmgr.wire.keys`: the HMAC key file and :class:`KeyRing`.
- :mod:`vipmgr.wire.receiver`: :class:`Receiver` (auth, per-node replay window, reject counters).
- :mod:`vipmgr.wire.transport`: raw socket per interface on asyncio.

See docs/wire.md for the byte layout and the agent-facing API.
"""
