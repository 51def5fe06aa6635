"""Cancelling the agent's tasks without ever waiting forever, and saying where one hangs.

A task that ignores its cancellation (a library call that does not return, say an
etcd watch's cancel queued behind a stalled stream) must not hold up what awaits
it: a member leaving a gateway holds the membership lock, and a leave that never
finished once kept a node out of every gateway added after it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Iterable

CANCEL_LIMIT = 1.0  # s a cancelled task gets to finish before we go on without it


def await_chain(task: asyncio.Task) -> list[str]:
    """Where a suspended task waits, innermost last (``Task.print_stack`` shows only the
    outermost coroutine frame)."""
    lines = []
    coro = task.get_coro()
    while coro is not None and getattr(coro, "cr_frame", None) is not None:
        code = coro.cr_frame.f_code
        lines.append(f'  File "{code.co_filename}", line {coro.cr_frame.f_lineno}, '
                     f"in {code.co_name}\n")
        coro = coro.cr_await
    return lines


async def cancel_all(tasks: Iterable[asyncio.Task], log: logging.Logger, what: str,
                     extra: dict, limit: float = CANCEL_LIMIT) -> None:
    """Cancel ``tasks`` and wait for them, at most ``limit`` seconds; one that is still
    running then is logged with where it waits, and left behind (it still holds a
    cancellation, so it ends as soon as its await returns)."""
    tasks = [t for t in tasks if not t.done()]
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _done, pending = await asyncio.wait(tasks, timeout=limit)
    for task in pending:
        log.warning(f"{what}: a task did not stop within {limit:g}s of its cancellation; "
                    "going on without it:\n" + "".join(await_chain(task)).rstrip(), extra=extra)
