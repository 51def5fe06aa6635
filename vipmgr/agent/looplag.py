"""How late the event loop runs: the elections' timers are late by exactly as much.

A 10 ms timer re-armed forever; its lateness is a sample. Anything that holds
the loop (a big decode, a slow callback, a thread hogging the GIL) shows up
here before it shows up as a missed heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

LOG = logging.getLogger("vipmgr.agent")
INTERVAL = 0.01
WARN_AFTER = 0.1    # a stall this long is logged (at most once per WARN_EVERY)
WARN_EVERY = 10.0


async def watch_loop_lag(node: str, on_sample: Callable[[float], None],
                         interval: float = INTERVAL) -> None:
    """Forever: sample the loop's lateness into ``on_sample``; log long stalls."""
    loop = asyncio.get_running_loop()
    last_warning = -WARN_EVERY
    worst = 0.0
    while True:
        start = loop.time()
        await asyncio.sleep(interval)
        now = loop.time()
        lag = max(0.0, now - start - interval)
        on_sample(lag)
        if lag >= WARN_AFTER:
            worst = max(worst, lag)
            if now - last_warning >= WARN_EVERY:
                LOG.warning(f"event loop stalled for {worst * 1e3:.0f} ms (timers and "
                            "heartbeats were late by as much)", extra={"node": node})
                last_warning, worst = now, 0.0
