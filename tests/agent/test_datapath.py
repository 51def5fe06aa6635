"""The agent's datapath without a kernel: the sans-I/O ServeBook (plain pytest), then
NodeDatapath, its asyncio adapter, on plain asyncio with a fake Dataplane whose
futures the test completes (no root)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass

import pytest

from vipmgr.agent import datapath as datapath_mod
from vipmgr.agent.datapath import NodeDatapath
from vipmgr.agent.servebook import Outcome, Serve, ServeBook
from vipmgr.dataplane.kernel import KernelError
from vipmgr.dataplane.plan import ActiveRole, GarpSettings, GatewayPlan, NodePlan
from vipmgr.dataplane.nftstate import Refresh
from vipmgr.dataplane.reconcile import Report


# --- ServeBook ------------------------------------------------------------------------


def test_a_take_is_a_new_generation_and_asks_to_arm():
    book = ServeBook()
    assert book.program("egw", 5.0, now=1.0) is Serve.TAKE
    assert book.generation == 1 and book.serving == {"egw": 5.0}
    assert book.taking() == ["egw"] and book.arm_request(now=2.0) == {"egw": 3.0}
    assert not book.settled(1)


def test_a_lapsed_program_changes_nothing():
    book = ServeBook()
    assert book.program("egw", 5.0, now=5.0) is Serve.NOTHING
    assert book.serving == {} and book.generation == 0


def test_programs_after_the_take_rearm_until_armed_then_refresh():
    book = ServeBook()
    book.program("egw", 5.0, now=1.0)
    assert book.program("egw", 6.0, now=2.0) is Serve.REARM  # the take is in flight
    assert book.generation == 1 and book.serving["egw"] == 6.0
    book.applied(1, armed={"egw": 4000}, active={"egw"})
    assert book.settled(1) and book.armed == {"egw"}
    assert book.program("egw", 7.0, now=3.0) is Serve.REFRESH
    assert book.taking() == [] and book.arm_request(now=3.0) == {} and book.generation == 1


def test_armed_only_what_the_applied_plan_has_active():
    book = ServeBook()
    book.program("a", 9.0, now=0.0)
    book.program("b", 9.0, now=0.0)
    book.applied(2, armed={"a": 9000, "b": 9000}, active={"a"})  # b not planned active
    assert book.armed == {"a"} and book.taking() == ["b"]
    book.applied(2, armed={}, active={"a", "b"})  # armed stays armed while active
    assert book.armed == {"a"}


def test_withdraw():
    book = ServeBook()
    assert book.withdraw("egw") is False and book.generation == 0  # not served: no change
    book.program("egw", 5.0, now=0.0)
    book.applied(1, armed={"egw": 5000}, active={"egw"})
    assert book.withdraw("egw") is True
    assert book.generation == 2 and book.serving == {} and book.armed == set()
    assert not book.settled(2)
    book.applied(2, armed={}, active=())
    assert book.settled(2) and book.settled(1)


def test_withdraw_while_planning_supersedes_the_plan_and_keeps_the_verify():
    book = ServeBook()
    book.program("egw", 5.0, now=0.0)
    planned = book.generation          # the reconciler snapshots, then plans
    assert book.withdraw("egw")        # ... the core withdraws meanwhile
    assert not book.current(planned)
    assert book.commit(planned, verify=True) is False  # that plan must not reach the kernel
    assert book.verify_next
    replanned = book.generation
    assert book.commit(replanned, verify=False) is True
    assert not book.verify_next        # this reconcile carries the verify
    book.applied(replanned, armed={}, active=())
    assert book.settled(replanned)


def test_a_failed_reconcile_verifies_next():
    book = ServeBook()
    book.program("egw", 5.0, now=0.0)
    assert book.commit(1, verify=False)
    book.reconcile_failed()
    assert book.verify_next and not book.settled(1) and book.taking() == ["egw"]


def armed_book() -> ServeBook:
    book = ServeBook()
    book.program("egw", 5.0, now=0.0)
    book.applied(1, armed={"egw": 5000}, active={"egw"})
    return book


def test_refresh_armed():
    book = armed_book()
    assert book.refresh_outcome("egw", Refresh.ARMED) is Outcome.REFRESHED
    assert book.armed == {"egw"} and not book.verify_next


def test_refresh_late_changes_nothing():
    book = armed_book()
    assert book.refresh_outcome("egw", Refresh.LATE) is Outcome.LATE
    assert book.armed == {"egw"} and not book.verify_next


def test_refresh_gone_after_a_withdraw_is_expected():
    book = armed_book()
    book.withdraw("egw")
    assert book.refresh_outcome("egw", Refresh.GONE) is Outcome.EXPECTED
    assert not book.verify_next


def test_refresh_gone_for_an_armed_gateway_is_repaired():
    book = armed_book()
    assert book.refresh_outcome("egw", Refresh.GONE) is Outcome.REPAIR
    assert book.armed == set() and book.verify_next
    assert book.taking() == ["egw"] and book.arm_request(now=1.0) == {"egw": 4.0}


def test_a_failed_refresh_is_repaired_even_after_a_withdraw():
    book = armed_book()
    book.withdraw("egw")
    assert book.refresh_outcome("egw", None) is Outcome.REPAIR and book.verify_next


# --- NodeDatapath on plain asyncio ----------------------------------------------------


@dataclass
class Reconcile:
    plan: NodePlan
    arm: dict
    verify: bool
    future: concurrent.futures.Future

    def done(self, **report) -> None:
        """Succeed, arming what was asked unless ``armed`` says otherwise."""
        report.setdefault("armed", {gw: round(s * 1e3) for gw, s in self.arm.items()})
        self.future.set_result(Report(**report))

    def fail(self, exc: Exception) -> None:
        self.future.set_exception(exc)


class FakeDataplane:
    def __init__(self, log: list) -> None:
        self.log = log
        self.reconciles: list[Reconcile] = []
        self.refreshes: list[tuple[str, float, concurrent.futures.Future]] = []
        self.refresh_calls = 0  # transactions: one per refresh_nowait
        self.auto = False  # complete every reconcile at once (closing)

    def reconcile_nowait(self, plan, *, arm=None, verify=False):
        future = concurrent.futures.Future()
        call = Reconcile(plan, dict(arm or {}), verify, future)
        self.reconciles.append(call)
        self.log.append(("reconcile", tuple(sorted(arm or {}))))
        if self.auto:
            call.done()
        return future

    def refresh_nowait(self, expiries):
        """One transaction for all of ``expiries``; each gateway's part is a future the
        test settles (``refreshes``), the whole is done when they all are."""
        self.refresh_calls += 1
        whole = concurrent.futures.Future()
        parts = {gw: concurrent.futures.Future() for gw in expiries}

        def part_done(_):
            if all(f.done() for f in parts.values()) and not whole.done():
                failed = [f.exception() for f in parts.values() if f.exception()]
                if failed:
                    whole.set_exception(failed[0])
                else:
                    whole.set_result({gw: f.result() for gw, f in parts.items()})
        for gw, future in parts.items():
            self.refreshes.append((gw, expiries[gw], future))
            future.add_done_callback(part_done)
        return whole

    def drops_nowait(self):
        future = concurrent.futures.Future()
        future.set_result({})
        return future

    def announce(self, gateway=None):
        return []


class FakeCtsync:
    def __init__(self, log: list) -> None:
        self.log = log

    def stop_serving(self, gateway):
        self.log.append(("stop_serving", gateway))

    async def before_take(self, gateways):
        self.log.append(("before_take", tuple(gateways)))
        return {}

    def applied(self, plan):
        self.log.append(("applied", tuple(g.name for g in plan.active)))


class Metrics:
    """Records every call: metrics(name) lists the argument tuples of one method."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name):
        return lambda *a, **kw: self.calls.append((name, a, kw))

    def __call__(self, name):
        return [(a, kw) for n, a, kw in self.calls if n == name]


def role() -> ActiveRole:
    return ActiveRole(mode="VirtualIPAddress", interface="eth1", egress_ip="192.0.2.10",
                      add_address=True, return_routes=(), garp=GarpSettings())


class Planner:
    """Plans every served gateway active here; ``hold`` makes the next plan wait."""

    def __init__(self) -> None:
        self.calls: list[set[str]] = []
        self.hold: asyncio.Event | None = None
        self.holding = False

    async def __call__(self, serving, holders, interfaces, garp):
        self.calls.append(set(serving))
        if self.hold is not None:
            hold, self.hold = self.hold, None
            self.holding = True
            await hold.wait()
            self.holding = False
        return NodePlan("ga", gateways=tuple(GatewayPlan(gw, (), active=role())
                                             for gw in serving))


class World:
    def __init__(self) -> None:
        self.log: list = []
        self.dp = FakeDataplane(self.log)
        self.planner = Planner()
        self.metrics = Metrics()
        self.loop = asyncio.get_running_loop()
        self.datapath = NodeDatapath("ga", self.dp, self.metrics, GarpSettings(),
                                     self.loop.time, self.planner)
        self.datapath.ctsync = FakeCtsync(self.log)

    async def reconcile(self, n: int) -> Reconcile:
        """The ``n``th reconcile (1-based), once it was asked for."""
        await until(lambda: len(self.dp.reconciles) >= n)
        return self.dp.reconciles[n - 1]

    def applied(self) -> int:
        """How many reconcile results the datapath has taken in (the sync follows each)."""
        return sum(1 for entry in self.log if entry[0] == "applied")

    async def started(self) -> None:
        """Started, its first (empty) reconcile done."""
        self.datapath.start()
        (await self.reconcile(1)).done()
        await until(lambda: self.applied() == 1)

    async def take(self, gateway: str, n: int) -> Reconcile:
        """Program ``gateway``; its take is the ``n``th reconcile, done."""
        self.datapath.program(gateway, self.loop.time() + 5)
        call = await self.reconcile(n)
        call.done()
        await until(lambda: self.applied() == n)
        assert gateway in self.datapath.book.armed
        return call

    async def close(self) -> None:
        self.dp.auto = True
        for call in self.dp.reconciles:
            if not call.future.done():
                call.done()
        await asyncio.wait_for(self.datapath.close(), 2.0)


async def until(cond, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.001)


async def idle(seconds: float = 0.02) -> None:
    await asyncio.sleep(seconds)


def run(test):
    """Run ``test(world)`` on a fresh event loop."""
    async def main():
        world = World()
        try:
            await test(world)
        finally:
            await world.close()
    asyncio.run(main())


def test_a_program_takes_with_one_reconcile_that_arms_it():
    async def test(w: World):
        await w.started()
        until_ = w.loop.time() + 5
        w.datapath.program("egw", until_)
        call = await w.reconcile(2)
        assert set(call.arm) == {"egw"} and 4.5 < call.arm["egw"] <= 5 and not call.verify
        assert [g.name for g in call.plan.active] == ["egw"]
        # replicated flows go in before the take's reconcile, the sync follows the result
        assert w.log[-2:] == [("before_take", ("egw",)), ("reconcile", ("egw",))]
        call.done()
        await until(lambda: "egw" in w.datapath.book.armed)
        assert w.log[-1] == ("applied", ("egw",)) and w.datapath.plan is call.plan
        # armed: a later Program refreshes its dead-man on the arming thread, no reconcile
        w.datapath.program("egw", w.loop.time() + 5)
        await idle()
        assert len(w.dp.reconciles) == 2
        [(gateway, expires_in, _)] = w.dp.refreshes
        assert gateway == "egw" and 4.5 < expires_in <= 5
    run(test)


def test_a_program_while_the_take_is_in_flight_arms_again_with_the_next_reconcile():
    async def test(w: World):
        await w.started()
        w.datapath.program("egw", w.loop.time() + 5)
        first = await w.reconcile(2)
        w.datapath.program("egw", w.loop.time() + 6)  # not armed yet
        assert w.dp.refreshes == []
        first.done(armed={})  # its arming came too late
        second = await w.reconcile(3)
        assert set(second.arm) == {"egw"} and 5.5 < second.arm["egw"] <= 6
    run(test)


def test_a_burst_of_inventory_changes_costs_one_reconcile():
    async def test(w: World):
        await w.started()
        asked = w.loop.time()
        for _ in range(5):
            w.datapath.request()
            await asyncio.sleep(0)
        call = await w.reconcile(2)
        gathered = w.loop.time() - asked
        assert gathered >= datapath_mod.INVENTORY_GATHER * 0.9
        call.done()
        await idle(2 * datapath_mod.INVENTORY_GATHER)
        assert len(w.dp.reconciles) == 2 and len(w.planner.calls) == 2
    run(test)


def test_a_take_cuts_the_inventory_gather_short():
    async def test(w: World):
        await w.started()
        w.datapath.request()
        await asyncio.sleep(0)
        asked = w.loop.time()
        w.datapath.program("egw", w.loop.time() + 5)
        call = await w.reconcile(2)
        assert w.loop.time() - asked < datapath_mod.INVENTORY_GATHER / 2
        assert set(call.arm) == {"egw"}
    run(test)


def test_settled_returns_once_the_withdraws_reconcile_is_applied():
    async def test(w: World):
        await w.started()
        await w.take("egw", 2)
        generation = w.datapath.withdraw("egw")
        assert w.log[-1] == ("stop_serving", "egw")  # before the leave's reconcile
        settled = asyncio.create_task(w.datapath.settled(generation, 5.0))
        call = await w.reconcile(3)
        assert call.arm == {} and call.plan.active == ()
        await idle()
        assert not settled.done()
        call.done()
        await asyncio.wait_for(settled, 1.0)
        assert w.datapath.book.armed == set()
        # a withdraw of what is not served is no change: nothing to wait for
        assert w.datapath.withdraw("egw") == generation
        await asyncio.wait_for(w.datapath.settled(generation, 5.0), 0.1)
    run(test)


def test_settled_gives_up_with_a_warning_when_the_kernel_never_answers(records):
    async def test(w: World):
        await w.started()
        await w.take("egw", 2)
        generation = w.datapath.withdraw("egw")
        await w.reconcile(3)  # never completed
        started = w.loop.time()
        await asyncio.wait_for(w.datapath.settled(generation, 0.05), 1.0)
        assert 0.04 < w.loop.time() - started < 0.5
        assert any("withdraw not applied in time" in r.getMessage() and
                   r.levelno == logging.WARNING for r in records)
    run(test)


def test_a_withdraw_while_planning_replans_before_touching_the_kernel():
    async def test(w: World):
        await w.started()
        w.planner.hold = hold = asyncio.Event()
        w.datapath.program("egw", w.loop.time() + 5)
        await until(lambda: w.planner.holding)
        generation = w.datapath.withdraw("egw")
        hold.set()
        call = await w.reconcile(2)
        assert w.planner.calls[-2:] == [{"egw"}, set()]  # the stale plan went nowhere
        assert call.arm == {} and call.plan.active == ()
        assert ("before_take", ("egw",)) not in w.log  # nothing injected for it
        call.done()
        await asyncio.wait_for(w.datapath.settled(generation, 5.0), 1.0)
    run(test)


def test_a_kernel_error_is_retried_and_clears_the_error(records):
    async def test(w: World):
        w.datapath.start()
        w.datapath.program("egw", w.loop.time() + 5)
        first = await w.reconcile(1)
        first.fail(KernelError("netlink: EBUSY"))
        failed = w.loop.time()
        await until(lambda: w.datapath.error)
        assert "EBUSY" in w.datapath.error
        second = await w.reconcile(2)
        assert w.loop.time() - failed >= datapath_mod.RETRY_AFTER * 0.9
        assert second.verify and set(second.arm) == {"egw"}  # re-read, armed again
        assert w.datapath.error  # still: nothing applied yet
        second.done()
        await until(lambda: not w.datapath.error)
        assert w.datapath.book.armed == {"egw"}
        assert any("EBUSY" in r.getMessage() and r.levelno == logging.ERROR for r in records)
    run(test)


def test_a_refused_refresh_of_an_armed_gateway_rearms_it_after_a_verify():
    async def test(w: World):
        await w.started()
        await w.take("egw", 2)
        w.datapath.program("egw", w.loop.time() + 5)
        await asyncio.sleep(0)  # refreshes of one turn go out together, right after it
        w.dp.refreshes[0][2].set_result(Refresh.GONE)  # our table was flushed
        call = await w.reconcile(3)
        assert call.verify and set(call.arm) == {"egw"} and w.datapath.error == ""
    run(test)


def test_a_late_refresh_changes_nothing(records):
    async def test(w: World):
        await w.started()
        await w.take("egw", 2)
        w.datapath.program("egw", w.loop.time() + 5)
        await asyncio.sleep(0)  # refreshes of one turn go out together, right after it
        w.dp.refreshes[0][2].set_result(Refresh.LATE)
        await until(lambda: any("too late" in r.getMessage() for r in records))
        await idle(0.05)
        assert len(w.dp.reconciles) == 2 and w.datapath.error == ""
        assert w.datapath.book.armed == {"egw"}
    run(test)


def test_a_refused_refresh_after_a_withdraw_is_expected():
    async def test(w: World):
        await w.started()
        await w.take("egw", 2)
        w.datapath.program("egw", w.loop.time() + 5)
        await asyncio.sleep(0)
        w.datapath.withdraw("egw")
        (await w.reconcile(3)).done()
        await until(lambda: w.applied() == 3)
        w.dp.refreshes[0][2].set_result(Refresh.GONE)
        await idle(0.05)
        assert len(w.dp.reconciles) == 3 and w.datapath.error == ""
    run(test)


def test_a_failed_refresh_makes_the_datapath_not_ready():
    async def test(w: World):
        await w.started()
        await w.take("egw", 2)
        w.datapath.program("egw", w.loop.time() + 5)
        await asyncio.sleep(0)  # refreshes of one turn go out together, right after it
        w.dp.refreshes[0][2].set_exception(KernelError("netlink: EPERM"))
        call = await w.reconcile(3)
        assert "EPERM" in w.datapath.error and call.verify
        assert w.metrics("deadman_refreshed") == []
    run(test)


def test_one_turns_refreshes_are_one_kernel_transaction_each_to_its_own_until():
    async def test(w: World):
        await w.started()
        await w.take("egw", 2)
        w.datapath.book.armed.add("egw2")  # (served and armed, as a take would leave it)
        w.datapath.book.serving["egw2"] = w.loop.time() + 1
        w.datapath.program("egw", w.loop.time() + 5)
        w.datapath.program("egw2", w.loop.time() + 3)
        assert w.dp.refreshes == []
        await asyncio.sleep(0)
        assert [(gw, round(exp)) for gw, exp, _ in w.dp.refreshes] == [("egw", 5), ("egw2", 3)]
        assert w.dp.refresh_calls == 1
    run(test)


def test_a_refresh_withdrawn_in_the_same_turn_is_not_sent():
    async def test(w: World):
        await w.started()
        await w.take("egw", 2)
        w.datapath.program("egw", w.loop.time() + 5)
        w.datapath.withdraw("egw")
        await asyncio.sleep(0)
        assert w.dp.refreshes == []
    run(test)


def test_an_armed_refresh_is_counted():
    async def test(w: World):
        await w.started()
        await w.take("egw", 2)
        w.datapath.program("egw", w.loop.time() + 5)
        await asyncio.sleep(0)  # refreshes of one turn go out together, right after it
        w.dp.refreshes[0][2].set_result(Refresh.ARMED)
        await until(lambda: w.metrics("deadman_refreshed"))
        assert w.metrics("deadman_refreshed") == [(("egw",), {})]
    run(test)


def test_a_deferred_flush_shared_by_reconciles_is_counted_once():
    async def test(w: World):
        await w.started()
        flush = concurrent.futures.Future()
        await w.take("egw", 2)
        w.datapath.request()
        (await w.reconcile(3)).done(deferred_flush=flush)
        w.datapath.request()
        (await w.reconcile(4)).done(deferred_flush=flush)
        await until(lambda: w.applied() == 4)
        flush.set_result({("egw", "steer"): 3})
        deleted = [c for c in w.metrics("conntrack_entries_deleted")]
        assert deleted == [(("egw", 3), {"reason": "steer"})]
    run(test)
