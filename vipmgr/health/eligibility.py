"""Eligibility: may this node be active (for this gateway)? The seed's criteria, each
with its own boolean and reason, so ``get nodes -o wide`` shows what fails and why.

:func:`evaluate` is the one decision the agent makes per gateway: its election is
told ``healthy`` / ``cordoned`` (and ``release_reason`` when it must let go), the
member's status shows ``status_reasons``, and the node status is the same
evaluation over the node's own problems. The agent only gathers the inputs (probes,
the self-check's problems, the Node's cordon) and applies the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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
    # every failing probe's reason, then every datapath problem, as the inputs said them
    problems: tuple[str, ...] = ()

    @property
    def eligible(self) -> bool:
        return self.ready and self.not_cordoned and self.datapath_ready and self.selected

    @property
    def node_eligible(self) -> bool:
        """The node-wide part, without the per-gateway ``selected``."""
        return self.ready and self.not_cordoned and self.datapath_ready

    @property
    def healthy(self) -> bool:
        """What an election calls healthy: probes pass and the datapath has no problem."""
        return self.ready and self.datapath_ready

    @property
    def cordoned(self) -> bool:
        return not self.not_cordoned

    @property
    def inputs(self) -> tuple[bool, bool]:
        """(healthy, cordoned): what the election is told."""
        return self.healthy, self.cordoned

    @property
    def release_reason(self) -> str:
        """Why an unhealthy node lets go (the first problem; "" when healthy or none said)."""
        return "" if self.healthy else (self.problems[0] if self.problems else "")

    @property
    def status_reasons(self) -> list[str]:
        """Why the member may not serve, as its status says (see :func:`member_reasons`)."""
        return member_reasons(self.healthy, self.cordoned, self.problems)

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


def evaluate(*, health_ready: bool, health_reasons: Sequence[str] = (), cordoned: bool,
             datapath_problems: Sequence[str] = ()) -> Eligibility:
    """One gateway's eligibility on this node: ``datapath_problems`` are the node's own and
    that gateway's (the node's alone give the node-wide eligibility of the node status).
    The datapath is ready when it has no problem."""
    result = evaluate_eligibility(health_ready=health_ready, health_reasons=health_reasons,
                                  cordoned=cordoned, datapath_ready=not datapath_problems,
                                  datapath_reasons=datapath_problems)
    return replace(result, problems=(*health_reasons, *datapath_problems))


def member_reasons(healthy: bool, cordoned: bool, problems: Sequence[str]) -> list[str]:
    """A member status's reasons: the problems while unhealthy, then "cordoned"."""
    return ([] if healthy else list(problems)) + (["cordoned"] if cordoned else [])
