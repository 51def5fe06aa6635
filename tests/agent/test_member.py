"""vipmgr.agent.member on plain asyncio with fakes (no etcd, no kernel, no root).

A member makes no decision of its own: it hands events to its core Election and
carries out the actions, in order, against the datapath and an etcd executor. Most
tests script the core (a fake Election) to pin that adapter down; the last drives the
real core against the simulator's in-memory etcd."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from vipmgr.agent.heartbeat import NodeHeartbeat
from vipmgr.agent.member import GatewayMember, MemberContext
from vipmgr.core.election import Role
from vipmgr.core.messages import (
    OK, Advert, EtcdResult, EtcdView, GrantLease, KeepAlive, Note, NoteKind, Program, Release,
    RevokeLease, RoleChanged, SendAdvert, Start, Tick, Watch, WatchUpdate, Withdraw,
)
from vipmgr.resources.models import EgressGateway, ObjectMeta
from vipmgr.sim.etcd import EtcdModel
from vipmgr.store.authority import DEFAULT_PREFIX, GatewayKeys, plan
from vipmgr.wire.message import Role as WireRole


class FakeDatapath:
    """Records program/withdraw; ``settled`` waits on ``gate`` when one is set."""

    def __init__(self, log: list) -> None:
        self.log = log
        self.generation = 0
        self.gate: asyncio.Event | None = None

    def program(self, gateway, until):
        self.log.append(("program", gateway, until))

    def withdraw(self, gateway):
        self.generation += 1
        self.log.append(("withdraw", gateway))
        return self.generation

    async def settled(self, generation, limit):
        self.log.append(("settled", generation, limit))
        if self.gate is not None:
            await self.gate.wait()
        self.log.append(("settled-done", generation))


class Metrics:
    """Records every call: metrics(name) lists the argument tuples of one method."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name):
        return lambda *a, **kw: self.calls.append((name, a, kw))

    def __call__(self, name):
        return [(a, kw) for n, a, kw in self.calls if n == name]

    def etcd_request(self, operation):
        self.calls.append(("etcd_request", (operation,), {}))
        return contextlib.nullcontext()


class FakeEvents:
    """The gateway history writer (etcd): records what the member tells it."""

    def __init__(self) -> None:
        self.changes: list[RoleChanged] = []
        self.last_holder = None

    def saw_holder(self, holder):
        pass

    def role_changed(self, change, epoch, holder):
        self.changes.append(change)
        return "initial"

    async def close(self):
        pass


class FakeExecutor:
    """Answers every op OK (after ``gate``, when set); records what ran."""

    def __init__(self, log: list) -> None:
        self.log = log
        self.ops: list = []

    async def run(self, op):
        self.ops.append(op)
        self.log.append(("etcd", type(op).__name__))
        return EtcdResult(op.op_id, OK)


class FakeElection:
    """A scripted core: each ``handle`` answers the next list of ``script``."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.script: list[list] = []
        self.events: list = []
        self.role = Role.STANDBY
        self.epoch = 0
        self.view = EtcdView(revision=0)
        self.etcd_ok = True
        self.next_deadline: float | None = None
        self.advert_period = 0.05   # (what core.heartbeat.step reads)
        self.advert_due: float | None = None

    def handle(self, event, now):
        self.events.append(event)
        return self.script.pop(0) if self.script else []


class World:
    def __init__(self, interface: str | None = "eth1", members=("ga", "gb")) -> None:
        self.log: list = []
        self.sent: list = []
        self.changes = 0
        self.loop = asyncio.get_running_loop()
        self.datapath = FakeDatapath(self.log)
        self.metrics = Metrics()
        heartbeat = NodeHeartbeat(lambda ifname, advs: self.sent.extend((ifname, a) for a in advs),
                                  self.metrics, self.loop.time)
        self.ctx = MemberContext("ga", self.datapath, self.metrics, heartbeat,
                                 self.loop.time, DEFAULT_PREFIX, self.changed)
        self.gateway = EgressGateway(meta=ObjectMeta("egw"), manifest={})
        self.member = GatewayMember(self.ctx, self.gateway, members, 100, interface,
                                    "192.0.2.10", client=None)
        self.member.events = self.events = FakeEvents()

    def changed(self) -> None:
        self.changes += 1

    def scripted(self, *script: list) -> FakeElection:
        core = FakeElection(self.member.election.cfg)
        core.script = list(script)
        self.member.election = core
        self.member.executor = self.executor = FakeExecutor(self.log)
        return core


def run(test, **world):
    async def main():
        w = World(**world)
        try:
            await test(w)
        finally:
            await asyncio.wait_for(w.member.close(), 2.0)
    asyncio.run(main())


async def until(cond, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.001)


def test_program_and_withdraw_reach_the_datapath_in_the_cores_order():
    async def test(w: World):
        w.scripted([Program(until=10.0), Withdraw(), Program(until=20.0)], [Withdraw()])
        w.member.start(healthy=True, cordoned=False)
        assert w.log == [("program", "egw", 10.0), ("withdraw", "egw"),
                         ("program", "egw", 20.0)]
        w.member.feed(Tick())
        assert w.log[-1] == ("withdraw", "egw")
    run(test)


def test_eligibility_reaches_the_core_with_start():
    async def test(w: World):
        core = w.scripted()
        w.member.start(healthy=False, cordoned=True)
        assert core.events == [Start(healthy=False, cordoned=True)]
    run(test)


def test_an_etcd_op_after_a_withdraw_waits_until_the_kernel_let_go():
    async def test(w: World):
        core = w.scripted([Withdraw(), Release(op_id=1, epoch=3, successor="gb")])
        w.datapath.gate = asyncio.Event()
        w.member.feed(Start())
        await until(lambda: ("settled", 1, w.member.timers.deadman_timeout) in w.log)
        await asyncio.sleep(0.02)
        assert w.executor.ops == []  # the successor must not find our VIP in the kernel
        w.datapath.gate.set()
        await until(lambda: any(isinstance(e, EtcdResult) for e in core.events))
        assert w.log == [("withdraw", "egw"), ("settled", 1, w.member.timers.deadman_timeout),
                         ("settled-done", 1), ("etcd", "Release")]
        assert core.events[-1] == EtcdResult(1, OK)  # the result goes back to the core
        assert w.metrics("etcd_request") == [(("release",), {})]
        assert w.metrics("etcd_connection") == [((True,), {})]
    run(test)


def test_an_etcd_op_waits_for_the_latest_withdraw_only():
    async def test(w: World):
        w.scripted([GrantLease(op_id=1, ttl=2)], [Withdraw()], [Withdraw(), KeepAlive(2, 7)])
        w.member.feed(Start())
        await until(lambda: w.executor.ops)
        assert w.log[0] == ("settled", 0, w.member.timers.deadman_timeout)  # nothing withdrawn
        w.member.feed(Tick())
        w.member.feed(Tick())
        await until(lambda: len(w.executor.ops) == 2)
        assert ("settled", 2, w.member.timers.deadman_timeout) in w.log
    run(test)


def test_a_role_change_is_logged_and_counted_once(records):
    async def test(w: World):
        core = w.scripted([RoleChanged("standby", "challenging", "suspected", "no adverts")])
        core.role = Role.CHALLENGING
        w.member.feed(Tick())
        lines = [r for r in records if r.getMessage().startswith("egw: standby -> challenging")]
        assert len(lines) == 1 and "suspected: no adverts" in lines[0].getMessage()
        assert lines[0].__dict__["to"] == "challenging"
        assert w.metrics("role_changed") == [
            (("egw", "standby", "challenging", "suspected"), {"active": False})]
        assert len(w.events.changes) == 1  # one history entry
        assert w.changes == 1 and w.metrics("failover_completed") == []
    run(test)


def test_a_takeover_records_the_failover_in_the_member_s_status(records):
    """(The failover is counted by the history writer, under its final reason:
    tests/test_events.py.)"""
    async def test(w: World):
        core = w.scripted([RoleChanged("standby", "acquiring", "authority-free")],
                          [RoleChanged("acquiring", "active", "acquired", epoch=42),
                           Program(until=9.0)])
        w.member.feed(Start())
        core.role, core.epoch = Role.ACTIVE, 42
        w.member.feed(Tick())
        assert w.member.serving and w.log == [("program", "egw", 9.0)]
        assert [a for a, _ in w.metrics("role_changed")] == [
            ("egw", "standby", "acquiring", "authority-free"),
            ("egw", "acquiring", "active", "acquired")]
        assert w.metrics("epoch_seen") == [(("egw", 42), {})]
        assert w.member.info.last_failover["to"] == "ga"
        assert len([r for r in records if " -> " in r.getMessage()]) == 2
    run(test)


def test_an_advert_goes_out_on_the_gateways_interface():
    advert = Advert(gateway="egw", node="ga", role="active", epoch=5, priority=100,
                    eligible=True, etcd_ok=True, heard=("gb",), stamp=1.5, interval=0.02)

    async def test(w: World):
        w.scripted([SendAdvert(advert)])
        w.member.feed(Tick())
        [(ifname, wire)] = w.sent
        assert ifname == "eth1" and wire.role is WireRole.ACTIVE and wire.epoch == 5
        assert wire.vrid == w.gateway.vrid and wire.interval_ms == 20
        assert wire.egress_ip == "192.0.2.10" and list(wire.heard) == ["gb"]
        assert w.metrics("heartbeat_sent") == [(("egw", "eth1"), {})]
    run(test)


def test_no_interface_no_advert():
    advert = Advert(gateway="egw", node="ga", role="standby", epoch=0, priority=100,
                    eligible=True, etcd_ok=True, heard=(), stamp=1.0)

    async def test(w: World):
        w.scripted([SendAdvert(advert)])
        w.member.feed(Tick())
        assert w.sent == [] and w.metrics("heartbeat_sent") == []
    run(test, interface=None)


def test_a_heartbeat_path_note_reaches_status():
    async def test(w: World):
        w.scripted([Note(NoteKind.HEARTBEAT_PATH_BROKEN, "gb")])
        w.member.feed(Tick())
        assert not w.member.info.heartbeat_path_ok and w.changes == 1
        assert w.metrics("heartbeat_path_changed") == [(("egw", False), {})]
    run(test)


def test_the_core_is_woken_at_its_deadline():
    async def test(w: World):
        core = w.scripted()
        core.next_deadline = w.loop.time() + 0.03
        w.member.feed(Start())
        core.next_deadline = None  # nothing after the Tick
        await until(lambda: len(core.events) == 2)
        assert core.events == [Start(), Tick()]
    run(test)


def test_close_withdraws_what_it_serves():
    async def test(w: World):
        core = w.scripted()
        core.role = Role.ACTIVE
        await w.member.close()
        assert w.log == [("withdraw", "egw")]
        core.role = Role.STANDBY  # (run's close: nothing more)
    run(test)


class StuckExecutor(FakeExecutor):
    """A watch that swallows its cancellation (what a library call wedged behind a stalled
    stream does) until ``released``."""

    def __init__(self, log: list) -> None:
        super().__init__(log)
        self.released = asyncio.Event()

    async def run(self, op):
        self.ops.append(op)
        while not self.released.is_set():
            try:
                await self.released.wait()
            except asyncio.CancelledError:
                continue
        return EtcdResult(op.op_id, OK)


def test_close_goes_on_without_a_task_that_ignores_its_cancellation(caplog):
    """A leave holds the agent's membership lock: a member task that never stops must not
    keep it (and every gateway added later) waiting; where it hangs is logged."""
    async def test(w: World):
        w.scripted([Watch(op_id=1)])
        w.member.executor = executor = StuckExecutor(w.log)
        w.member.start(True, False)
        await until(lambda: executor.ops)
        started = w.loop.time()
        with caplog.at_level(logging.WARNING, logger="vipmgr"):
            await asyncio.wait_for(w.member.close(), 3.0)
        assert w.loop.time() - started < 2.0
        stuck = [r.getMessage() for r in caplog.records if "did not stop" in r.getMessage()]
        assert len(stuck) == 1 and "in run" in stuck[0], stuck
        executor.released.set()  # the loop can end
    run(test)


# --- the real core against the simulator's etcd -----------------------------------------


class ModelExecutor:
    """AuthorityExecutor's contract over vipmgr.sim.etcd.EtcdModel: answers at once, the
    watch pushes a snapshot after every change."""

    def __init__(self, log: list, clock, on_update) -> None:
        self.log, self.clock, self.on_update = log, clock, on_update
        self.etcd = EtcdModel()
        self.keys = GatewayKeys(DEFAULT_PREFIX, "egw")
        self.watching = False

    async def run(self, op):
        self.log.append(("etcd", type(op).__name__))
        etcd, before = self.etcd, self.etcd.revision
        if isinstance(op, Watch):
            self.watching = True
            self.on_update(WatchUpdate(etcd.view(self.keys)))
            await asyncio.Event().wait()  # until cancelled
        if isinstance(op, GrantLease):
            result = EtcdResult(op.op_id, OK, etcd.revision, lease=etcd.grant(op.ttl, self.clock()))
        elif isinstance(op, KeepAlive):
            result = EtcdResult(op.op_id, OK if etcd.keepalive(op.lease, self.clock()) else "refused")
        elif isinstance(op, RevokeLease):
            result = EtcdResult(op.op_id, OK if etcd.revoke(op.lease) else "refused")
        else:
            ok, rev, view = etcd.txn(plan(op, "ga", self.keys), self.keys)
            result = EtcdResult(op.op_id, OK if ok else "refused", rev, view)
        if self.watching and etcd.revision != before:
            asyncio.get_running_loop().call_soon(self.on_update, WatchUpdate(etcd.view(self.keys)))
        return result


def test_a_lone_member_takes_and_releases_after_its_withdraw_settled():
    async def test(w: World):
        member = w.member
        member.executor = executor = ModelExecutor(w.log, w.loop.time,
                                                   member.executor.on_update)
        member.start(healthy=True, cordoned=False)
        await until(lambda: member.role == "active", timeout=5.0)
        await until(lambda: any(e[0] == "program" for e in w.log))
        assert executor.etcd.view(executor.keys).holder == "ga"
        w.datapath.gate = asyncio.Event()
        stopping = asyncio.create_task(member.stop(timeout=2.0))
        await until(lambda: ("withdraw", "egw") in w.log)
        withdrawn = w.log.index(("withdraw", "egw"))
        await asyncio.sleep(0.05)
        assert ("etcd", "Release") not in w.log[withdrawn:]  # held until the kernel let go
        w.datapath.gate.set()
        await asyncio.wait_for(stopping, 3.0)
        after = w.log[withdrawn:]
        assert after.index(("settled-done", w.datapath.generation)) < after.index(
            ("etcd", "Release"))
        assert member.role == "stopped" and executor.etcd.view(executor.keys).holder is None
    run(test, members=("ga",))


def test_every_gateways_advert_leaves_in_the_nodes_one_packet():
    """Two members of one node, the real core: when one advertises, both do, and the
    interface gets one send carrying both (the wire splits only past one MTU)."""
    async def test(w: World):
        sends: list = []
        w.ctx.heartbeat.send = lambda ifname, adverts: sends.append((ifname, adverts))
        other = GatewayMember(w.ctx, EgressGateway(meta=ObjectMeta("egw2"), manifest={}),
                              ("ga", "gb"), 100, "eth1", "192.0.2.11", client=None)
        other.events = FakeEvents()
        for member in (w.member, other):
            member.executor = FakeExecutor(w.log)
            member.start(True, False)
        sends.clear()
        await until(lambda: len(sends) >= 3)
        assert all(ifname == "eth1" and sorted(a.gateway for a in adverts) == ["egw", "egw2"]
                   for ifname, adverts in sends)
        await other.close()
        sends.clear()
        await until(lambda: len(sends) >= 1)
        assert [a.gateway for a in sends[0][1]] == ["egw"]
    run(test)
