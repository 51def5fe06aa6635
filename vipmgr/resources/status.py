"""Status records agents publish to etcd (bound to their lease, so they vanish with them).

The CLI reads them for ``get nodes -o wide``, ``describe`` and ``status``;
the agent writes them. One schema, shared here, so both sides agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping


def _from_mapping(cls, data: Mapping[str, Any]):
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class NodeStatus:
    """The seed's readiness criteria as the node's agent sees them."""

    node: str
    ready: bool = False
    ready_reason: str = ""
    datapath_ready: bool = False
    datapath_reason: str = ""
    updated: float = 0.0  # unix time of the last publish
    agent_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NodeStatus":
        return _from_mapping(cls, data)


@dataclass
class GatewayMemberStatus:
    """One node's view of one gateway it is a member of."""

    gateway: str
    node: str
    role: str = "standby"  # active | standby | ineligible | fenced
    epoch: int = 0
    since: float = 0.0
    priority: int = 0
    eligible: bool = False
    reasons: list[str] = field(default_factory=list)
    egress_ip: str = ""
    interface: str = ""
    heard_peers: dict[str, float] = field(default_factory=dict)  # peer -> unix time last heard
    heartbeat_path_ok: bool = True
    etcd_ok: bool = True
    last_failover: dict[str, Any] = field(default_factory=dict)  # reason, duration_ms, at, from
    updated: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GatewayMemberStatus":
        return _from_mapping(cls, data)
