"""Eligibility: may this node be active (for this gateway)? The seed's criteria, each
with its own boolean and reason, so ``get nodes -o wide`` shows what fails and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

NODE_CRITERIA = ("ready", "not_cordoned", "datapath_ready")
CRITERIA = (*NODE_CRITERIA, "selected")


@dataclass(frozen=True)
class Eligibility:
    ready: bool
    not_cordoned: bool
    datapath_ready: bool
    selected: bool = True
    reasons: Mapping[str, str] = field(default_factory=dict)  # criterion -> why it fails

    @property
    def eligible(self) -> bool:
        return self.ready and self.not_cordoned and self.datapath_ready and self.selected

    @property
    def node_eligible(self) -> bool:
        """The node-wide part, without the per-gateway ``selected``."""
        return self.ready and self.not_cordoned and self.datapath_ready

    def criteria(self) -> dict[str, bool]:
        return {name: getattr(self, name) for name in CRITERIA}

    def summary(self) -> str:
        """"eligible", or every failing criterion with its reason."""
        if self.eligible:
            return "eligible"
        return "; ".join(f"{name}: {self.reasons[name]}" for name, ok in self.criteria().items()
                         if not ok)


def evaluate_eligibility(*, health_ready: bool, health_reasons: Sequence[str] = (),
                         cordoned: bool, datapath_ready: bool,
                         datapath_reasons: Sequence[str] = (),
                         selected: bool = True, node_selector: str = "") -> Eligibility:
    """Combine the inputs; every failing criterion gets a reason an operator can act on."""
    reasons: dict[str, str] = {}
    if not health_ready:
        reasons["ready"] = "; ".join(health_reasons) or "health probes not passing"
    if cordoned:
        reasons["not_cordoned"] = "node is cordoned ('vipmgr uncordon NODE' allows it again)"
    if not datapath_ready:
        reasons["datapath_ready"] = "; ".join(datapath_reasons) or "dataplane self-check failing"
    if not selected:
        reasons["selected"] = (f"node labels do not match nodeSelector {node_selector}"
                               if node_selector else "node labels do not match the nodeSelector")
    return Eligibility(ready=health_ready, not_cordoned=not cordoned,
                       datapath_ready=datapath_ready, selected=selected, reasons=reasons)
