"""One simulated world: nodes running the real election core, a heartbeat network,
an etcd model, kernels whose datapath state expires by itself, a scripted clock,
the faults of one ``Schedule``, and the invariant checks.

Everything is driven by one event heap in simulated real time; each node sees
its own drifting clock. Nothing here sleeps or touches the host.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from dataclasses import dataclass, field

from vipmgr.config.timers import Timers
from vipmgr.core.config import FIRST_CHOICE_WAIT
from vipmgr.core.election import Election, ElectionConfig
from vipmgr.core.heartbeat import SendHeartbeat, step
from vipmgr.core.messages import (
    OK, REFUSED, UNREACHABLE, Cordoned, EtcdResult, GrantLease, HealthChanged, Heartbeat,
    KeepAlive, MembersChanged, Note, Program, RevokeLease, RoleChanged, Shutdown,
    Start, SwitchoverRequested, Tick, Watch, WatchUpdate, Withdraw,
)
from vipmgr.agent.placement import NodePlacement
from vipmgr.core.placement import choices, rank_key, rendezvous_priority
from vipmgr.core.roles import DATAPATH_ROLES
from vipmgr.sim.etcd import EtcdModel
from vipmgr.sim.schedule import HB_FAULTS, Episode, Schedule
from vipmgr.store.authority import GatewayKeys, plan

HB_DELAY = (0.0001, 0.0005)    # LAN one-way
ETCD_DELAY = (0.0003, 0.0015)  # one way to the etcd leader and its apply
CALM = 1.0                     # seconds without any disturbance after which no role may change
SETTLED = 0.3                  # stop this long after every gateway has one stable active
ACTIVE_ROLES = DATAPATH_ROLES  # the serving roles (core.roles)
MEMBERSHIP_DELAY = (0.0005, 0.02)  # a label change reaches each node's store watch
# Workers steer to the node the authority key names: egress flows while that node's
# datapath is effective. During an etcd partition of the holder alone it may stop at
# most this long at a time (the handover's gap), never for the rest of the partition.
EGRESS_BOUND = 0.4
EGRESS_SAMPLE = 0.005
# Placement schedules (Schedule.placement): each agent runs the agent's own NodePlacement
# over the eligibility records; the lab's seconds scaled down to the simulator's.
HOLD_DOWN = 0.5        # placementHoldDown
RECORD_TTL = 0.3       # a dead or frozen agent's record goes with its status lease
MOVE_SPACING = 0.15    # between two moves into one node


@dataclass(frozen=True)
class Jitter:
    """A loaded host: the agent's event loop stalls now and then (every event for the
    node, timers included, waits until the stall ends) and etcd sometimes answers
    late. Bounded: a stall lasts at most ``stall_max``, a slow reply adds at most
    ``etcd_slow_max`` (below etcdTimeout, so it is late, not lost)."""

    stall_rate: float = 2.0         # stalls per node per second (Poisson)
    stall_max: float = 0.040
    etcd_slow_share: float = 0.05   # share of etcd replies and watch events that are slow
    etcd_slow_max: float = 0.040


JITTER = Jitter()


@dataclass(frozen=True)
class _Records:
    """The eligibility records as a node's watch shows them (None: only recompute, e.g.
    a holder changed or a gone node's hold-down ended), at store revision ``rev``. A
    watch delivers in revision order: a snapshot that arrives after a newer one (the
    simulated delays reorder them) is stale and not applied."""

    nodes: frozenset[str] | None
    rev: int = 0


@dataclass(frozen=True)
class _Membership:
    """One gateway's member set and one node's priority, as that node's store shows it."""

    version: int
    members: tuple[str, ...]
    priority: int


@dataclass
class SimNode:
    name: str
    index: int
    rate: float
    offset: float
    alive: bool = True
    frozen: bool = False
    incarnation: int = 0
    healthy: bool = True
    cordoned: bool = False
    elections: dict[str, Election] = field(default_factory=dict)
    wakes: dict[str, float] = field(default_factory=dict)
    backlog: list[tuple[str, Election | None, object]] = field(default_factory=list)
    known: dict[str, int] = field(default_factory=dict)  # gateway -> membership version seen
    stalled_until: float = 0.0
    stall_from: float = 0.0  # start of the current (possibly chained) stall
    stall_queue: list[tuple[object, tuple]] = field(default_factory=list)  # FIFO, see _stalled
    records_rev: int = -1  # the newest placement records applied (see _Records)

    def local(self, t: float) -> float:
        return self.offset + t * self.rate


@dataclass
class Outcome:
    seed: int
    violations: list[str] = field(default_factory=list)
    vrrp_dual: int = 0
    crash_failover: list[float] = field(default_factory=list)
    graceful: list[float] = field(default_factory=list)
    link_down: list[float] = field(default_factory=list)  # active's heartbeat link cut
    # start-up placement: gateways checked when the calm start ends, and how many of
    # them had their best-ranked node active
    placed: int = 0
    placed_best: int = 0
    # placement schedules: rebalance moves (graceful handovers toward the first choice)
    rebalance_moves: int = 0
    trace: list[str] = field(default_factory=list)
    sim_time: float = 0.0
    jitter: bool = False
    # while no fault was on (jitter only): ACTIVE -> FENCED, and standbys suspecting
    spurious_fences: int = 0
    spurious_challenges: int = 0
    datapath_gaps: int = 0
    # etcd partition of the holder alone: the longest egress gap of each, and the time
    # from the cut to the new holder's first effective datapath (when it handed over)
    etcd_cut_gap: list[float] = field(default_factory=list)
    etcd_cut_handover: list[float] = field(default_factory=list)
    # transition-table rows taken: (from role, cause, to role) -> count
    rows: Counter = field(default_factory=Counter)


@dataclass
class _EgressWatch:
    """What the workers see while the holder of ``gateway`` is cut from etcd."""

    gateway: str
    cut: str
    start: float
    end: float
    down_since: float | None = None
    worst: float = 0.0
    handed_over: float | None = None
    reported: bool = False


class World:
    def __init__(self, schedule: Schedule, timers: Timers | None = None,
                 unsafe: frozenset[str] = frozenset(), trace: bool = False):
        self.s = schedule
        self.timers = timers or Timers()
        self.unsafe = unsafe
        self.tracing = trace
        self.rng = random.Random(schedule.seed ^ 0x5EED)
        self.etcd = EtcdModel()
        self.out = Outcome(schedule.seed, jitter=schedule.jitter)
        self.heap: list = []
        self._seq = 0
        self.t = 0.0
        self.nodes = [SimNode(name, i, 1.0 + schedule.drift[i], schedule.offsets[i])
                      for i, name in enumerate(schedule.nodes)]
        self.by_name = {n.name: n for n in self.nodes}
        self.keys = {gw: GatewayKeys("/vipmgr", gw) for gw in schedule.gateways}
        # kernel[gw][node] = real time the programmed datapath expires (absent: withdrawn)
        self.kernel: dict[str, dict[str, float]] = {gw: {} for gw in schedule.gateways}
        # (node, gw) -> (watch op id, the election that asked)
        self.watches: dict[tuple[str, str], tuple[int, Election]] = {}
        self.blocked: dict[tuple[str, str], int] = {}
        self.loss = self.dup = self.delay = 0.0
        self._hb_faults: list[Episode] = []
        self.etcd_cut: dict[str, int] = {}
        self.etcd_down = 0
        self._expiry_token = 0
        self.double_fault = False
        self.last_disturbance = 0.0
        self.active_faults = 0
        self.last_role_change = 0.0
        self.measure: tuple[str, str, str, float] | None = None  # kind, gw, old node, t
        self._reported: set[str] = set()
        self.timeout = self.timers.etcd_timeout
        self.jitter = JITTER if schedule.jitter else None
        self.members = {gw: tuple(schedule.nodes) for gw in schedule.gateways}
        self.member_version = {gw: 1 for gw in schedule.gateways}
        self.priority_override: dict[tuple[str, str], int] = {}
        self.base_priority = {(gw, n): rendezvous_priority(gw, n)
                              for gw in schedule.gateways for n in schedule.nodes}
        self.unlabelled: dict[tuple[str, str], int] = {}
        # placement schedules: each agent's view, the records in etcd, the holders
        self.views: dict[str, NodePlacement] = {}
        self.records: set[str] = set()
        self.records_rev = 0  # bumped on every record change
        self._holders: dict[str, str | None] = {}
        self._place_wakes: dict[str, tuple[int, float]] = {}

    # --- event loop ------------------------------------------------------------------

    def at(self, t: float, fn, *args) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (t, self._seq, fn, args))

    def run(self) -> Outcome:
        s = self.s
        for node in self.nodes:
            self.at(self.rng.uniform(0, s.start_spread), self._start_node, node)
            if self.jitter:
                self.at(self.rng.expovariate(self.jitter.stall_rate), self._stall, node)
        for ep in s.episodes:
            self.at(ep.start, self._episode, ep, True)
            if ep.kind != "leader_change":
                self.at(ep.start + ep.duration, self._episode, ep, False)
        heal = s.faults_end
        self.at(heal + self.timers.liveness_bound, self._liveness_deadline)
        if s.placement:
            self.at(heal + self.placement_bound(), self._placement_deadline)
        heap = self.heap
        while heap:
            t, _, fn, args = heapq.heappop(heap)
            self.t = t
            if fn(*args) is StopIteration:
                break
            if t > heal and t - self.last_role_change > SETTLED and self._settled():
                break
        self.out.sim_time = self.t
        return self.out

    # --- nodes -----------------------------------------------------------------------

    def _start_node(self, node: SimNode) -> None:
        node.alive, node.frozen = True, False
        node.incarnation += 1
        node.elections = {}
        node.wakes = {}
        node.backlog = []
        node.records_rev = -1
        self._log(node.name, "", f"process starts (incarnation {node.incarnation})")
        if self.s.placement:
            view = self.views[node.name] = NodePlacement(node.name, HOLD_DOWN, MOVE_SPACING)
            view.update(dict(self.members), {}, node.local(self.t))
            self._publish_record(node)
            self.at(self.t + self._etcd_delay(), self._deliver, node, "", None,
                    _Records(frozenset(self.records), self.records_rev))  # the first read
        for gw in self.s.gateways:
            self._join(node, gw, self._membership(gw, node))

    def _membership(self, gw: str, node: SimNode) -> _Membership:
        return _Membership(self.member_version[gw], self.members[gw],
                           self.priority(gw, node.name))

    def priority(self, gw: str, name: str) -> int:
        return self.priority_override.get((gw, name), self.base_priority[(gw, name)])

    def _join(self, node: SimNode, gw: str, m: _Membership) -> None:
        """What the agent does when its node is selected: a new election, started."""
        node.known[gw] = m.version
        if node.name not in m.members:
            return
        placed = self._placed(node, gw)
        cfg = ElectionConfig(gateway=gw, node=node.name, members=m.members,
                             priority=placed.priority if placed else m.priority,
                             timers=self.timers, on_etcd_loss=self.s.policy,
                             preempt=self.s.preempt, preempt_delay=self.s.preempt_delay,
                             rebalance=self.s.placement and "rebalance" not in self.unsafe,
                             hold_down=HOLD_DOWN,
                             move_delay=placed.move_delay if placed else 0.0,
                             first_choice=placed.first_choice if placed else None,
                             unsafe=self.unsafe - {"rebalance"})  # that one is ours
        node.elections[gw] = Election(cfg)
        # Eligibility first, so even the advert sent at Start tells the truth (peers
        # rank only eligible nodes).
        if not node.healthy:
            self._handle(node, gw, HealthChanged(False))
        if node.cordoned:
            self._handle(node, gw, Cordoned(True))
        self._handle(node, gw, Start())

    def _relabel(self, node: SimNode, gw: str, m: _Membership) -> None:
        """A membership change reaches this node's agent: leave (graceful), join, or
        tell the running election (MembersChanged) without any handover."""
        if m.version <= node.known.get(gw, 0):
            return
        el = node.elections.get(gw)
        running = el is not None and not el.stopping
        member = node.name in m.members
        self._log(node.name, gw, f"sees members {','.join(m.members)} priority {m.priority}")
        if running and member:
            node.known[gw] = m.version
            placed = self._placed(node, gw)
            self._handle(node, gw, MembersChanged(m.members, m.priority) if placed is None
                         else MembersChanged(m.members, placed.priority, placed.move_delay,
                                             placed.first_choice))
        elif running:
            node.known[gw] = m.version
            self._handle(node, gw, Shutdown())
        else:
            self._join(node, gw, m)

    # --- placement (Schedule.placement) --------------------------------------------------

    def _placed(self, node: SimNode, gw: str):
        """What the node's placement gives its member of ``gw`` now (None: no placement)."""
        view = self.views.get(node.name) if self.s.placement else None
        if view is None:
            return None
        view.update(dict(self.members), {}, node.local(self.t))
        return view.member(gw, {}, self._current_holders())

    def _current_holders(self) -> dict[str, str | None]:
        return {gw: self.etcd.view(self.keys[gw]).holder for gw in self.s.gateways}

    def _place(self, node: SimNode, event: _Records) -> None:
        """The agent's _placement_apply: new records (or a holder change, or a hold-down
        ending) reach it; every member gets its priority and place in the queue."""
        view = self.views.get(node.name)
        if view is None:
            return
        now = node.local(self.t)
        if event.nodes is not None and event.rev > node.records_rev:
            node.records_rev = event.rev
            view.records({n: b"{}" for n in event.nodes}, now)
        view.update(dict(self.members), {}, now)
        holders = self._current_holders()
        for gw, el in list(node.elections.items()):
            if el.stopping:
                continue
            placed, cfg = view.member(gw, {}, holders), el.cfg
            if (placed.priority, placed.move_delay, placed.first_choice) \
                    != (cfg.priority, cfg.move_delay, cfg.first_choice):
                self._handle(node, gw, MembersChanged(cfg.members, placed.priority,
                                                      placed.move_delay, placed.first_choice))
        at = view.next_change()
        if at is not None:
            when = max(self.t, (at - node.offset) / node.rate) + 1e-6
            if self._place_wakes.get(node.name) != (node.incarnation, when):
                self._place_wakes[node.name] = (node.incarnation, when)
                self.at(when, self._deliver, node, "", None, _Records(None))

    def _eligible(self, node: SimNode) -> bool:
        return node.alive and not node.frozen and node.healthy and not node.cordoned

    def _publish_record(self, node: SimNode) -> None:
        """The agent writes (or deletes) its eligibility record."""
        eligible = self._eligible(node)
        view = self.views.get(node.name)
        if view is not None:
            view.set_eligible(eligible, node.local(self.t))
        self._set_record(node.name, eligible)

    def _set_record(self, name: str, present: bool) -> None:
        if (name in self.records) == present:
            return
        if present:
            self.records.add(name)
        else:
            self.records.discard(name)
        self.records_rev += 1
        snapshot = frozenset(self.records)
        for dst in self.nodes:
            if dst.alive:
                self.at(self.t + self._etcd_delay(), self._deliver, dst, "", None,
                        _Records(snapshot, self.records_rev))

    def _record_lapses(self, node: SimNode) -> None:
        """A crashed or frozen agent stops refreshing its status lease: the record goes
        RECORD_TTL later unless the agent is back by then."""
        if self.s.placement:
            self.at(self.t + RECORD_TTL, self._record_lapse, node, node.incarnation)

    def _record_lapse(self, node: SimNode, incarnation: int) -> None:
        if node.incarnation == incarnation and (not node.alive or node.frozen):
            self._set_record(node.name, False)

    def _holders_changed(self) -> None:
        holders = self._current_holders()
        if holders == self._holders:
            return
        self._holders = holders
        for dst in self.nodes:
            if dst.alive:
                self.at(self.t + self._etcd_delay(), self._deliver, dst, "", None,
                        _Records(None))

    def placement_bound(self) -> float:
        """After every fault heals, each gateway is on its first choice within this: the
        records of restarted agents, the hold-down, one move after another into a node
        (each a graceful handover, or a challenge back-off when one was answered)."""
        t = self.timers
        return t.liveness_bound + RECORD_TTL + HOLD_DOWN + FIRST_CHOICE_WAIT \
            + len(self.s.gateways) * (MOVE_SPACING + 0.05) + 5 * (t.suspect_time
                                                                 + t.challenge_window)

    def first_choices(self) -> dict[str, str]:
        """Each gateway's first choice over the records in etcd (the placement's truth)."""
        picked = choices(self.members, {}, frozenset(self.records))
        return {gw: c[0] for gw, c in picked.items() if c}

    def _placement_deadline(self):
        first = self.first_choices()
        wrong = sorted(f"{gw} on {self.active_of(gw)}, first choice {node}"
                       for gw, node in first.items() if self.active_of(gw) != node)
        if wrong:
            self._violation(f"placement: {len(wrong)} gateways off their first choice "
                            f"{self.placement_bound():.2f} s after all faults healed: "
                            + "; ".join(wrong))
        present = frozenset(self.records)
        if present and all(set(m) == present for m in self.members.values()):
            bound = -(-len(self.s.gateways) // len(present))
            loads = Counter(self.active_of(gw) for gw in self.s.gateways)
            over = {n: c for n, c in loads.items() if n is not None and c > bound}
            if over:
                self._violation(f"placement: {over} active for more than "
                                f"ceil(G/N) = {bound} gateways")
        return StopIteration

    def _crash(self, node: SimNode) -> None:
        node.alive = False
        node.incarnation += 1
        node.elections = {}
        node.wakes = {}
        for key in [k for k in self.watches if k[0] == node.name]:
            del self.watches[key]
        self._log(node.name, "", "process killed (kernel state stays until it expires)")
        self._record_lapses(node)

    def _handle(self, node: SimNode, gw: str, event) -> None:
        """The event reaches ``gw``'s election through the node's heartbeat step (the
        agent's path): if it advertises, all the node's elections do, in one packet."""
        if gw not in node.elections:
            return
        now = node.local(self.t)
        done = step(node.elections, gw, event, now)
        for name, actions in done.actions.items():
            el = node.elections.get(name)
            if el is None:
                continue
            if actions:
                self._apply(node, name, el, actions, now)
            self._reschedule(node, name, el)
        if done.heartbeat is not None:
            self._send(node, done.heartbeat)

    def _reschedule(self, node: SimNode, gw: str, el: Election) -> None:
        deadline = el.next_deadline
        if deadline is None:
            node.wakes.pop(gw, None)
            return
        when = (deadline - node.offset) / node.rate
        if when <= self.t:
            when = self.t + 1e-7
        if node.wakes.get(gw) != when:
            node.wakes[gw] = when
            self.at(when, self._wake, node, gw, node.incarnation, when)

    def _stalled(self, node: SimNode, fn, *args) -> bool:
        """The node's event loop is busy: whatever reaches it waits, in order (one FIFO
        per node, so a stall extended by the next keeps the order of arrival; re-queuing
        each event on the heap did not: a timer could overtake earlier heartbeats)."""
        if node.stalled_until <= self.t and not node.stall_queue:
            return False
        if not node.stall_queue:
            self.at(node.stalled_until, self._drain, node)
        node.stall_queue.append((fn, args))
        return True

    def _drain(self, node: SimNode) -> None:
        if node.stalled_until > self.t:  # the stall was extended meanwhile
            self.at(node.stalled_until, self._drain, node)
            return
        queue, node.stall_queue = node.stall_queue, []
        # What arrived (heartbeats, etcd replies) before the timers that fell due, each in
        # order: asyncio's loop, once free, runs the ready I/O callbacks of an iteration
        # before the timers due in it, so an advert that came during a stall is heard
        # before the suspicion timer that expired in the same stall fires.
        for fn, args in sorted(queue, key=lambda item: item[0] == self._wake):
            fn(node, *args)

    def _stall(self, node: SimNode) -> None:
        j = self.jitter
        length = self.rng.uniform(0, j.stall_max)
        if node.stalled_until <= self.t:
            node.stall_from = self.t
        node.stalled_until = max(node.stalled_until, self.t + length)
        if self.tracing and node.alive:
            self._log(node.name, "", f"event loop stalls for {length * 1e3:.1f} ms")
        t = self.timers
        # Stalls that overlap into one this long are a pause the peers may rightly
        # suspect (like a short freeze): a disturbance, not calm. So are two nodes'
        # overlapping stalls as long together: the active's stall delays its advert, the
        # observer's delays hearing it, and the observer sees the sum as silence.
        long = t.suspect_time - t.advert_interval
        if node.alive:
            for other in self.nodes:  # the node itself included: its own chained stalls
                if other.alive and other.stalled_until > self.t:
                    start = min(node.stall_from, other.stall_from)
                    end = max(node.stalled_until, other.stalled_until)
                    if end - start >= long:
                        self.last_disturbance = max(self.last_disturbance, end)
        self.at(self.t + self.rng.expovariate(j.stall_rate), self._stall, node)

    def _wake(self, node: SimNode, gw: str, inc: int, when: float) -> None:
        if node.incarnation != inc or not node.alive or node.frozen \
                or node.wakes.get(gw) != when or self._stalled(node, self._wake, gw, inc, when):
            return
        del node.wakes[gw]
        self._handle(node, gw, Tick())

    def _deliver(self, node: SimNode, gw: str, el: Election | None, event) -> None:
        """An etcd result or watch update (for election ``el``; None: the agent's own
        store watch) reaches the node (queued while frozen)."""
        if not node.alive or (el is not None and node.elections.get(gw) is not el) \
                or self._stalled(node, self._deliver, gw, el, event):
            return
        if node.frozen:
            node.backlog.append((gw, el, event))
        elif isinstance(event, _Membership):
            self._relabel(node, gw, event)
        elif isinstance(event, _Records):
            self._place(node, event)
        else:
            self._handle(node, gw, event)

    def _heartbeat(self, node: SimNode, inc: int, packet: SendHeartbeat) -> None:
        """One packet reaches the node: each of its adverts to that gateway's election,
        at the same instant (what the agent's receive loop does with one datagram)."""
        if node.incarnation == inc and node.alive and not node.frozen \
                and not self._stalled(node, self._heartbeat, inc, packet):
            for advert in packet.adverts:
                self._handle(node, advert.gateway, Heartbeat(advert))

    # --- actions ---------------------------------------------------------------------

    def _apply(self, node: SimNode, gw: str, el: Election, actions: list, now: float) -> None:
        for a in actions:
            tp = type(a)
            if tp is Program:
                self._program(node, gw, self.t + (a.until - now) / node.rate)
            elif tp is Withdraw:
                if self.kernel[gw].pop(node.name, None) is not None:
                    self._log(node.name, gw, "datapath withdrawn")
            elif tp is RoleChanged:
                self._role_changed(node, gw, a)
            elif tp is Note:
                self._log(node.name, gw, f"note {a.kind}: {a.detail}")
            else:
                self._etcd_send(node, gw, el, a)

    def _send(self, node: SimNode, packet: SendHeartbeat) -> None:
        """One packet for all the node's gateways: lost, delayed or duplicated as one."""
        rng, t, me = self.rng, self.t, node.name
        for dst in self.nodes:
            if dst is node or not dst.alive or (me, dst.name) in self.blocked:
                continue
            if self.loss and rng.random() < self.loss:
                continue
            delay = rng.uniform(*HB_DELAY)
            if self.delay:
                delay += rng.uniform(0, self.delay)
            self.at(t + delay, self._heartbeat, dst, dst.incarnation, packet)
            if self.dup and rng.random() < self.dup:
                self.at(t + delay + rng.uniform(0, 0.01), self._heartbeat, dst,
                        dst.incarnation, packet)

    def _program(self, node: SimNode, gw: str, expires: float) -> None:
        kernel, t = self.kernel[gw], self.t
        before = kernel.get(node.name)
        fresh = before is None or before <= t
        if before is not None and before < t and not self.active_faults \
                and self.measure is None:
            self.out.datapath_gaps += 1  # expired under a node that never withdrew: a blip
        kernel[node.name] = expires
        if not fresh:
            return
        self._log(node.name, gw, f"datapath programmed (expires in {(expires - t) * 1e3:.1f} ms)")
        others = [n for n, exp in kernel.items() if n != node.name and exp > t]
        if others:
            if self.s.policy == "vrrp" and self.double_fault:
                self.out.vrrp_dual += 1
                self._log(node.name, gw, f"dual active with {others} (vrrp double fault)")
            else:
                self._violation(f"dual-active {gw}: {node.name} programs while {others} "
                                f"still effective")
        m = self.measure
        if m is not None and m[1] == gw and node.name != m[2]:
            {"crash_active": self.out.crash_failover, "isolate_active": self.out.link_down} \
                .get(m[0], self.out.graceful).append(t - m[3])
            self.measure = None

    def _role_changed(self, node: SimNode, gw: str, a: RoleChanged) -> None:
        self._log(node.name, gw, f"{a.old} -> {a.new} ({a.cause}{': ' if a.detail else ''}"
                                 f"{a.detail})")
        self.last_role_change = self.t
        self.out.rows[(a.old, a.cause, a.new)] += 1
        if a.new == "challenging" and a.detail.startswith("rebalance"):
            self.out.rebalance_moves += 1
        # Spurious: with no fault on and not within CALM of a disturbance (stalls that
        # chain into a pause the peers may rightly suspect are one).
        if not self.active_faults and self.measure is None \
                and self.t - self.last_disturbance > CALM:
            if (a.old, a.new) == ("active", "fenced"):
                self.out.spurious_fences += 1
            elif a.new == "challenging":
                self.out.spurious_challenges += 1
        # With preempt on, a better node back from a fault takes over after preemptDelay,
        # or after one challenge back-off if its first (suspicion) challenge was answered.
        t = self.timers
        calm = CALM + (self.s.preempt_delay + 5 * (t.suspect_time + t.challenge_window)
                       if self.s.preempt else 0.0)
        if self.s.placement:  # rebalance: a recovered node takes its gateways back
            calm += self.placement_bound() - t.liveness_bound
        if not self.active_faults and self.t - self.last_disturbance > calm:
            self._violation(f"role change without a cause: {node.name}/{gw} {a.old} -> {a.new} "
                            f"({a.cause}) {self.t - self.last_disturbance:.2f} s after the last "
                            "disturbance")

    def _violation(self, text: str) -> None:
        key = text.split(":")[0]
        if key not in self._reported:
            self._reported.add(key)
            self.out.violations.append(f"t={self.t * 1e3:.1f}ms {text}")
        self._log("", "", f"VIOLATION {text}")

    # --- etcd ------------------------------------------------------------------------

    def _reachable(self, node: SimNode) -> bool:
        return not self.etcd_down and node.name not in self.etcd_cut

    def _etcd_delay(self) -> float:
        """One way to etcd and back out of it; sometimes slow on a loaded host."""
        delay = self.rng.uniform(*ETCD_DELAY)
        j = self.jitter
        if j is not None and self.rng.random() < j.etcd_slow_share:
            delay += self.rng.uniform(0, j.etcd_slow_max)
        return delay

    def _etcd_send(self, node: SimNode, gw: str, el: Election, op) -> None:
        t = self.t
        if self._reachable(node):
            self.at(t + self.rng.uniform(*ETCD_DELAY), self._etcd_apply, node, gw, el, op, t)
        else:
            self._unreachable(node, gw, el, op, t)

    def _unreachable(self, node: SimNode, gw: str, el: Election, op, issued: float) -> None:
        self.at(max(self.t, issued + self.timeout), self._deliver, node, gw, el,
                EtcdResult(op.op_id, UNREACHABLE))
        if self.tracing:
            self._log(node.name, gw, f"etcd {type(op).__name__} -> unreachable")

    def _etcd_apply(self, node: SimNode, gw: str, el: Election, op, issued: float) -> None:
        if not self._reachable(node):
            self._unreachable(node, gw, el, op, issued)
            return
        etcd, t, keys = self.etcd, self.t, self.keys[gw]
        tp = type(op)
        before = etcd.revision
        if tp is GrantLease:
            result = EtcdResult(op.op_id, OK, etcd.revision, lease=etcd.grant(op.ttl, t))
        elif tp is KeepAlive:
            result = EtcdResult(op.op_id, OK if etcd.keepalive(op.lease, t) else REFUSED)
        elif tp is RevokeLease:
            result = EtcdResult(op.op_id, OK if etcd.revoke(op.lease) else REFUSED)
        elif tp is Watch:
            self.watches[(node.name, gw)] = (op.op_id, el)
            self._push_view(node, gw, el, etcd.view(keys))
            return
        else:
            ok, rev, view = etcd.txn(plan(op, node.name, keys), keys)
            result = EtcdResult(op.op_id, OK if ok else REFUSED, rev, view)
        if self.tracing:
            self._log(node.name, gw, f"etcd {type(op).__name__} -> {result.outcome}"
                                     f"{' rev ' + str(result.revision) if result.revision else ''}")
        done = t + self._etcd_delay()
        if done > issued + self.timeout:
            self._unreachable(node, gw, el, op, issued)
        else:
            self.at(done, self._etcd_reply, node, gw, el, op, issued, result)
        if etcd.revision != before:
            self._notify()
        self._schedule_expiry()

    def _etcd_reply(self, node: SimNode, gw: str, el: Election, op, issued: float,
                    result: EtcdResult) -> None:
        if self._reachable(node):
            self._deliver(node, gw, el, result)
        else:
            self._unreachable(node, gw, el, op, issued)

    def _push_view(self, node: SimNode, gw: str, el: Election, view) -> None:
        self.at(self.t + self._etcd_delay(), self._deliver, node, gw, el, WatchUpdate(view))

    def _notify(self) -> None:
        for (name, gw), (_, el) in list(self.watches.items()):
            self._push_view(self.by_name[name], gw, el, self.etcd.view(self.keys[gw]))
        if self.s.placement:
            self._holders_changed()

    def _break_watches(self, names: list[str]) -> None:
        for key in [k for k in self.watches if k[0] in names]:
            op_id, el = self.watches.pop(key)
            self.at(self.t + self.timeout, self._deliver, self.by_name[key[0]], key[1], el,
                    EtcdResult(op_id, UNREACHABLE))

    def _schedule_expiry(self) -> None:
        nxt = self.etcd.next_expiry()
        self._expiry_token += 1
        if nxt is not None and not self.etcd_down:
            self.at(max(nxt, self.t), self._expire, self._expiry_token)

    def _expire(self, token: int) -> None:
        if token != self._expiry_token or self.etcd_down:
            return
        if self.etcd.expire(self.t):
            self._log("", "", "etcd: lease expired, its keys deleted")
            self._notify()
        self._schedule_expiry()

    # --- faults ----------------------------------------------------------------------

    def _episode(self, ep: Episode, starting: bool) -> None:
        self.last_disturbance = self.t
        if ep.kind != "leader_change":
            self.active_faults += 1 if starting else -1
        names = self.s.nodes
        node = self.nodes[ep.node]
        if starting:
            self._log("", "", "FAULT " + ep.describe(names, self.s.gateways))
        else:
            self._log("", "", "HEAL  " + ep.describe(names, self.s.gateways))
        kind = ep.kind
        if kind == "crash":
            if starting:
                self._crash(node)
            elif not node.alive:
                self._start_node(node)
        elif kind == "freeze":
            if starting and node.alive:
                node.frozen = True
                self._record_lapses(node)
            elif not starting and node.frozen:
                self._resume(node)
        elif kind == "hb_isolate":
            self._isolate(node, starting)
        elif kind in ("hb_split", "hb_oneway"):
            if kind == "hb_split":
                left, right = names[:ep.other], names[ep.other:]
                links = [(a, b) for a in left for b in right] + \
                        [(b, a) for a in left for b in right]
            else:
                links = [(node.name, names[ep.other])]
            self._block(links, starting)
        elif kind in ("hb_loss", "hb_dup", "hb_delay"):
            if starting:
                self._hb_faults.append(ep)
            else:
                self._hb_faults.remove(ep)
            active = self._hb_faults
            self.loss = max((e.amount for e in active if e.kind == "hb_loss"), default=0.0)
            self.dup = max((e.amount for e in active if e.kind == "hb_dup"), default=0.0)
            self.delay = max((e.amount for e in active if e.kind == "hb_delay"), default=0.0)
        elif kind == "etcd_cut":
            count = self.etcd_cut.get(node.name, 0) + (1 if starting else -1)
            if count:
                self.etcd_cut[node.name] = count
            else:
                del self.etcd_cut[node.name]
            if starting:
                self._break_watches([node.name])
                if self._alone(ep):
                    self._watch_egress(ep, node)
        elif kind == "etcd_outage":
            self.etcd_down += 1 if starting else -1
            if starting:
                self._break_watches(list(names))
            elif not self.etcd_down:
                self.etcd.leader_change(self.t)
            self._schedule_expiry()
        elif kind == "leader_change":
            self.etcd.leader_change(self.t)
            self._schedule_expiry()
        elif kind == "health_flap":
            self._set_health(node, not starting)
        elif kind == "cordon":
            self._set_cordon(node, starting)
        elif kind in ("unlabel", "reprioritize"):
            self._change_membership(ep, node, starting)
        else:
            self._measured(ep, starting)
        self._track_double_fault()

    def _alone(self, ep: Episode) -> bool:
        """No other fault (or measured handover) overlaps this episode."""
        end = ep.start + ep.duration
        return not any(o is not ep and o.start <= end and ep.start <= o.start + o.duration
                       for o in self.s.episodes)

    def _watch_egress(self, ep: Episode, node: SimNode) -> None:
        for gw in self.s.gateways:
            if self.etcd.view(self.keys[gw]).holder == node.name \
                    and self.kernel[gw].get(node.name, 0.0) > self.t:
                self._sample_egress(_EgressWatch(gw, node.name, self.t, ep.start + ep.duration))

    def _sample_egress(self, w: _EgressWatch) -> None:
        """Egress works while the node the authority key names is effective."""
        t = self.t
        holder = self.etcd.view(self.keys[w.gateway]).holder
        served = holder is not None and self.kernel[w.gateway].get(holder, 0.0) > t
        if served:
            if w.down_since is not None:
                w.worst = max(w.worst, t - w.down_since)
            w.down_since = None
            if holder != w.cut and w.handed_over is None:
                w.handed_over = t - w.start
        elif w.down_since is None:
            w.down_since = t
        gap = 0.0 if w.down_since is None else t - w.down_since
        if gap > EGRESS_BOUND and not w.reported:
            w.reported = True
            self._violation(f"egress down {w.gateway}: no effective holder in etcd for "
                            f"{gap * 1e3:.0f} ms during the etcd partition of {w.cut} (the "
                            "holder) alone")
        if t + EGRESS_SAMPLE < w.end:
            self.at(t + EGRESS_SAMPLE, self._sample_egress, w)
            return
        self.out.etcd_cut_gap.append(max(w.worst, gap))
        if w.handed_over is not None:
            self.out.etcd_cut_handover.append(w.handed_over)

    def _isolate(self, node: SimNode, starting: bool) -> None:
        """The node's heartbeat interface loses carrier: nothing in, nothing out."""
        links = [(node.name, n) for n in self.s.nodes if n != node.name]
        self._block(links + [(b, a) for a, b in links], starting)

    def _block(self, links: list[tuple[str, str]], starting: bool) -> None:
        for link in links:
            count = self.blocked.get(link, 0) + (1 if starting else -1)
            if count:
                self.blocked[link] = count
            else:
                self.blocked.pop(link, None)

    def _track_double_fault(self) -> None:
        # A frozen process neither sends nor hears heartbeats: to its peers it is cut off.
        hb = bool(self.blocked) or any(e.kind in HB_FAULTS for e in self._hb_faults) \
            or any(n.frozen for n in self.nodes)
        etcd = bool(self.etcd_cut) or self.etcd_down > 0
        self.double_fault |= hb and etcd

    def _resume(self, node: SimNode) -> None:
        node.frozen = False
        if self.s.placement:
            self._publish_record(node)
        backlog, node.backlog = node.backlog, []
        self._log(node.name, "", f"resumes ({len(backlog)} queued etcd messages)")
        for gw, el, event in backlog:
            self._deliver(node, gw, el, event)
        for gw in list(node.elections):
            # What changed while frozen reaches the agent as it resumes (the real one
            # re-evaluates its eligibility): a cordon lifted meanwhile must not stick.
            el = node.elections[gw]
            if el.healthy != node.healthy:
                self._handle(node, gw, HealthChanged(node.healthy))
            if gw in node.elections and el.cordoned != node.cordoned:
                self._handle(node, gw, Cordoned(node.cordoned))
            if gw in node.elections:
                self._handle(node, gw, Tick())

    def _change_membership(self, ep: Episode, node: SimNode, starting: bool) -> None:
        """Label or priority edit in the store; each agent's watch sees it a little later."""
        gw = self.s.gateways[ep.gateway]
        if ep.kind == "unlabel":
            count = self.unlabelled.get((gw, node.name), 0) + (1 if starting else -1)
            self.unlabelled[(gw, node.name)] = count
            self.members[gw] = tuple(n for n in self.s.nodes
                                     if not self.unlabelled.get((gw, n), 0))
        elif starting:
            self.priority_override[(gw, node.name)] = int(ep.amount)
        else:
            self.priority_override.pop((gw, node.name), None)
        self.member_version[gw] += 1
        for dst in self.nodes:
            self.at(self.t + self.rng.uniform(*MEMBERSHIP_DELAY), self._deliver, dst, gw, None,
                    self._membership(gw, dst))

    def _set_health(self, node: SimNode, ok: bool) -> None:
        node.healthy = ok
        if self.s.placement and node.alive and not node.frozen:
            self._publish_record(node)
        for gw in list(node.elections):
            if not node.frozen:
                self._handle(node, gw, HealthChanged(ok))

    def _set_cordon(self, node: SimNode, on: bool) -> None:
        node.cordoned = on
        if self.s.placement and node.alive and not node.frozen:
            self._publish_record(node)
        for gw in list(node.elections):
            if not node.frozen:
                self._handle(node, gw, Cordoned(on))

    def crash_standbys(self, count: int) -> None:
        """Soak: kill ``count`` nodes that are active for no gateway (they stay members)."""
        busy = {n for kernel in self.kernel.values() for n, exp in kernel.items() if exp > self.t}
        for node in [n for n in self.nodes if n.name not in busy and n.alive][:count]:
            self._crash(node)
        self.last_disturbance = self.t

    def active_of(self, gw: str) -> str | None:
        live = [n for n, exp in self.kernel[gw].items() if exp > self.t]
        return live[0] if len(live) == 1 else None

    def _measured(self, ep: Episode, starting: bool) -> None:
        gw = self.s.gateways[ep.gateway]
        if starting:
            self.check_placement()
            name = self.active_of(gw)
            if name is None:
                self._violation(f"no single active for {gw} after the initial election")
                return
            node = self.by_name[name]
            self._measured_node = node
            self.measure = (ep.kind, gw, name, self.t)
            if ep.kind == "crash_active":
                self._crash(node)
            elif ep.kind == "switchover":
                self._handle(node, gw, SwitchoverRequested(None))
            elif ep.kind == "shutdown_active":
                for g in list(node.elections):
                    self._handle(node, g, Shutdown())
            elif ep.kind == "cordon_active":
                self._set_cordon(node, True)
            elif ep.kind == "health_active":
                self._set_health(node, False)
            elif ep.kind == "isolate_active":
                self._isolate(node, True)
            return
        node = getattr(self, "_measured_node", None)
        if self.measure is not None:
            self._violation(f"no takeover of {gw} within {ep.duration * 1e3:.0f} ms of "
                            f"{ep.kind}")
            self.measure = None
        if node is None:
            return
        if ep.kind in ("crash_active", "shutdown_active"):
            if node.alive:
                self._crash(node)
            self._start_node(node)
        elif ep.kind == "cordon_active":
            self._set_cordon(node, False)
        elif ep.kind == "health_active":
            self._set_health(node, True)
        elif ep.kind == "isolate_active":
            self._isolate(node, False)

    def check_placement(self) -> None:
        """After the calm start every node is alive, healthy and a member: the active of
        each gateway should be its best-ranked node (placement), not the first to start."""
        first = self.first_choices() if self.s.placement else {}
        for gw in self.s.gateways:
            self.out.placed += 1
            self.out.placed_best += self.active_of(gw) == (first.get(gw) or min(
                self.s.nodes, key=lambda n: rank_key(self.priority(gw, n), n)))

    # --- checks ----------------------------------------------------------------------

    def _settled(self) -> bool:
        t = self.t
        for gw, kernel in self.kernel.items():
            if sum(1 for exp in kernel.values() if exp > t) != 1:
                return False
        if self.s.placement:  # and every gateway on its first choice
            return all(self.active_of(gw) == node for gw, node in self.first_choices().items())
        return True

    def _liveness_deadline(self):
        for gw, kernel in self.kernel.items():
            live = [n for n, exp in kernel.items() if exp > self.t]
            if len(live) != 1:
                self._violation(f"liveness {gw}: {len(live)} actives "
                                f"{self.timers.liveness_bound:.2f} s after all faults healed")
        return None if self.s.placement else StopIteration  # placement: its own deadline

    def _log(self, node: str, gw: str, text: str) -> None:
        if self.tracing:
            self.out.trace.append(f"{self.t * 1e3:10.3f} ms  {node:>4} {gw:<5} {text}")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[rank]
