"""The self-check is woken by the kernel's own notifications, in a namespace of the test's."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.netns

# Runs inside the namespace: prints a line each time KernelChanges wakes up.
SCRIPT = """
import asyncio, sys
from vipmgr.agent.selfcheck import KernelChanges
async def main():
    loop = asyncio.get_running_loop()
    woke = asyncio.Event()
    watcher = KernelChanges(woke.set)
    watcher.start(loop)
    print("ready", flush=True)
    while True:
        await woke.wait()
        woke.clear()
        print("woke", flush=True)
asyncio.run(main())
"""


def wakes(proc, within: float) -> int:
    """How many wake-ups the script reported within ``within`` seconds (then quiet)."""
    got, deadline = b"", time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if not ready:
            break
        got += os.read(proc.stdout.fileno(), 4096)
    return got.count(b"woke")


def test_link_address_and_route_changes_wake_the_self_check(netns_lab):
    a = netns_lab.add("a")
    netns_lab.add("b")
    netns_lab.link("a", "a0", "b", "b0")
    proc = a.popen([sys.executable, "-u", "-c", SCRIPT], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        wakes(proc, 0.3)  # whatever the start-up stirred
        assert wakes(proc, 0.3) == 0, "woken with nothing changed"
        for change in (["link", "set", "a0", "down"], ["link", "set", "a0", "up"],
                       ["addr", "add", "192.0.2.1/24", "dev", "a0"],
                       ["route", "add", "203.0.113.0/24", "via", "192.0.2.2"]):
            a.ip(*change)
            assert wakes(proc, 1.0) >= 1, change
    finally:
        proc.kill()
        proc.wait(5)
