"""One etcd watch kept open forever: re-established with backoff whenever it breaks.

Every agent loop that follows etcd (resources, placement records, authority holders,
switchover requests, the heartbeat key document) is the same loop::

    watch -> on_open() (a full re-read: what the break missed) -> on_event(e) per event
          -> broken: on_error(exc), Backoff, watch again

``on_open`` runs *after* the watch is established, so a re-read there misses nothing.
The backoff (agent/backoff.py) resets once a watch is established.
"""

from __future__ import annotations

import inspect
from typing import Any, Awaitable, Callable

from vipmgr.agent.backoff import Backoff

MaybeAwaitable = Awaitable[None] | None


async def _settle(result: MaybeAwaitable) -> None:
    if inspect.isawaitable(result):
        await result


async def watch_with_reconnect(client: Any, key: bytes, *, range_end: bytes | None = None,
                               on_open: Callable[[], MaybeAwaitable],
                               on_event: Callable[[Any], MaybeAwaitable],
                               errors: tuple[type[BaseException], ...],
                               on_error: Callable[[BaseException], None] | None = None,
                               backoff: Backoff | None = None) -> None:
    """Watch ``key`` (up to ``range_end``: a prefix) forever; cancel the task to stop.

    ``client`` is the etcd client (``watch(key, range_end=…)``); ``errors`` are what
    breaks a watch (anything else propagates: a bug is not retried); ``on_error`` hears
    each of them before the backoff.
    """
    backoff = backoff or Backoff()
    while True:
        try:
            if range_end is None:
                stream = await client.watch(key)
            else:
                stream = await client.watch(key, range_end=range_end)
            backoff.reset()
            await _settle(on_open())
            async for event in stream:
                await _settle(on_event(event))
        except errors as exc:
            if on_error is not None:
                on_error(exc)
        await backoff.wait()
