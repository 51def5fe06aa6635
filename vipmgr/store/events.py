"""Gateway history in etcd: role changes, failovers with cause and duration, refusals.

Key layout, under the store prefix::

    <prefix>/events/<gateway>/<unix-ns, 20 digits>-<node>-<kind>   ->   JSON of one GatewayEvent

Keys sort by time (the nanosecond stamp is zero-padded), so a prefix range
read in key order is the gateway's history oldest first. Each writer trims
the gateway's history to the newest ``KEEP`` events (an agent every
``TRIM_EVERY`` appends, so a flapping node costs etcd one put per change), so
the history stays bounded however long the cluster runs (two writers trimming at
once only delete the same old keys twice). Events are not lease-bound: the
history of a node outlives its agent, which is the point. Deleting a gateway
leaves its history until ``delete_history`` (or the next ``KEEP`` events).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from vipmgr.store.codec import prefix_end

KEEP = 100  # events per gateway
TRIM_EVERY = 10  # an agent's appends per trim: at most KEEP + TRIM_EVERY per writer

# What ``kind`` says: role (any role change of one node), failover (a node took the
# active role: reason, duration, from whom), refusal (a request the system turned down).
KINDS = ("role", "failover", "refusal")


@dataclass
class GatewayEvent:
    gateway: str
    node: str
    kind: str            # one of KINDS
    at: float            # unix time
    reason: str = ""     # bounded: vipmgr.agent.events.REASONS, or the refused request
    old: str = ""        # roles of a role change
    new: str = ""
    detail: str = ""     # the core's or the CLI's words
    epoch: int = 0
    previous: str = ""   # failover: the node that held it before ("" = nobody)
    duration_ms: float | None = None  # failover: from leaving standby to serving

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GatewayEvent":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def events_prefix(prefix: str, gateway: str | None = None) -> str:
    base = f"{prefix}/events/"
    return f"{base}{gateway}/" if gateway else base


def event_key(prefix: str, event: GatewayEvent) -> str:
    return (f"{events_prefix(prefix, event.gateway)}{int(event.at * 1e9):020d}-"
            f"{event.node or '-'}-{event.kind}")


async def append(client, prefix: str, event: GatewayEvent, keep: int = KEEP,
                 trim: bool = True) -> None:
    """Write ``event`` and (``trim``) trim its gateway's history to the newest ``keep``."""
    await client.put(event_key(prefix, event).encode(), json.dumps(event.to_dict()).encode())
    if not trim:
        return
    gw_prefix = events_prefix(prefix, event.gateway).encode()
    keys = [kv.key for kv in await client.get_prefix(gw_prefix, keys_only=True)]
    if len(keys) > keep:
        await client.delete_range(keys[0], prefix_end(keys[len(keys) - keep - 1]))


async def history(client, prefix: str, gateway: str | None = None,
                  limit: int | None = None) -> list[GatewayEvent]:
    """Events oldest first (every gateway's when ``gateway`` is None), the newest ``limit``."""
    found = []
    for kv in await client.get_prefix(events_prefix(prefix, gateway).encode()):
        try:
            data = json.loads(kv.value)
            if isinstance(data, dict):
                found.append(GatewayEvent.from_dict(data))
        except (ValueError, TypeError):
            continue  # a record this version cannot read is skipped, not fatal
    found.sort(key=lambda e: (e.at, e.kind == "failover"))  # a failover after its role change
    return found[-limit:] if limit else found


async def delete_history(client, prefix: str, gateway: str) -> None:
    await client.delete_prefix(events_prefix(prefix, gateway).encode())
