"""Make this node's kernel match a NodePlan, and say what changed.

``Dataplane.reconcile(plan)`` is idempotent: it compares the plan with what
vipmgr owns in the kernel (``vipmgr.dataplane.layout``) and applies only the
difference, in an order that never lets selected traffic out with a wrong
source:

1. addresses of released VIPs go first (stop owning the address);
2. routes and rules are added/replaced before nft starts marking into them;
3. new VIP addresses are added;
4. ONE nft transaction: sets, elements, chains, and (``arm``) the dead-man
   arming of the gateways taken, so a take is served from the same instant;
5. targeted conntrack deletion (``vipmgr.dataplane.conntrack``) for a take or a
   leave; for newly steered VMs it runs in the background, one dump per burst
   (the steering chain already drops their flows NATed by this node, the
   deletion only lets them restart sooner; a dump costs ~13 ms even when empty);
6. routes and rules nft no longer uses are removed;
7. gratuitous ARP for newly added VIPs, on the background thread so the
   agent's ``refresh()`` is never stuck behind a burst.

What the kernel holds is cached after each reconcile so that a VM joining
costs one small nft batch; ``verify=True`` re-reads everything first (the agent
does that periodically and after any error).

Kernel dead-man switch: every gate and every ARP answer for a VIP depends on an
element that expires by itself at the time the last refresh of that gateway
gave it (at most the gateway's ``deadmanTimeout``). A frozen or killed agent refreshes
nothing, so its node stops forwarding the gateway's traffic (the gate drops it
before SNAT) and stops answering ARP for the VIP by itself. The refresh runs on
its own thread as one hand-built netlink transaction (``nftarm``, ~50 µs), so a
reconcile in progress never delays it.
"""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from pyroute2 import Conntrack, IPRoute

from vipmgr.dataplane import conntrack, garp, layout as L, nftstate
from vipmgr.dataplane.kernel import KernelError, NetnsThread, Nft, NftMissing
from vipmgr.dataplane.nftarm import ArmSocket, CounterReader
from vipmgr.dataplane.nftstate import Refresh
from vipmgr.dataplane.rtnl import RouteKey, RouteSocket, RouteVal
from vipmgr.dataplane.plan import GatewayPlan, NodePlan

RuleKey = tuple[int, int, int, int]  # (priority, table, fwmark, fwmask)


@dataclass
class KernelState:
    nft: nftstate.ObservedNft
    addresses: set[tuple[str, str]]  # (interface, ip) of /32s we added
    routes: dict[RouteKey, RouteVal]
    rules: set[RuleKey]


@dataclass
class Report:
    """What one reconcile changed; empty (falsy) when the kernel already matched."""

    changes: list[str] = field(default_factory=list)
    armed: dict[str, int] = field(default_factory=dict)  # gateway -> ms its dead-man was set to
    conntrack_deleted: dict[conntrack.FlushKey, int] = field(default_factory=dict)
    # the background deletion serving this reconcile's deferred flushes (steered VMs,
    # gateways left while still a member): see _DeferredFlusher
    deferred_flush: "concurrent.futures.Future[dict[conntrack.FlushKey, int]] | None" = \
        field(default=None, repr=False)
    announcements: list["concurrent.futures.Future[list[garp.Announcement]]"] = \
        field(default_factory=list, repr=False)

    def __bool__(self) -> bool:
        return bool(self.changes)

    def __str__(self) -> str:
        """One log line: the changes, then what was armed and flushed."""
        parts = list(self.changes)
        parts += [f"armed {gw} {ms} ms" for gw, ms in sorted(self.armed.items())]
        parts += [f"conntrack {reason} {gw}: {n} deleted"
                  for (gw, reason), n in sorted(self.conntrack_deleted.items()) if n]
        return "; ".join(parts) or "no change"

    def wait_announcements(self, timeout: float = 5.0) -> list[garp.Announcement]:
        return [a for f in self.announcements for a in f.result(timeout)]


def desired_routes(plan: NodePlan) -> tuple[set[tuple[str, str]], dict[RouteKey, RouteVal],
                                            set[RuleKey]]:
    addrs = {(g.active.interface, g.active.egress_ip) for g in plan.active
             if g.active is not None and g.active.add_address}
    routes: dict[RouteKey, RouteVal] = {}
    rules: set[RuleKey] = set()
    # Return routes are kept ready on every member that could serve (a VM's address via
    # the node it runs on is right whichever gateway carries it); the rule that makes the
    # table count is there only while the node serves: a take adds one rule, not a route
    # per VM (2,000 routes took most of a take's time).
    for gw in plan.gateways:
        role = gw.active or gw.role
        for vm_ip, via in (role.return_routes if role is not None else ()):
            routes[(L.RETURN_TABLE, f"{vm_ip}/32")] = ("unicast", via)
    if plan.active and any(gw.active.return_routes for gw in plan.active if gw.active):
        rules.add((L.RETURN_RULE_PRIORITY, L.RETURN_TABLE, 0, 0))
    for sp in plan.steering:
        table = L.steer_table(sp.slot)
        routes[(table, "0.0.0.0/0")] = ("unicast", sp.next_hop) if sp.next_hop \
            else ("blackhole", None)
        rules.add((L.STEER_RULE_PRIORITY, table, L.mark(sp.slot), L.MARK_MASK))
    return addrs, routes, rules


class Dataplane:
    """vipmgr's kernel state on one node (optionally inside network namespace ``netns``).

    Three threads per instance: the kernel thread (reconcile, read, show), the
    arming thread (dead-man refreshes) and background threads (GARP, conntrack).
    The ``*_nowait`` methods return futures at once; the agent awaits
    ``reconcile_nowait`` with ``asyncio.wrap_future`` and calls ``refresh_nowait``
    inline (a few µs).
    """

    def __init__(self, netns: str | None = None,
                 deadman_timeout: float | None = None) -> None:
        # None (the agent): each gateway's arms are capped at its own deadmanTimeout, as
        # the plan carries it. A number overrides that cap for every gateway (tests and
        # tools that arm by hand for longer than any election would).
        self.netns = netns
        self.deadman_timeout = deadman_timeout
        self._thread = NetnsThread(netns)
        self._background = NetnsThread(netns, "vipmgr-dp-bg")
        # the kernel thread's activity, written there, read by the steering flusher
        self._busy = False
        self._last_done = time.monotonic()
        self._deferred = _DeferredFlusher(netns, self._idle_for)
        # the dead-man refresh has its own thread and nft context: it never queues behind
        # a reconcile (only behind the kernel's commit of another transaction)
        self._arming = NetnsThread(netns, "vipmgr-dp-arm")
        self._nft: Nft = self._thread.call(Nft)
        self._arm_sock: ArmSocket = self._arming.call(ArmSocket)
        self._counters: CounterReader = self._thread.call(CounterReader)
        self._ipr: IPRoute = self._thread.call(IPRoute)
        self._rt: RouteSocket = self._thread.call(RouteSocket)
        self._ct: Conntrack = self._thread.call(Conntrack)
        self._known: KernelState | None = None
        self._plan = NodePlan("")
        # gateway -> its dead-man target; replaced (never mutated) by reconcile BEFORE its
        # nft commit, read by refresh without a lock
        self._targets: dict[str, nftstate.ArmTarget] = {}
        # the VIPs GARP may announce: replaced (never mutated) by reconcile, a VIP taken
        # out BEFORE its address goes, put in once armed; read by the GARP thread
        self._announcing: frozenset[tuple[str, str]] = frozenset()

    # --- reading ------------------------------------------------------------------

    def _read(self) -> KernelState:
        tables = {(o["table"]["family"], o["table"]["name"]) for o in self._nft.list_json("tables")}
        objects = []
        for fam in ("inet", "arp"):
            if (fam, L.TABLE) in tables:
                objects += self._nft.list_json(f"table {fam} {L.TABLE}")
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in self._ipr.get_links()}
        addrs = {(names.get(a["index"], "?"), a.get_attr("IFA_LOCAL"))
                 for a in self._ipr.get_addr(family=socket.AF_INET)
                 if a.get_attr("IFA_PROTO") == L.IFA_PROTO}
        routes = self._rt.dump()
        rules = set()
        for r in self._ipr.get_rules(family=socket.AF_INET):
            prio = r.get_attr("FRA_PRIORITY")
            if prio in L.OWN_RULE_PRIORITIES:
                rules.add((prio, r.get_attr("FRA_TABLE") or r["table"],
                           r.get_attr("FRA_FWMARK") or 0, r.get_attr("FRA_FWMASK") or 0))
        return KernelState(nftstate.parse(objects), addrs, routes, rules)

    def read(self) -> KernelState:
        """What vipmgr owns in the kernel right now."""
        return self._thread.call(self._read)

    # --- reconcile ------------------------------------------------------------------

    def reconcile(self, plan: NodePlan, *, arm: Mapping[str, float] | bool | None = None,
                  verify: bool = False) -> Report:
        """Apply ``plan`` and wait for it; see ``reconcile_nowait``."""
        return self.reconcile_nowait(plan, arm=arm, verify=verify).result()

    def reconcile_nowait(self, plan: NodePlan, *, arm: Mapping[str, float] | bool | None = None,
                         verify: bool = False) -> "concurrent.futures.Future[Report]":
        """Apply ``plan`` on the kernel thread; the future's result is the Report.

        ``arm`` maps gateways to seconds until their dead-man expires (the take): they are
        armed in the same nft transaction that installs them, for the time left when that
        transaction is built (rounded down to ms, capped at the gateway's deadman timeout;
        a gateway whose time ran out, or that ``plan`` does not serve here, is not armed:
        ``Report.armed`` says which were). The seconds count from this call, so call it
        on the thread that read the clock. ``arm=True`` arms every gateway the plan
        serves for its whole deadman timeout. ``verify`` re-reads the kernel first.
        A failure leaves the cache invalid, so the next call re-reads the kernel.
        """
        caps = {gw.name: self._cap(gw.active.deadman_timeout) for gw in plan.active}
        if arm is True:
            arm = caps
        now = time.monotonic()
        deadlines = {gw: now + min(secs, caps[gw]) for gw, secs in (arm or {}).items()
                     if gw in caps}
        return self._thread.submit(self._reconcile_or_forget, plan, deadlines, verify)

    def _cap(self, gateway_deadman: float) -> float:
        """The longest a gateway may stay armed without a refresh."""
        return gateway_deadman if self.deadman_timeout is None else self.deadman_timeout

    def _reconcile_or_forget(self, plan: NodePlan, deadlines: dict[str, float],
                             verify: bool) -> Report:
        self._busy = True
        try:
            return self._reconcile(plan, deadlines, verify)
        except BaseException:
            self._known = None
            raise
        finally:
            self._last_done = time.monotonic()
            self._busy = False

    def _idle_for(self) -> float:
        """Seconds since the kernel thread last finished a reconcile; 0 while one runs."""
        return 0.0 if self._busy else time.monotonic() - self._last_done

    def _reconcile(self, plan: NodePlan, deadlines: dict[str, float], verify: bool) -> Report:
        have = self._known if (self._known is not None and not verify) else self._read()
        self._known = None
        report = Report()
        want_nft = nftstate.desired(plan)
        want_addrs, want_routes, want_rules = desired_routes(plan)
        self._announcing = self._announcing & want_addrs
        flushes, deferred = _conntrack_flushes(plan, have.nft, self._plan)
        # a deferred leave flush must not outlive what made it harmless: dropped when the
        # gateway is served here again (its entries are live flows once more), run now
        # when the node stops being a member (no gate drops its flows any more)
        flushes += self._deferred.withdraw(
            serving={(gw.name, gw.active.egress_ip) for gw in plan.active if gw.active},
            members={gw.name for gw in plan.gateways})

        ifindex = {}
        for ifname, ip in sorted(have.addresses - want_addrs):
            self._addr("del", ifname, ip, ifindex)
            report.changes.append(f"address: del {ip}/32 dev {ifname}")
        changed = sorted((key, val) for key, val in want_routes.items()
                         if have.routes.get(key) != val)
        self._rt.apply("replace", changed)
        report.changes += _route_changes("route: ", changed)
        for rule in sorted(want_rules - have.rules):
            self._rule("add", rule)
            report.changes.append(f"rule: add {_rule_text(rule)}")
        added_vips = sorted(want_addrs - have.addresses)
        for ifname, ip in added_vips:
            self._addr("add", ifname, ip, ifindex)
            report.changes.append(f"address: add {ip}/32 dev {ifname}")

        batch = nftstate.diff(have.nft, want_nft)
        targets = self._publish_targets(plan)
        lines = list(batch.lines)
        for gw, deadline in sorted(deadlines.items()):
            ms = _ms_left(deadline)
            if gw in targets and ms > 0:
                lines += targets[gw].arm_lines(ms)
                report.armed[gw] = ms
        if lines:
            self._nft.run("\n".join(lines) + "\n")
        report.changes += batch.changes
        # armed from here: announce the new VIPs now, not after the conntrack work below
        self._announcing = frozenset(want_addrs)
        report.announcements += self._announce(
            gw for gw in plan.active if gw.active is not None
            and (gw.active.interface, gw.active.egress_ip) in added_vips)

        report.conntrack_deleted = conntrack.delete_matching(self._ct, flushes)
        if deferred:
            report.deferred_flush = self._deferred.add(deferred)

        for rule in sorted(have.rules - want_rules):
            self._rule("del", rule)
            report.changes.append(f"rule: del {_rule_text(rule)}")
        gone = sorted((key, have.routes[key]) for key in set(have.routes) - set(want_routes))
        self._rt.apply("del", gone)
        report.changes += _route_changes("route: del ", gone)

        self._plan = plan
        self._known = KernelState(_as_observed(have.nft, want_nft), want_addrs, want_routes,
                                  want_rules)
        return report

    def _addr(self, op: str, ifname: str, ip: str, cache: dict[str, int]) -> None:
        if ifname not in cache:
            found = self._ipr.link_lookup(ifname=ifname)
            if not found:
                raise KernelError(f"interface {ifname} does not exist; cannot {op} {ip}")
            cache[ifname] = found[0]
        kw = {"proto": L.IFA_PROTO} if op == "add" else {}
        self._ipr.addr(op, index=cache[ifname], address=ip, prefixlen=32, **kw)

    def _rule(self, op: str, rule: RuleKey) -> None:
        prio, table, fwmark, fwmask = rule
        kw = {"fwmark": fwmark, "fwmask": fwmask} if fwmask else {}
        self._ipr.rule(op, priority=prio, table=table, family=socket.AF_INET, **kw)

    # --- dead-man, GARP ---------------------------------------------------------------

    def _publish_targets(self, plan: NodePlan) -> dict[str, nftstate.ArmTarget]:
        """Make ``plan``'s dead-man targets the ones refresh may arm, before the commit.

        An unchanged gateway keeps its target object; a withdrawn one loses it and a
        (re)taken one gets a new one, so a refresh submitted before the change finds its
        target gone (``_rearm``). Publishing before the commit is the safe order: a
        refresh of a gateway being taken fails on the kernel guard until the take is
        committed, and one of a gateway being withdrawn is refused here already.
        """
        old = self._targets
        new = nftstate.arm_targets(plan)
        targets = {gw: old[gw] if old.get(gw) == t else t for gw, t in new.items()}
        self._targets = targets
        return targets

    def refresh(self, gateway: str, expires_in: float) -> "Refresh":
        """Re-arm ``gateway``'s dead-man and wait; see ``refresh_nowait``."""
        return self.refresh_nowait({gateway: expires_in}).result()[gateway]

    def refresh_nowait(self, expiries: Mapping[str, float]
                       ) -> "concurrent.futures.Future[dict[str, Refresh]]":
        """Re-arm each gateway's dead-man to expire its ``expiries`` seconds from now (capped
        at its deadman timeout, rounded down to ms), all in one transaction; returns at
        once (a few µs), the transaction runs on the arming thread, never behind a
        reconcile.

        The future maps each gateway to its Refresh: ARMED (true); GONE when the gateway
        is not served here (no reconcile armed it, or one is withdrawing it: the kernel
        guard refused); LATE when its time had run out before it ran. It raises
        KernelError for any other failure. Call it every advert interval with the
        gateways whose authority is confirmed, and only those.
        """
        now = time.monotonic()
        due: list[tuple[nftstate.ArmTarget, float]] = []
        for gateway, expires_in in expiries.items():
            target = self._targets.get(gateway)
            if target is not None:
                due.append((target, now + min(expires_in, self._cap(target.max_seconds))))
        gone = {gw: Refresh.GONE for gw in expiries if gw not in self._targets}
        if not due:
            done: concurrent.futures.Future[dict[str, Refresh]] = concurrent.futures.Future()
            done.set_result(gone)
            return done
        return self._arming.submit(self._rearm, due, gone)

    def _rearm(self, due: list[tuple[nftstate.ArmTarget, float]],
               out: dict[str, Refresh]) -> dict[str, Refresh]:
        """One transaction for all of ``due``; a gateway whose guard is gone is left out
        and the rest tried again (the batch is atomic: nothing of it applied)."""
        live = []
        for target, deadline in due:
            if self._targets.get(target.gateway) is not target:
                out[target.gateway] = Refresh.GONE  # withdrawn (maybe re-taken) since
            elif _ms_left(deadline) <= 0:
                out[target.gateway] = Refresh.LATE
            else:
                live.append((target, deadline))
        while live:
            started = time.monotonic()
            try:
                self._arm_sock.refresh([(t, max(1, _ms_left(d))) for t, d in live])
                if time.monotonic() - started >= 0.001:
                    # the kernel counts the timeout from the commit; this one may have waited
                    # behind another transaction: set it again so it still expires by the
                    # deadline
                    self._arm_sock.refresh([(t, max(1, _ms_left(d))) for t, d in live])
            except NftMissing as missing:
                # that guard element is gone: withdrawn, or our table flushed
                out[missing.gateway] = Refresh.GONE
                live = [(t, d) for t, d in live if t.gateway != missing.gateway]
                continue
            out.update(dict.fromkeys((t.gateway for t, _ in live), Refresh.ARMED))
            break
        return out

    def announce(self, gateway: str | None = None
                 ) -> list["concurrent.futures.Future[garp.Announcement]"]:
        """A GARP burst for one (or every) active VIP now: the periodic refresh and the
        "split healed" re-announce."""
        return self._announce(gw for gw in self._plan.active if gw.active is not None
                              and gw.active.add_address and gateway in (None, gw.name))

    def _announce(self, gateways: Iterable[GatewayPlan]
                  ) -> list["concurrent.futures.Future[list[garp.Announcement]]"]:
        """One GARP job per (count, interval) for these gateways' VIPs, in rounds (a take of
        many gateways announces all of them at once), each pair sent only while the VIP
        is still ours."""
        groups: dict[tuple[int, float], list[tuple[str, str]]] = {}
        for gw in gateways:
            role = gw.active
            groups.setdefault((role.garp.count, role.garp.interval), []).append(
                (role.interface, role.egress_ip))
        return [self._background.submit(garp.announce, vips, count, interval,
                                        lambda *vip: vip in self._announcing)
                for (count, interval), vips in sorted(groups.items())]

    # --- drop counters ----------------------------------------------------------------

    def drops_nowait(self) -> "concurrent.futures.Future[dict[tuple[str, str], int]]":
        """Packets dropped per (gateway, reason), from the nft counters of the applied plan.

        Reasons: ``fenced`` (member gate), ``failclosed`` (worker, no active node),
        ``misrouted`` (active node, leak guard). A counter exists only while its role does:
        it starts at 0 again after a role change (the agent's metric adds the deltas).
        """
        return self._thread.submit(self._drops)

    def _drops(self) -> dict[tuple[str, str], int]:
        names = {fn(gw): (gw, reason) for gw in sorted({g.name for g in self._plan.gateways}
                                                       | {s.name for s in self._plan.steering})
                 for reason, fn in L.DROP_COUNTERS}
        if not names:
            return {}
        return {names[name]: packets for name, packets in self._counters.packets().items()
                if name in names}

    # --- show, flush ------------------------------------------------------------------

    def show(self) -> str:
        """What vipmgr has programmed here, as text (nft tables, addresses, routes, rules)."""
        def body() -> str:
            st = self._read()
            lines = []
            for fam in sorted(st.nft.tables):
                lines.append(self._nft.run(f"list table {fam} {L.TABLE}").rstrip())
            for ifname, ip in sorted(st.addresses):
                lines.append(f"address {ip}/32 dev {ifname}")
            for key, val in sorted(st.routes.items()):
                lines.append(f"route {_route_text(key, val)}")
            for rule in sorted(st.rules):
                lines.append(f"rule {_rule_text(rule)}")
            return "\n".join(lines) if lines else "nothing programmed by vipmgr"
        return self._thread.call(body)

    def flush(self) -> Report:
        """Remove everything vipmgr programmed here (also conntrack NATed to our egress IPs)."""
        return self.reconcile(NodePlan(self._plan.node), verify=True)

    def close(self) -> None:
        self._thread.call(self._ipr.close)
        self._thread.call(self._rt.close)
        self._thread.call(self._ct.close)
        self._thread.call(self._counters.close)
        self._thread.call(self._nft.close)
        self._arming.call(self._arm_sock.close)
        self._thread.close()
        self._arming.close()
        self._background.close()
        self._deferred.close()

    def __enter__(self) -> "Dataplane":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _DeferredFlusher:
    """Deletes conntrack entries that are harmless meanwhile, one dump per burst of changes.

    Two kinds wait: flows of newly steered VMs (the steering chain already drops
    them) and the entries SNATed to the egress IP of a gateway this node stopped
    serving but is still a member of (its gate drops them: ``gw_gate`` matches
    forwarded traffic whatever its conntrack state). Deleting them only lets them
    restart sooner, while a dump walks the whole conntrack hash (~13 ms in the kernel
    even when empty), an nft commit that overlaps it waits for it, and on a
    withdraw it would delay the release that lets the successor take over. So they
    go to a low-priority thread that serves every flush a burst of reconciles asked
    for, once the kernel thread has been idle for ``GATHER`` seconds (at the latest
    ``MAX_DEFER`` after the first request).

    ``withdraw`` takes the pending leave flushes of a gateway back when that is no
    longer true (see ``Dataplane._reconcile``), and waits for a run that holds one.
    """

    GATHER = 0.05
    MAX_DEFER = 1.0

    def __init__(self, netns: str | None, idle_for: Callable[[], float]) -> None:
        self._idle_for = idle_for
        self._thread = NetnsThread(netns, "vipmgr-dp-ct", nice=10)
        self._lock = threading.Lock()      # guards the fields below
        self._running_lock = threading.Lock()  # held while a run deletes
        self._pending: list[conntrack.FlowFlush | conntrack.NatFlush] = []
        self._running: list[conntrack.FlowFlush | conntrack.NatFlush] = []
        self._future: concurrent.futures.Future[dict[conntrack.FlushKey, int]] | None = None

    def add(self, specs: list[conntrack.FlowFlush | conntrack.NatFlush]
            ) -> "concurrent.futures.Future[dict[conntrack.FlushKey, int]]":
        """Queue ``specs``; the future of the dump that will serve them (shared by a burst)."""
        with self._lock:
            self._pending += specs
            if self._future is None:
                self._future = self._thread.submit(self._run)
            return self._future

    def withdraw(self, serving: set[tuple[str, str]], members: set[str]
                 ) -> list[conntrack.NatFlush]:
        """Drop the pending leave flushes of (gateway, egress IP) in ``serving``; return
        those of gateways not in ``members`` for the caller to run now. Waits for a run
        in progress that holds either kind."""
        def affected(spec) -> bool:
            return isinstance(spec, conntrack.NatFlush) and (
                (spec.gateway, spec.egress_ip) in serving or spec.gateway not in members)

        with self._lock:
            taken = [spec for spec in self._pending if affected(spec)]
            self._pending = [spec for spec in self._pending if not affected(spec)]
            busy = any(affected(spec) for spec in self._running)
        if busy:
            with self._running_lock:
                pass
        return [spec for spec in taken if spec.gateway not in members]

    def _run(self) -> dict[conntrack.FlushKey, int]:
        give_up = time.monotonic() + self.MAX_DEFER
        time.sleep(self.GATHER)
        while self._idle_for() < self.GATHER and time.monotonic() < give_up:
            time.sleep(self.GATHER / 5)
        with self._running_lock:
            with self._lock:
                specs, self._pending, self._future = self._pending, [], None
                self._running = specs
            ct = Conntrack()  # its own socket: the main one belongs to the kernel thread
            try:
                return conntrack.delete_matching(ct, specs)
            finally:
                ct.close()
                with self._lock:
                    self._running = []

    def close(self) -> None:
        self._thread.close()


def _conntrack_flushes(plan: NodePlan, ob: nftstate.ObservedNft, previous: NodePlan
                       ) -> tuple[list[conntrack.FlowFlush | conntrack.NatFlush],
                                  list[conntrack.FlowFlush | conntrack.NatFlush]]:
    """Which flows a change of role makes stale: decided from the kernel's record of
    what this node served (the ``g-*-egress`` sets) and steered (``p-*-local``).

    (now, deferred): take flushes and leaves of gateways this node is no longer a
    member of run in the reconcile; steered VMs and leaves of gateways it still gates
    can wait (``_DeferredFlusher``)."""
    out: list[conntrack.FlowFlush | conntrack.NatFlush] = []
    later: list[conntrack.FlowFlush | conntrack.NatFlush] = []
    members = {gw.name for gw in plan.gateways}
    want_egress = {}
    for gw in plan.active:
        assert gw.active is not None
        name = L.gateway_egress(gw.name)
        want_egress[name] = gw.active.egress_ip
        if ob.elements.get(("inet", name)) != frozenset([gw.active.egress_ip]):
            out += conntrack.take_flushes(gw.name, gw.selections, gw.active.egress_ip,
                                          gw.active.add_address)
    # The gateway is never parsed back out of a set name (a long one is hashed): the
    # comment the set was created with names it, else the plans do; a set neither knows
    # (a long name whose config is gone, or a set an older vipmgr left) names its flush
    # itself. Either way one label per set vipmgr created: bounded.
    owners = {L.gateway_egress(gw.name): gw.name for gw in previous.gateways + plan.gateways}
    for (fam, name), elems in sorted(ob.elements.items()):
        if fam == "inet" and name.startswith("g-") and name.endswith("-egress"):
            gateway = ob.comments.get((fam, name)) or owners.get(name)
            for ip in sorted(elems - {want_egress.get(name)}):
                flush = conntrack.NatFlush(gateway or name, ip)
                (later if gateway in members else out).append(flush)
    for sp in plan.steering:
        for sel in sp.selections:
            had_src = ob.elements.get(("inet", L.policy_local(sel.policy)), frozenset())
            had_dst = ob.elements.get(("inet", L.policy_dst(sel.policy)))
            new = sel.sources if had_dst != frozenset(sel.cidrs) else sel.sources - had_src
            if new:
                # flows these VMs opened before being steered may carry this node's own NAT
                later.append(conntrack.FlowFlush(sp.name, conntrack.STEER, new, sel.cidrs))
    return out, later


def _as_observed(before: nftstate.ObservedNft, want: nftstate.NftState) -> nftstate.ObservedNft:
    """What the kernel holds after a successful diff batch (counters keep their values)."""
    return nftstate.ObservedNft(
        tables=set(want.tables), sets=dict(want.sets), elements=dict(want.elements),
        counters={k: before.counters.get(k, (0, 0)) for k in want.counters},
        chains={k: want.fingerprints(k) for k in want.chains})


def _ms_left(deadline: float) -> int:
    """Whole milliseconds until ``deadline`` (monotonic clock), rounded down."""
    return int((deadline - time.monotonic()) * 1000)


def _route_changes(prefix: str, routes: list[tuple[RouteKey, RouteVal]]) -> list[str]:
    """Report lines; a bulk change (return routes of many VMs) is summarised."""
    if len(routes) > 20:
        tables = sorted({key[0] for key, _ in routes})
        return [f"{prefix}{len(routes)} routes in table(s) {', '.join(map(str, tables))}"]
    return [prefix + _route_text(key, val) for key, val in routes]


def _route_text(key: RouteKey, val: RouteVal) -> str:
    table, dst = key
    kind, via = val
    return f"{dst} via {via} table {table}" if kind == "unicast" else f"{kind} {dst} table {table}"


def _rule_text(rule: RuleKey) -> str:
    prio, table, fwmark, fwmask = rule
    sel = f"fwmark 0x{fwmark:x}/0x{fwmask:x} " if fwmask else ""
    return f"priority {prio} {sel}lookup {table}"
