"""Placement's eligibility records (docs/placement.md): one key per eligible node.

``<prefix>/status/placement/<node>`` -> ``{"since": unix time, "holdDown": seconds}``,
written by that node's agent bound to its status lease (``KeyLayout.placement_key``).
What counts is that the key exists: every JSON value says its node is eligible (a
newer agent's record with other fields still does), only a value that is not JSON
is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from vipmgr.store.codec import key_suffix, load_json


@dataclass(frozen=True, slots=True)
class PlacementRecord:
    since: float | None      # eligible since (None: the record does not say)
    hold_down: float | None  # the writer's placementHoldDown


def encode_placement_record(since: float, hold_down: float) -> bytes:
    return json.dumps({"since": since, "holdDown": hold_down}).encode()


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def decode_placement_record(raw: bytes | str, where: str) -> PlacementRecord:
    """A stored record; a value that is not JSON raises CorruptObjectError naming ``where``."""
    data = load_json(raw, where, "placement record",
                     "delete the key with etcdctl (its agent writes it again)")
    if not isinstance(data, dict):
        data = {}
    return PlacementRecord(_number(data.get("since")), _number(data.get("holdDown")))


async def read_records(client: Any, placement_prefix: str) -> dict[str, bytes]:
    """Every record, undecoded: node -> stored value (``KeyLayout.placement_prefix``)."""
    return {key_suffix(kv.key, placement_prefix): kv.value
            for kv in await client.get_prefix(placement_prefix.encode())}
