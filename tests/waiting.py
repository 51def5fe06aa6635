"""Polling with a deadline, for tests that watch a real system converge."""

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
