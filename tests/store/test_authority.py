"""The authority transactions against a real etcd: acquire, contention, challenge
answered / unanswered (depose), release, lease expiry, and the watch."""

from __future__ import annotations

import asyncio

import aetcd
import pytest

from vipmgr.core.messages import (
    OK, REFUSED, UNREACHABLE, Acquire, Answer, Confirm, Depose, DropChallenge, GrantLease,
    KeepAlive, PostChallenge, Release, RevokeLease, Vacate, Watch,
)
from vipmgr.store.authority import AuthorityExecutor

pytestmark = pytest.mark.etcd
GW = "gw-a"


def run(coro):
    return asyncio.run(coro)


class Pair:
    """Two nodes' executors for one gateway on one etcd, with fresh op ids."""

    def __init__(self, server, prefix: str, updates: list | None = None):
        self.client = aetcd.Client(host=server.host, port=server.client_port)
        self.a = AuthorityExecutor(self.client, GW, "a", prefix=prefix, timeout=2.0)
        self.b = AuthorityExecutor(self.client, GW, "b", prefix=prefix, timeout=2.0,
                                   on_update=updates.append if updates is not None else None)
        self._op = 0

    def op(self, cls, **kw):
        self._op += 1
        return cls(op_id=self._op, **kw)

    async def lease(self, ex: AuthorityExecutor, ttl: int = 5) -> int:
        res = await ex.run(self.op(GrantLease, ttl=ttl))
        assert res.outcome == OK and res.lease
        return res.lease

    async def close(self):
        await self.client.close()


def run_pair(server, prefix: str, body, updates: list | None = None) -> None:
    """Run ``await body(pair)`` with a fresh Pair that is closed whatever happens."""
    async def go():
        pair = Pair(server, prefix, updates)
        try:
            await body(pair)
        finally:
            await pair.close()
    run(go())


def test_acquire_then_contended_acquire_is_refused(etcd_server, etcd_prefix):
    async def go(p: Pair):
        la, lb = await p.lease(p.a), await p.lease(p.b)
        won = await p.a.run(p.op(Acquire, lease=la, term_rev=0))
        assert won.outcome == OK
        assert won.view.holder == "a" and won.view.epoch == won.revision
        assert won.view.holder_lease == la and won.view.term_rev == won.revision
        lost = await p.b.run(p.op(Acquire, lease=lb, term_rev=0))
        assert lost.outcome == REFUSED and lost.view.holder == "a"
        assert (await p.a.run(p.op(Confirm, epoch=won.revision))).outcome == OK
        assert (await p.b.run(p.op(Confirm, epoch=won.revision + 99))).outcome == REFUSED
    run_pair(etcd_server, etcd_prefix, go)


def test_challenge_answered_keeps_the_holder(etcd_server, etcd_prefix):
    async def go(p: Pair):
        la, lb = await p.lease(p.a), await p.lease(p.b)
        epoch = (await p.a.run(p.op(Acquire, lease=la, term_rev=0))).revision
        posted = await p.b.run(p.op(PostChallenge, lease=lb, epoch=epoch, term_rev=0,
                                    hears=0, priority=10, preempt=False))
        assert posted.outcome == OK
        (ch,) = posted.view.challenges
        assert (ch.challenger, ch.epoch, ch.rev, ch.lease, ch.answered) == \
            ("b", epoch, posted.revision, lb, False)
        answered = await p.a.run(p.op(Answer, epoch=epoch, challenge=ch))
        assert answered.outcome == OK and answered.view.challenges[0].answered
        # the answered challenge can no longer depose the holder
        depose = await p.b.run(p.op(Depose, epoch=epoch, term_rev=0,
                                    challenge_rev=posted.revision))
        assert depose.outcome == REFUSED and depose.view.holder == "a"
        dropped = await p.b.run(p.op(DropChallenge))
        assert dropped.outcome == OK and dropped.view.challenges == ()
    run_pair(etcd_server, etcd_prefix, go)


def test_unanswered_challenge_deposes_then_challenger_acquires(etcd_server, etcd_prefix):
    async def go(p: Pair):
        la, lb = await p.lease(p.a), await p.lease(p.b)
        epoch = (await p.a.run(p.op(Acquire, lease=la, term_rev=0))).revision
        posted = await p.b.run(p.op(PostChallenge, lease=lb, epoch=epoch, term_rev=0,
                                    hears=1, priority=10, preempt=False))
        deposed = await p.b.run(p.op(Depose, epoch=epoch, term_rev=0,
                                     challenge_rev=posted.revision))
        assert deposed.outcome == OK
        v = deposed.view
        assert v.holder is None and v.vacated and v.successor == "b" and v.challenges == ()
        assert (await p.b.run(p.op(RevokeLease, lease=la))).outcome == OK
        assert (await p.a.run(p.op(KeepAlive, lease=la))).outcome == REFUSED
        # the old holder can neither confirm nor answer any more
        assert (await p.a.run(p.op(Confirm, epoch=epoch))).outcome == REFUSED
        took = await p.b.run(p.op(Acquire, lease=lb, term_rev=deposed.revision))
        assert took.outcome == OK and took.view.holder == "b" and took.revision > epoch
    run_pair(etcd_server, etcd_prefix, go)


def test_release_hands_over_at_once(etcd_server, etcd_prefix):
    async def go(p: Pair):
        la, lb = await p.lease(p.a), await p.lease(p.b)
        epoch = (await p.a.run(p.op(Acquire, lease=la, term_rev=0))).revision
        rel = await p.a.run(p.op(Release, epoch=epoch, successor="b"))
        assert rel.outcome == OK and rel.view.vacated and rel.view.successor == "b"
        assert rel.view.vacated_by == "a"
        assert (await p.a.run(p.op(Release, epoch=epoch, successor=None))).outcome == REFUSED
        took = await p.b.run(p.op(Acquire, lease=lb, term_rev=rel.view.term_rev))
        assert took.outcome == OK
    run_pair(etcd_server, etcd_prefix, go)


def test_lease_expiry_leaves_term_held_and_needs_the_challenge_path(etcd_server, etcd_prefix):
    async def go(p: Pair):
        la, lb = await p.lease(p.a, ttl=1), await p.lease(p.b, ttl=30)
        epoch = (await p.a.run(p.op(Acquire, lease=la, term_rev=0))).revision
        await asyncio.sleep(2.5)  # etcd's lease granularity is whole seconds
        assert (await p.a.run(p.op(KeepAlive, lease=la))).outcome == REFUSED
        seen = await p.b.run(p.op(Confirm, epoch=epoch))
        v = seen.view
        assert seen.outcome == REFUSED and v.holder is None and not v.vacated
        assert v.term_node == "a" and v.term_rev == epoch
        # a plain acquire must not skip the challenge: the term is still held
        assert (await p.b.run(p.op(Acquire, lease=lb, term_rev=0))).outcome == REFUSED
        posted = await p.b.run(p.op(PostChallenge, lease=lb, epoch=0, term_rev=v.term_rev,
                                    hears=0, priority=1, preempt=False))
        assert posted.outcome == OK
        deposed = await p.b.run(p.op(Depose, epoch=0, term_rev=v.term_rev,
                                     challenge_rev=posted.revision))
        assert deposed.outcome == OK and deposed.view.vacated
        took = await p.b.run(p.op(Acquire, lease=lb, term_rev=deposed.revision))
        assert took.outcome == OK and took.view.holder == "b"
        # the old holder's vacate is refused now that the term moved on
        assert (await p.a.run(p.op(Vacate, term_rev=epoch))).outcome == REFUSED
        # and an acquire bound to a lease that no longer exists is refused, not an error
        assert (await p.a.run(p.op(Acquire, lease=la, term_rev=0))).outcome == REFUSED
    run_pair(etcd_server, etcd_prefix, go)


def test_watch_reports_changes_and_unreachable_etcd_is_reported(etcd_server, etcd_prefix):
    async def go():
        updates: list = []
        p = Pair(etcd_server, etcd_prefix, updates)
        try:
            watch = asyncio.create_task(p.b.run(p.op(Watch)))
            for _ in range(100):
                if updates:
                    break
                await asyncio.sleep(0.02)
            assert updates and updates[0].view.holder is None
            la = await p.lease(p.a)
            epoch = (await p.a.run(p.op(Acquire, lease=la, term_rev=0))).revision
            for _ in range(100):
                if updates[-1].view.epoch == epoch:
                    break
                await asyncio.sleep(0.02)
            assert updates[-1].view.holder == "a"
            watch.cancel()
        finally:
            await p.close()
        dead = aetcd.Client(host="127.0.0.1", port=9)  # nothing listens on discard
        ex = AuthorityExecutor(dead, GW, "c", prefix=etcd_prefix, timeout=0.2)
        assert (await ex.run(GrantLease(op_id=1, ttl=2))).outcome == UNREACHABLE
    run(go())
