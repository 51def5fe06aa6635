"""Placement benchmark on the seed lab (docs/placement.md): the spread of many gateways over
the three egress nodes after every ordinary change, and what a rebalance move costs.

One run deploys its own lab (``bench-placement`` unless named) with agents whose
placement hold-down is ``hold_down`` (short, so a run takes a minute or two), applies
``gateways - 1`` VirtualIPAddress gateways beside the seed's ``egress-gw`` and walks
through the steps of :data:`STEPS`. After each step it polls ``vipmgr status`` until
placement has settled (every gateway active, no pending move, no node above its share)
and records the spread, the time that took and the moves seen on the way. The
invariant it checks is the issue's: once settled, no eligible node is active for more
than ⌈G / N⌉ gateways.

Then the rebalance trials: the seed gateway's node is cordoned (its gateway moves to
the second choice), the stream of :class:`~vipmgr.lab.bench.FailoverBench` starts, the
node is uncordoned one second in, and after the hold-down it takes its gateway back
through the graceful handover; outage, wrong-source datagrams and dual ARP answers
are measured as for a failover.
"""

from __future__ import annotations

import json
import math
import queue
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from vipmgr.lab.analysis import summarize
from vipmgr.lab.bench import (
    AGENT_NODES, GATEWAY_NAME, GATEWAYS, MAX_STREAM, FailoverBench, Say, Vipmgr,
    _quiet, agent_cmd, seed_network,
)
from vipmgr.lab.runtime import Lab, LabError, deploy, destroy

EGRESS_LABEL = "node-role.deckhouse.io/egress"
FIRST_EXTRA_VIP = 101          # gw01 is 192.0.2.101, ...
SETTLE_TIMEOUT = 60.0          # beyond the hold-down and the moves
POLL = 0.25                    # s between two views of vipmgr status --watch


def gateway_manifests(count: int) -> str:
    """``count`` VirtualIPAddress gateways gw01.. beside the seed's (same nodeSelector)."""
    if not 0 <= count <= 150:
        raise LabError("between 0 and 150 extra gateways (192.0.2.101-250)")
    docs = [f"""apiVersion: network.deckhouse.io/v1alpha1
kind: EgressGateway
metadata:
  name: gw{i:02d}
spec:
  nodeSelector:
    {EGRESS_LABEL}: ""
  sourceIP:
    mode: VirtualIPAddress
    virtualIPAddress:
      ip: 192.0.2.{FIRST_EXTRA_VIP + i - 1}
""" for i in range(1, count + 1)]
    return "---\n".join(docs)


def agent_config(hold_down: float) -> str:
    return f"placementHoldDown: {round(hold_down * 1000)}ms\n"


@dataclass
class Spread:
    """One poll of ``vipmgr status -o json``."""

    holders: dict[str, str | None]               # gateway -> active node
    nodes: dict[str, dict[str, int]]             # node -> {"active", "share"}
    pending: list[dict]

    @property
    def settled(self) -> bool:
        return (all(self.holders.values()) and not self.pending
                and all(v["active"] <= v["share"] for v in self.nodes.values()))

    def loads(self) -> dict[str, int]:
        return {n: v["active"] for n, v in self.nodes.items()}


@dataclass
class StepResult:
    step: str
    served: float | None                          # s until every gateway is active on an
                                                  # eligible node (None: never)
    seconds: float | None                         # until settled (None: never)
    moves: int                                    # holder changes seen while settling
    spread: dict[str, int]                        # node -> active gateways, once settled
    eligible: list[str]
    bound: int                                    # ⌈G / N⌉
    within_bound: bool

    def line(self) -> str:
        return step_line(self.__dict__)


def step_line(step: dict) -> str:
    """One step of the report as the bench prints it."""
    spread = " / ".join(f"{n} {c}" for n, c in sorted(step["spread"].items()))
    served = "never" if step["served"] is None else f"{step['served'] * 1000:.0f} ms"
    took = "never" if step["seconds"] is None else f"{step['seconds']:.1f} s"
    return (f"  {step['step']:<26} {spread:<24} served {served:>8}, settled {took:>7}, "
            f"{step['moves']} moves"
            + ("" if step["within_bound"] else f"  ABOVE ⌈G/N⌉ = {step['bound']}"))


@dataclass
class PlacementBench:
    """Steps on a running lab whose agents and gateways are started."""

    lab: Lab
    hold_down: float
    say: Say = _quiet
    results: list[StepResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        # one long-lived `vipmgr status --watch` in the etcd node: a CLI process per poll
        # would cost the 2-core lab more CPU than the agents themselves
        self._watch = subprocess.Popen(
            self.lab.netns("etcd").argv(["vipmgr", "status", "-o", "json", "--watch",
                                         "--interval", str(POLL)]),
            env=self.lab.env("etcd"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True)
        self._views: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        """Split the watch's output into JSON documents (one per redraw)."""
        decoder, buf = json.JSONDecoder(), ""
        for line in self._watch.stdout:
            buf += line
            try:
                doc, end = decoder.raw_decode(buf.lstrip())
            except json.JSONDecodeError:
                continue
            buf = buf.lstrip()[end:]
            self._views.put(doc)

    def close(self) -> None:
        self._watch.terminate()
        self._watch.wait(5)

    def poll(self) -> Spread | None:
        """The next view of the watch (None: none within a few intervals)."""
        try:
            doc = self._views.get(timeout=10 * POLL)
        except queue.Empty:
            return None
        return Spread({g["name"]: g.get("active") for g in doc.get("gateways", [])},
                      doc.get("placement", {}).get("nodes", {}),
                      doc.get("placement", {}).get("pending", []))

    def vipmgr(self, *args: str) -> None:
        out = self.lab.exec("etcd", ["vipmgr", *args], timeout=30)
        if out.returncode != 0:
            raise LabError(f"vipmgr {' '.join(args)}: {(out.stderr or out.stdout).strip()}")

    def manifest(self, name: str, text: str) -> str:
        """``text`` as a file in the etcd node's workdir, for ``vipmgr apply/delete -f``."""
        path = self.lab.workdir("etcd") / name
        path.write_text(text)
        return str(path)

    def step(self, name: str, change: Callable[[], None], eligible: list[str],
             expect_gateways: int) -> StepResult:
        """Make ``change``, then poll until settled — no pending move in the agents' view
        and the spread within ⌈G/N⌉ over ``eligible`` (a restarted agent's share reads
        0 until its record is seen: the agents' view alone would settle too early);
        the figures of the step."""
        while not self._views.empty():  # views from before the change
            self._views.get_nowait()
        before = self.poll()
        t0 = time.monotonic()
        change()
        holders = dict(before.holders) if before else {}
        moves, served_at, settled_at, last = 0, None, None, before
        bound = math.ceil(expect_gateways / max(1, len(eligible)))

        def within(loads: dict[str, int]) -> bool:
            return all(loads.get(n, 0) <= bound for n in eligible) \
                and not any(loads.get(n, 0) for n in GATEWAYS if n not in eligible)

        while time.monotonic() - t0 < SETTLE_TIMEOUT + self.hold_down:
            spread = self.poll()
            if spread is None:
                continue
            moves += sum(1 for g, n in spread.holders.items()
                         if n and holders.get(g) and holders[g] != n)
            holders.update({g: n for g, n in spread.holders.items() if n})
            last = spread
            if served_at is None and len(spread.holders) == expect_gateways \
                    and all(n in eligible for n in spread.holders.values()):
                served_at = time.monotonic() - t0
            if spread.settled and len(spread.holders) == expect_gateways \
                    and within(spread.loads()):
                settled_at = time.monotonic() - t0
                break
        loads = last.loads() if last else {}
        result = StepResult(name, None if served_at is None else round(served_at, 3),
                            None if settled_at is None else round(settled_at, 2), moves,
                            {n: loads.get(n, 0) for n in GATEWAYS}, eligible, bound,
                            within(loads))
        self.results.append(result)
        self.say(result.line())
        return result


def seed_holder_first(bench: PlacementBench) -> str:
    """The node serving the seed gateway once settled (its placement's first choice)."""
    spread = bench.poll()
    node = spread.holders.get(GATEWAY_NAME) if spread else None
    if not node:
        raise LabError(f"{GATEWAY_NAME} has no active node")
    return node


def run_placement(gateways: int = 12, hold_down: float = 3.0, trials: int = 5, *,
                  name: str | None = None, topology: str | None = None, keep: bool = False,
                  say: Say = _quiet) -> dict:
    """Deploy, walk the steps, run the rebalance trials, tear down; the report."""
    if gateways < 4:
        raise LabError("need at least 4 gateways")
    if trials and not 0.5 <= hold_down <= MAX_STREAM - 2.0:
        raise LabError(f"the rebalance trials need a hold-down of 0.5-{MAX_STREAM - 2.0:g} s "
                       f"(the move falls into one stream of at most {MAX_STREAM:g} s)")
    topo = seed_network(name or "bench-placement", topology)
    say(f"lab {topo.name} up")
    lab = deploy(topo)
    closing: list[Callable[[], None]] = []
    try:
        impl = Vipmgr()
        impl.preflight()
        for node in AGENT_NODES:  # started here, with the hold-down; start() applies the seed
            cfg = lab.workdir(node) / "agent.yaml"
            cfg.write_text(agent_config(hold_down))
            lab.start(node, [*agent_cmd(node), "--config", str(cfg)])
        impl.start(lab, say)
        bench = PlacementBench(lab, hold_down, say)
        closing.append(bench.close)
        say(f"placement hold-down {hold_down:g} s, {gateways} gateways on {len(GATEWAYS)} "
            f"nodes: spread (active gateways per node) after each step")
        docs = gateway_manifests(gateways - 1).split("---\n")
        extra = bench.manifest("gateways.yaml", "---\n".join(docs))
        last = [bench.manifest(f"gateway-{i}.yaml", doc) for i, doc in enumerate(docs[-3:])]
        every = list(GATEWAYS)
        without = (lambda n: [g for g in GATEWAYS if g != n])
        bench.step(f"add {gateways - 1} in one batch",
                   lambda: bench.vipmgr("apply", "-f", extra), every, gateways)
        bench.step("delete 3", lambda: bench.vipmgr(
            "delete", *(a for f in last for a in ("-f", f))), every, gateways - 3)

        def one_by_one() -> None:
            for path in last:
                bench.vipmgr("apply", "-f", path)
                time.sleep(0.5)
        bench.step("add 3 one by one", one_by_one, every, gateways)
        bench.step("crash gw-a", lambda: lab.fault("gw-a", "crash"), without("gw-a"), gateways)
        bench.step("gw-a recovers", lambda: lab.fault("gw-a", "heal"), every, gateways)
        bench.step("freeze gw-b", lambda: lab.fault("gw-b", "freeze"), without("gw-b"),
                   gateways)
        bench.step("gw-b thaws", lambda: lab.fault("gw-b", "heal"), every, gateways)
        bench.step("cordon gw-c", lambda: bench.vipmgr("cordon", "gw-c"), without("gw-c"),
                   gateways)
        bench.step("uncordon gw-c", lambda: bench.vipmgr("uncordon", "gw-c"), every, gateways)
        bench.step("label off gw-b",
                   lambda: bench.vipmgr("label", "node", "gw-b", f"{EGRESS_LABEL}-"),
                   without("gw-b"), gateways)
        bench.step("label on gw-b",
                   lambda: bench.vipmgr("label", "node", "gw-b", f"{EGRESS_LABEL}="),
                   every, gateways)

        say(f"rebalance moves of {GATEWAY_NAME}, {trials} trials: cordon its node, "
            f"uncordon it 1 s into the stream, it takes its gateway back after the hold-down")
        # the uncordon comes 1 s in; then the node's record, the hold-down and the move:
        # as much of the longest stream as there is after the hold-down (≥ 1 s)
        failover = FailoverBench(lab, impl, duration=MAX_STREAM, say=say)
        moves = []
        for i in range(trials):
            home = seed_holder_first(bench)
            bench.vipmgr("cordon", home)
            failover.wait_stable()
            moves.append(failover.trial(i, "rebalance", target=home))
            if moves[-1].active_after != home:
                raise LabError(f"trial {i + 1}: {GATEWAY_NAME} did not move back to {home}")
            bench.step(f"settled after trial {i + 1}", lambda: None, every, gateways)
    finally:
        for close in closing:
            close()
        if keep:
            say(f"lab {lab.name} left up: vipmgr lab down --name {lab.name}")
        else:
            destroy(lab.name)
    return {"gateways": gateways, "nodes": len(GATEWAYS), "hold_down_s": hold_down,
            "steps": [r.__dict__ for r in bench.results],
            "rebalance": {**summarize(moves), "per_trial": [r.to_dict() for r in moves]}}
