"""Switchover requests: the CLI puts one key per gateway, the active node's agent takes it.

``<prefix>/switchover/<gateway>`` -> ``{"to": NODE or null, "requested": unix time}``.
Its own module so that the agent reads the layout without importing the CLI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from vipmgr.store.codec import CorruptObjectError, key_suffix, load_object


def switchover_prefix(prefix: str) -> str:
    return f"{prefix}/switchover/"


def switchover_key(prefix: str, gateway: str) -> str:
    return f"{switchover_prefix(prefix)}{gateway}"


@dataclass(frozen=True, slots=True)
class SwitchoverRequest:
    to: str | None               # the node asked to take over (None: the best standby)
    requested: float | None = None  # unix time the CLI asked


def encode_switchover(to: str | None, requested: float) -> bytes:
    return json.dumps({"to": to, "requested": requested}).encode()


def decode_switchover(raw: bytes | str, where: str) -> SwitchoverRequest:
    """A stored request; anything but ``{"to": NODE|null, …}`` raises CorruptObjectError
    naming ``where`` (``requested`` is informational: a missing or odd one is None)."""
    fix = "delete the key with etcdctl and request the switchover again"
    data = load_object(raw, where, "switchover request", fix)
    to = data.get("to")
    if to is not None and not isinstance(to, str):
        raise CorruptObjectError(f"stored switchover request at {where}: \"to\" must be a node "
                                 f"name or null, not {type(to).__name__}; {fix}")
    requested = data.get("requested")
    if isinstance(requested, bool) or not isinstance(requested, (int, float)):
        requested = None
    return SwitchoverRequest(to, None if requested is None else float(requested))


async def read_requests(client: Any, prefix: str) -> dict[str, bytes]:
    """Every pending request, undecoded: gateway -> stored value (the agent decodes only
    those of the gateways it serves)."""
    base = switchover_prefix(prefix)
    return {key_suffix(kv.key, base): kv.value
            for kv in await client.get_prefix(base.encode())}
