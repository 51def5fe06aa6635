"""One heartbeat per node: every election of a node advertises in the node's one packet.

The election stays per gateway (its evidence, echo and fencing rules are per
gateway), but the packet is per node. When any election's advert falls due (its
own period, or at once after a move), every other election of the node whose
advert would fall due before the node's next packet (within the node's shortest
period) is told ``AdvertNow`` and advertises at the same instant: their adverts
leave together as one ``SendHeartbeat``. So the node sends one packet per its
shortest period whatever the number of gateways, and each election advertises
at most that period early (a standby gateway on a node active for another one:
every second or third packet, not every one). Advertising early only makes the
evidence fresher (docs/architecture.md, "Shared packets").

Sans-I/O like the election: the agent and the simulator call :func:`step` with
the node's elections and apply what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from vipmgr.core.election import Election
from vipmgr.core.messages import Action, Advert, AdvertNow, Event, SendAdvert


@dataclass(frozen=True, slots=True)
class SendHeartbeat:
    """The node's packet: the adverts of all its gateways, one stamp, in gateway order."""

    adverts: tuple[Advert, ...]


@dataclass(slots=True)
class NodeStep:
    """What one event did on the node: per gateway, the actions to apply in order (no
    ``SendAdvert``: those are in ``heartbeat``). Every gateway listed was handed an
    event, so its next deadline may have moved: reschedule each."""

    actions: dict[str, list[Action]] = field(default_factory=dict)
    heartbeat: SendHeartbeat | None = None


def step(elections: Mapping[str, Election], gateway: str, event: Event,
         now: float) -> NodeStep:
    """Hand ``event`` to ``gateway``'s election; if it advertises, so do all the others."""
    out = NodeStep()
    election = elections.get(gateway)
    if election is None:
        return out
    adverts: dict[str, Advert] = {}
    _collect(out, adverts, gateway, election.handle(event, now))
    if adverts:
        # The node's next packet leaves within its shortest period: whoever falls due
        # before then rides in this one (at most that period early), the rest wait.
        horizon = now + min(el.advert_period for el in elections.values())
        for other, el in elections.items():
            due = el.advert_due
            if other not in adverts and due is not None and due < horizon:
                _collect(out, adverts, other, el.handle(AdvertNow(), now))
        out.heartbeat = SendHeartbeat(tuple(adverts[gw] for gw in sorted(adverts)))
    return out


def _collect(out: NodeStep, adverts: dict[str, Advert], gateway: str,
             actions: list[Action]) -> None:
    kept = out.actions.setdefault(gateway, [])
    for action in actions:
        if type(action) is SendAdvert:
            adverts[gateway] = action.advert
        else:
            kept.append(action)
