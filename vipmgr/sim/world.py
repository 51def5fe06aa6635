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
from dataclasses import dataclass, field

from vipmgr.config.timers import Timers
from vipmgr.core.election import Election, ElectionConfig
from vipmgr.core.messages import (
    OK, REFUSED, UNREACHABLE, Cordoned, EtcdResult, GrantLease, HealthChanged, Heartbeat,
    KeepAlive, MembersChanged, Note, Program, RevokeLease, RoleChanged, SendAdvert, Shutdown,
    Start, SwitchoverRequested, Tick, Watch, WatchUpdate, Withdraw,
)
from vipmgr.core.placement import balanced_priority, balanced_tops, rank_key, \
    rendezvous_priority
from vipmgr.sim.etcd import EtcdModel
from vipmgr.sim.schedule import HB_FAULTS, Episode, Schedule
from vipmgr.store.authority import GatewayKeys, plan

HB_DELAY = (0.0001, 0.0005)    # LAN one-way
ETCD_DELAY = (0.0003, 0.0015)  # one way to the etcd leader and its apply
CALM = 1.0                     # seconds without any disturbance after which no role may change
SETTLED = 0.3                  # stop this long after every gateway has one stable active
ACTIVE_ROLES = ("active", "vrrp-active")
MEMBERSHIP_DELAY = (0.0005, 0.02)  # a label change reaches each node's store watch


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
    trace: list[str] = field(default_factory=list)
    sim_time: float = 0.0
    jitter: bool = False
    # while no fault was on (jitter only): ACTIVE -> FENCED, and standbys suspecting
    spurious_fences: int = 0
    spurious_challenges: int = 0
    datapath_gaps: int = 0


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
        # What the agent derives from the store: rendezvous, or with the balanced first
        # choice of every gateway (computed from the initial member sets)
        tops = balanced_tops(self.members) if schedule.balanced else {}
        self.base_priority = {
            (gw, n): balanced_priority(gw, n, tops) if tops else rendezvous_priority(gw, n)
            for gw in schedule.gateways for n in schedule.nodes}
        self.unlabelled: dict[tuple[str, str], int] = {}

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
        self._log(node.name, "", f"process starts (incarnation {node.incarnation})")
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
        cfg = ElectionConfig(gateway=gw, node=node.name, members=m.members,
                             priority=m.priority, timers=self.timers,
                             on_etcd_loss=self.s.policy, unsafe=self.unsafe)
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
            self._handle(node, gw, MembersChanged(m.members, m.priority))
        elif running:
            node.known[gw] = m.version
            self._handle(node, gw, Shutdown())
        else:
            self._join(node, gw, m)

    def _crash(self, node: SimNode) -> None:
        node.alive = False
        node.incarnation += 1
        node.elections = {}
        node.wakes = {}
        for key in [k for k in self.watches if k[0] == node.name]:
            del self.watches[key]
        self._log(node.name, "", "process killed (kernel state stays until it expires)")

    def _handle(self, node: SimNode, gw: str, event) -> None:
        el = node.elections.get(gw)
        if el is None:
            return
        now = node.local(self.t)
        actions = el.handle(event, now)
        if actions:
            self._apply(node, gw, el, actions, now)
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
        for fn, args in queue:
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
        if node.alive and node.stalled_until - node.stall_from \
                >= t.suspect_time - t.advert_interval:
            # Stalls that overlap into one this long are a pause the peers may rightly
            # suspect (like a short freeze): a disturbance, not calm.
            self.last_disturbance = max(self.last_disturbance, node.stalled_until)
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
        else:
            self._handle(node, gw, event)

    def _heartbeat(self, node: SimNode, gw: str, inc: int, event: Heartbeat) -> None:
        if node.incarnation == inc and node.alive and not node.frozen \
                and not self._stalled(node, self._heartbeat, gw, inc, event):
            self._handle(node, gw, event)

    # --- actions ---------------------------------------------------------------------

    def _apply(self, node: SimNode, gw: str, el: Election, actions: list, now: float) -> None:
        for a in actions:
            tp = type(a)
            if tp is SendAdvert:
                self._send(node, gw, a)
            elif tp is Program:
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

    def _send(self, node: SimNode, gw: str, action: SendAdvert) -> None:
        event = Heartbeat(action.advert)
        rng, t, me = self.rng, self.t, node.name
        for dst in self.nodes:
            if dst is node or not dst.alive or (me, dst.name) in self.blocked:
                continue
            if self.loss and rng.random() < self.loss:
                continue
            delay = rng.uniform(*HB_DELAY)
            if self.delay:
                delay += rng.uniform(0, self.delay)
            self.at(t + delay, self._heartbeat, dst, gw, dst.incarnation, event)
            if self.dup and rng.random() < self.dup:
                self.at(t + delay + rng.uniform(0, 0.01), self._heartbeat, dst, gw,
                        dst.incarnation, event)

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
        if not self.active_faults and self.measure is None:
            if (a.old, a.new) == ("active", "fenced"):
                self.out.spurious_fences += 1
            elif a.new == "challenging":
                self.out.spurious_challenges += 1
        if not self.active_faults and self.t - self.last_disturbance > CALM:
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
        backlog, node.backlog = node.backlog, []
        self._log(node.name, "", f"resumes ({len(backlog)} queued etcd messages)")
        for gw, el, event in backlog:
            self._deliver(node, gw, el, event)
        for gw in list(node.elections):
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
        for gw in list(node.elections):
            if not node.frozen:
                self._handle(node, gw, HealthChanged(ok))

    def _set_cordon(self, node: SimNode, on: bool) -> None:
        node.cordoned = on
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
        for gw in self.s.gateways:
            self.out.placed += 1
            self.out.placed_best += self.active_of(gw) == min(
                self.s.nodes, key=lambda n: rank_key(self.priority(gw, n), n))

    # --- checks ----------------------------------------------------------------------

    def _settled(self) -> bool:
        t = self.t
        for gw, kernel in self.kernel.items():
            if sum(1 for exp in kernel.values() if exp > t) != 1:
                return False
        return True

    def _liveness_deadline(self):
        for gw, kernel in self.kernel.items():
            live = [n for n, exp in kernel.items() if exp > self.t]
            if len(live) != 1:
                self._violation(f"liveness {gw}: {len(live)} actives "
                                f"{self.timers.liveness_bound:.2f} s after all faults healed")
        return StopIteration

    def _log(self, node: str, gw: str, text: str) -> None:
        if self.tracing:
            self.out.trace.append(f"{self.t * 1e3:10.3f} ms  {node:>4} {gw:<5} {text}")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[rank]
