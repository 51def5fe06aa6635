"""What the agent's event loop knows of the store: gateways and nodes (the inventory —
policies and VMs — stays on its own thread, vipmgr.agent.inventory)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vipmgr.resources.models import EgressGateway, Node


@dataclass(frozen=True)
class Snapshot:
    """The gateways and nodes at one moment, by name."""

    gateways: dict[str, EgressGateway] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)

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
