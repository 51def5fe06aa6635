"""Retry pacing for the agent's etcd loops: 0.1 s, doubling, at most 2 s; reset on success."""

from __future__ import annotations

import asyncio

FIRST, MAX = 0.1, 2.0


class Backoff:
    """``await backoff.wait()`` after a failure; ``backoff.reset()`` after a success."""

    def __init__(self, first: float = FIRST, cap: float = MAX) -> None:
        self.first, self.cap = first, cap
        self.delay = first

    def reset(self) -> None:
        self.delay = self.first

    async def wait(self) -> None:
        await asyncio.sleep(self.delay)
        self.delay = min(self.cap, self.delay * 2)
