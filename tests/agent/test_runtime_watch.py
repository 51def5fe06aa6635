"""agent/watch.py: one watch kept open forever, as every agent loop that follows etcd uses it
(runtime watches, the heartbeat key document), and the runtime's resync retry on Backoff."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from vipmgr.agent.backoff import Backoff
from vipmgr.agent.config import load_config
from vipmgr.agent.metrics import AgentMetrics
from vipmgr.agent.runtime import Agent
from vipmgr.agent.watch import watch_with_reconnect


class Broken(ConnectionError):
    pass


class FakeClient:
    """Each watch() plays the next script: a list of events, then a Broken (or the end)."""

    def __init__(self, scripts):
        self.scripts = list(scripts)
        self.calls: list[tuple[bytes, dict]] = []
        self.done = asyncio.Event()

    async def watch(self, key, **kw):
        self.calls.append((key, kw))
        if not self.scripts:
            self.done.set()
            await asyncio.Event().wait()   # the last watch stays open
        script = self.scripts.pop(0)
        if script == "refuse":
            raise Broken("refused")

        async def events():
            for item in script:
                if isinstance(item, BaseException):
                    raise item
                yield item
        return events()


class RecordingBackoff(Backoff):
    def __init__(self):
        super().__init__(first=0.001, cap=0.004)
        self.waits: list[float] = []

    async def wait(self):
        self.waits.append(self.delay)
        await super().wait()


def run_until_done(client, **kw):
    async def main():
        task = asyncio.create_task(watch_with_reconnect(client, b"/p/", **kw))
        await asyncio.wait_for(client.done.wait(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    asyncio.run(main())


def test_reopens_after_each_break_rereads_and_delivers_every_event():
    client = FakeClient([["a", "b", Broken("1")], "refuse", ["c"]])
    log, errors, backoff = [], [], RecordingBackoff()

    async def on_open():
        log.append("open")

    run_until_done(client, range_end=b"/p0", on_open=on_open, on_event=log.append,
                   errors=(Broken,), on_error=errors.append, backoff=backoff)
    assert log == ["open", "a", "b", "open", "c"]   # the 4th watch never opens here
    assert [str(e) for e in errors] == ["1", "refused"]
    assert all(kw == {"range_end": b"/p0"} for _k, kw in client.calls)
    # a refused watch doubles the delay; an established one resets it
    assert backoff.waits == [0.001, 0.002, 0.001]


def test_a_single_key_watch_passes_no_range_and_async_handlers_are_awaited():
    client = FakeClient([["x"]])
    seen = []

    async def on_event(e):
        await asyncio.sleep(0)
        seen.append(e)

    run_until_done(client, on_open=lambda: None, on_event=on_event, errors=(Broken,),
                   backoff=RecordingBackoff())
    assert seen == ["x"] and client.calls[0] == (b"/p/", {})


def test_an_unexpected_error_is_not_retried():
    client = FakeClient([[KeyError("bug")]])
    with pytest.raises(KeyError):
        asyncio.run(watch_with_reconnect(client, b"/p/", on_open=lambda: None,
                                         on_event=lambda e: None, errors=(Broken,)))


def test_resync_retries_on_the_shared_backoff():
    agent = Agent(load_config(None, node="gw-a", etcd="http://192.0.2.9:2379"),
                  AgentMetrics("gw-a", CollectorRegistry()))
    attempts = []
    done = asyncio.Event()

    async def resync_now():
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) < 3:
            raise ConnectionError("etcd down")
        done.set()

    agent._resync_now = resync_now

    async def main():
        task = asyncio.create_task(agent._resync_loop())
        agent._resync.set()
        await asyncio.wait_for(done.wait(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    try:
        asyncio.run(main())
    finally:
        agent.inventory.close()
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert len(attempts) == 3
    assert 0.09 <= gaps[0] < 0.19 and 0.19 <= gaps[1] < 0.39, gaps  # 0.1 s, then doubled
