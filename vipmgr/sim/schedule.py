"""Random fault schedules, fully determined by one integer seed (``--replay SEED``)."""

from __future__ import annotations

import random
from dataclasses import dataclass

# Faults that may overlap each other; each has a start, a duration and a target.
FAULTS = ("crash", "freeze", "hb_isolate", "hb_split", "hb_oneway", "etcd_cut", "etcd_outage",
          "hb_loss", "hb_dup", "hb_delay", "leader_change", "health_flap", "cordon",
          "unlabel", "reprioritize")
# One calm, measured handover per schedule: crash of the active, a graceful path, or
# (three nodes or more) link-down of the active's heartbeat interface.
MEASURED = ("crash_active", "switchover", "shutdown_active", "cordon_active", "health_active",
            "isolate_active")
HB_FAULTS = frozenset({"hb_isolate", "hb_split", "hb_oneway", "hb_loss", "hb_delay"})


@dataclass(frozen=True)
class Episode:
    kind: str
    start: float
    duration: float
    node: int = 0        # index of the target node (or first side of a link)
    other: int = 0       # second node (one-way link), or split point
    gateway: int = 0
    amount: float = 0.0  # loss/dup probability, extra delay

    def describe(self, nodes: list[str], gateways: list[str]) -> str:
        what = {
            "crash": f"crash {nodes[self.node]}, restart after {self.duration * 1e3:.0f} ms",
            "freeze": f"freeze {nodes[self.node]} for {self.duration * 1e3:.0f} ms",
            "hb_isolate": f"heartbeats of {nodes[self.node]} cut both ways",
            "hb_split": f"heartbeat network split {nodes[:self.other]} | {nodes[self.other:]}",
            "hb_oneway": f"heartbeats {nodes[self.node]} -> {nodes[self.other]} lost",
            "etcd_cut": f"{nodes[self.node]} cannot reach etcd",
            "etcd_outage": "etcd down (no leader)",
            "hb_loss": f"heartbeat loss {self.amount:.0%}",
            "hb_dup": f"heartbeat duplication {self.amount:.0%}",
            "hb_delay": f"heartbeat extra delay up to {self.amount * 1e3:.0f} ms (reordering)",
            "leader_change": "etcd leader change (lease TTLs restart)",
            "health_flap": f"{nodes[self.node]} unhealthy",
            "cordon": f"{nodes[self.node]} cordoned",
            "unlabel": f"{nodes[self.node]} leaves {gateways[self.gateway]}'s members",
            "reprioritize": f"{nodes[self.node]}'s priority for {gateways[self.gateway]} "
                            f"becomes {int(self.amount)}",
            "crash_active": f"crash the active of {gateways[self.gateway]}",
            "switchover": f"switchover of {gateways[self.gateway]}",
            "shutdown_active": f"SIGTERM the active of {gateways[self.gateway]}",
            "cordon_active": f"cordon the active of {gateways[self.gateway]}",
            "health_active": f"health failure on the active of {gateways[self.gateway]}",
            "isolate_active": f"heartbeat link of the active of {gateways[self.gateway]} "
                              "goes down",
        }[self.kind]
        span = f" for {self.duration * 1e3:.0f} ms" if self.kind not in (
            "crash", "freeze", "leader_change") and self.duration else ""
        return what + span


@dataclass(frozen=True)
class Schedule:
    seed: int
    nodes: list[str]
    gateways: list[str]
    policy: str            # onEtcdLoss
    drift: list[float]     # per-node clock rate offset
    offsets: list[float]   # per-node clock offset
    episodes: list[Episode]
    faults_end: float      # every fault has healed by then
    jitter: bool = False   # scheduling stalls and slow etcd replies (see world.Jitter)
    start_spread: float = 0.05  # each node's process starts at a random instant within
    # each agent runs the agent's placement over eligibility records, rebalance on
    placement: bool = False
    preempt: bool = False   # spec.failover.preempt: a better standby takes over...
    preempt_delay: float = 0.0  # ... after hearing a worse active this long


WARMUP = 0.8        # initial election settles
MEASURE_AT = WARMUP
MEASURE_FOR = 0.4   # a measured handover completes within this...
# ... except link-down, which may take one challenge backoff (5 (S + W)) when the first
# challenge was answered (a holder stall hid the link loss): allowed, it shows in the
# link-down percentiles. The random faults may overlap its tail.
MEASURE_LINK_DOWN_FOR = 1.4
FAULTS_FROM = WARMUP + 0.7
FAULT_SPAN = 1.5


# Gateways per schedule: all of them share the nodes, so one heartbeat packet carries
# several (three or more in most schedules) and its loss hits them together.
NODES, GATEWAYS = (2, 5), (2, 5)


def make_schedule(seed: int, nodes_range: tuple[int, int] = NODES,
                  gateways_range: tuple[int, int] = GATEWAYS, max_drift: float = 0.01,
                  vrrp_share: float = 0.2, jitter_share: float = 0.3,
                  preempt_share: float = 0.15, placement: bool = False) -> Schedule:
    """``placement``: the agent's placement runs on every node with rebalance on, and
    explicit priority edits (which opt a gateway out of it) are not among the faults."""
    rng = random.Random(seed)
    faults = tuple(f for f in FAULTS if f != "reprioritize") if placement else FAULTS
    n = rng.randint(*nodes_range)
    g = rng.randint(*gateways_range)
    nodes = [f"n{i + 1}" for i in range(n)]
    gateways = [f"gw{i + 1}" for i in range(g)]
    policy = "vrrp" if rng.random() < vrrp_share else "hold"
    drift = [rng.uniform(-max_drift / 2, max_drift / 2) for _ in nodes]
    offsets = [rng.uniform(0, 1000) for _ in nodes]
    # A two-node group keeps its holder on link-down (no majority): nothing to measure.
    measured = rng.choice(MEASURED if n > 2 else MEASURED[:-1])
    length = MEASURE_LINK_DOWN_FOR if measured == "isolate_active" else MEASURE_FOR
    episodes = [Episode(measured, MEASURE_AT, length, gateway=rng.randrange(g))]
    end = MEASURE_AT + length
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(faults)
        start = FAULTS_FROM + rng.uniform(0, FAULT_SPAN)
        duration = rng.choice((rng.uniform(0.005, 0.3), rng.uniform(0.3, 3.0)))
        if kind == "leader_change":
            duration = 0.0
        node = rng.randrange(n)
        other = rng.randrange(n - 1)
        other = other + 1 if other >= node else other
        if kind == "hb_split":
            other = rng.randint(1, n - 1)
        amount = {"hb_loss": rng.uniform(0.1, 0.9), "hb_dup": rng.uniform(0.1, 0.5),
                  "hb_delay": rng.uniform(0.005, 0.08),
                  "reprioritize": float(rng.randint(1, 254))}.get(kind, 0.0)
        episodes.append(Episode(kind, start, duration, node, other, rng.randrange(g), amount))
        end = max(end, start + duration)
    jitter = rng.random() < jitter_share
    # Drawn last, so every other property of a seed's schedule stays as it was.
    preempt = rng.random() < preempt_share
    delay = rng.uniform(0.05, 0.5) if preempt else 0.0
    return Schedule(seed, nodes, gateways, policy, drift, offsets, episodes, end, jitter,
                    preempt=preempt, preempt_delay=delay, placement=placement)
