"""One election's settings: who it is, who may be active, its timers and policy."""

from __future__ import annotations

from dataclasses import dataclass, field

from vipmgr.config.timers import Timers

ON_ETCD_LOSS = ("hold", "vrrp")
# Test-only switches that remove one protection, so the simulator can prove it matters.
UNSAFE_SWITCHES = frozenset({"challenge", "fence"})
# s a gateway that was never held waits after its Start for a placement first choice it
# does not hear yet: gateways applied in a batch start on each agent when that agent has
# planned and programmed them, up to about a second apart on a busy node. Only a new
# gateway waits (a failover never does), and only this long if its first choice is absent.
FIRST_CHOICE_WAIT = 1.0


@dataclass(frozen=True)
class ElectionConfig:
    gateway: str
    node: str
    members: tuple[str, ...]         # every node that may become active for this gateway
    priority: int                    # own priority (placement.node_priority)
    timers: Timers = field(default_factory=Timers)
    on_etcd_loss: str = "hold"
    preempt: bool = False
    preempt_delay: float = 0.0
    # Rebalance: the placement's first choice takes its gateway back, gracefully, once it
    # has been eligible for hold_down, move_delay later (moves into one node go one by one).
    rebalance: bool = False
    hold_down: float = 0.0
    move_delay: float = 0.0
    # The placement's first choice (None: unknown): a gateway that was never held waits
    # for it, so it starts there and not on whichever agent saw the gateway first.
    first_choice: str | None = None
    unsafe: frozenset[str] = frozenset()  # test-only: UNSAFE_SWITCHES to disable

    def __post_init__(self) -> None:
        if self.on_etcd_loss not in ON_ETCD_LOSS:
            raise ValueError(f"on_etcd_loss must be one of {ON_ETCD_LOSS}")
        if not self.unsafe <= UNSAFE_SWITCHES:
            raise ValueError(f"unknown unsafe switches {set(self.unsafe) - UNSAFE_SWITCHES}")
