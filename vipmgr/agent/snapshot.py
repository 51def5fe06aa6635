"""The agent's view of the store's resources, and what this node is a member of."""

from __future__ import annotations

from dataclasses import dataclass, field

from vipmgr.resources.models import (
    EgressGateway,
    EgressGatewayPolicy,
    Node,
    Resource,
    VirtualMachine,
)


@dataclass(frozen=True)
class Snapshot:
    """Every resource at one etcd revision, grouped by kind."""

    revision: int = 0
    gateways: dict[str, EgressGateway] = field(default_factory=dict)
    policies: dict[str, EgressGatewayPolicy] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    vms: dict[str, VirtualMachine] = field(default_factory=dict)

    @classmethod
    def of(cls, revision: int, objects: list[Resource]) -> "Snapshot":
        snap = cls(revision)
        for obj in objects:
            if isinstance(obj, EgressGateway):
                snap.gateways[obj.name] = obj
            elif isinstance(obj, EgressGatewayPolicy):
                snap.policies[obj.name] = obj
            elif isinstance(obj, Node):
                snap.nodes[obj.name] = obj
            elif isinstance(obj, VirtualMachine):
                snap.vms[obj.key_name] = obj
        return snap

    def members_of(self, gateway: EgressGateway) -> tuple[str, ...]:
        """Nodes the gateway's nodeSelector picks (cordoned ones too: they stay members,
        just not eligible), sorted."""
        return tuple(sorted(n.name for n in self.nodes.values()
                            if gateway.node_selector.matches(n.labels)))

    def gateways_of(self, node: str) -> list[EgressGateway]:
        me = self.nodes.get(node)
        if me is None:
            return []
        return [g for g in self.gateways.values() if g.node_selector.matches(me.labels)]
