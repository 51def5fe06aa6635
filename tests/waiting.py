"""Polling with a deadline, for tests that watch a real system converge."""

import asyncio
import time


def wait_for(predicate, timeout: float, what: str, step: float = 0.05):
    """The first truthy value of ``predicate()`` within ``timeout`` seconds, or fail."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def wait_for_async(predicate, timeout: float, what: str, step: float = 0.01):
    """``wait_for`` inside an event loop: polls without blocking it."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        await asyncio.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def holds_for(predicate, seconds: float, what: str, step: float = 0.05):
    """Fail at the first falsy ``predicate()`` during ``seconds``: sampled throughout the
    window, once at its start and once more after its end, so a slow predicate still
    covers all of it. Returns the last value."""
    deadline = time.monotonic() + seconds
    samples = 0
    while True:
        past = time.monotonic() >= deadline  # read before sampling: the last sample is late
        value = predicate()
        samples += 1
        if not value:
            raise AssertionError(f"{what} stopped holding after {samples} sample(s) "
                                 f"within {seconds}s (got: {value!r})")
        if past:
            return value
        time.sleep(min(step, max(0.0, deadline - time.monotonic())))
