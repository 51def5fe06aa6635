"""The stop is bounded: whatever hangs after SIGTERM, the agent exits and says what hung."""

import subprocess
import sys
import time

from vipmgr.agent.runtime import SHUTDOWN_LIMIT

# An agent whose cleanup never ends (a task ignoring cancellation, a thread stuck in a
# kernel call ... modelled by a sleep). No etcd and no kernel are touched.
STUCK = """
import asyncio
from prometheus_client import CollectorRegistry
from vipmgr.agent.config import load_config
from vipmgr.agent.logs import setup_logging
from vipmgr.agent.metrics import AgentMetrics
from vipmgr.agent.runtime import Agent

setup_logging("text", "info")
agent = Agent(load_config(None, node="x", etcd="http://192.0.2.9:2379"),
              AgentMetrics("x", CollectorRegistry()))

async def stuck_in_cleanup():
    await asyncio.sleep(3600)

agent._cleanup = stuck_in_cleanup
asyncio.run(agent.shutdown())
"""


def test_a_hung_cleanup_is_cut_short_with_the_stacks_of_what_hung():
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", STUCK], capture_output=True, text=True,
                         timeout=30)
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    assert SHUTDOWN_LIMIT <= took < SHUTDOWN_LIMIT + 3.0, took  # + interpreter start-up
    assert f"shutdown took longer than {SHUTDOWN_LIMIT:g}s" in out.stderr
    assert "stuck_in_cleanup" in out.stderr, out.stderr  # the task stack names the culprit
    assert "Thread 0x" in out.stderr or "Current thread" in out.stderr  # faulthandler's dump
