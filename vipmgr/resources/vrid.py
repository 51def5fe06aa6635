"""The VRRP virtual router id of a gateway: explicit, or derived from its name.

Derivation is deterministic (CRC-32 of the name folded into 1..255) so every
node computes the same VRID without coordination. Gateways may share a VRID: a
heartbeat carries every gateway of its node, each record named by its gateway
(docs/wire.md); the VRID travels with the record, and a receiver whose
configuration says another drops that record (``vrid``), so the nodes' configs
are checked against each other.
"""

from __future__ import annotations

import zlib

VRID_MIN, VRID_MAX = 1, 255


def derived_vrid(gateway_name: str) -> int:
    return zlib.crc32(gateway_name.encode()) % VRID_MAX + VRID_MIN


def effective_vrid(gateway_name: str, explicit: int | None) -> int:
    return explicit if explicit is not None else derived_vrid(gateway_name)
