"""Aggregate probe states into the node's Ready criterion, with human reasons.

Pure: the runner (:func:`vipmgr.health.checks.run_monitor`) feeds results and
the time; status views and the eligibility computation read from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from vipmgr.health.probes import Probe
from vipmgr.health.state import CheckResult, RiseFall, Status


@dataclass(frozen=True)
class ProbeStatus:
    """One probe as status views show it."""

    name: str
    kind: str
    target: str
    status: Status
    reason: str
    since: float | None
    last_at: float | None


@dataclass(frozen=True)
class Transition:
    """A probe changed status; the agent logs it and re-evaluates eligibility."""

    probe: str
    old: Status
    new: Status
    reason: str
    at: float


class HealthMonitor:
    """The node is Ready when every probe is up (and trivially when none is configured)."""

    def __init__(self, probes: Sequence[Probe] = ()):
        self.probes: dict[str, Probe] = {}
        self._states: dict[str, RiseFall] = {}
        self.reconfigure(probes)

    def reconfigure(self, probes: Sequence[Probe]) -> None:
        """Adopt a new probe list (SIGHUP); unchanged probes keep their state.

        Keeping state matters: a reload must not turn an active node
        not-Ready (pending) and make it release for no reason.
        """
        states = {}
        for probe in probes:
            kept = self._states.get(probe.name)
            same = self.probes.get(probe.name) == probe
            states[probe.name] = kept if same and kept else RiseFall(probe.rise, probe.fall)
        self.probes = {probe.name: probe for probe in probes}
        self._states = states

    def observe(self, name: str, result: CheckResult, now: float) -> Transition | None:
        state = self._states[name]
        previous = state.observe(result, now)
        if previous is None:
            return None
        return Transition(name, previous, state.status, self.reason(name), now)

    @property
    def ready(self) -> bool:
        return all(state.status is Status.UP for state in self._states.values())

    def failing_reasons(self) -> list[str]:
        """Why the node is not Ready: one line per probe that is not up."""
        return [self.reason(name) for name, state in self._states.items()
                if state.status is not Status.UP]

    def statuses(self) -> list[ProbeStatus]:
        return [self.status(name) for name in self._states]

    def status(self, name: str) -> ProbeStatus:
        probe, state = self.probes[name], self._states[name]
        return ProbeStatus(name, probe.kind, probe.target, state.status, self.reason(name),
                           state.since, state.last_at)

    def reason(self, name: str) -> str:
        """E.g. "probe 'uplink' (carrier eth1): no carrier for 3 checks"."""
        probe, state = self.probes[name], self._states[name]
        return f"{probe.describe()}: {_explain(state)}"


def _explain(state: RiseFall) -> str:
    last = state.last
    if last is None:
        return "no result yet"
    if state.status is Status.UP:
        if last.ok:
            return last.detail
        return f"up, failing ({state.failures} of {state.fall} to go down): {last.detail}"
    if state.status is Status.DOWN:
        if last.ok:
            return f"down, recovering ({state.successes} of {state.rise} successes to go up)"
        return f"{last.detail} for {state.failures} checks"
    if last.ok:
        return f"pending ({state.successes} of {state.rise} successes to go up)"
    return f"pending, failing ({state.failures} of {state.fall} to go down): {last.detail}"
