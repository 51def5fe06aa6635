"""An agent that cannot reach etcd yet still obeys SIGTERM, and leaves the kernel alone."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.netns

VIPMGR = str(Path(sys.executable).with_name("vipmgr"))


def test_sigterm_while_etcd_is_unreachable_exits_at_once(netns_lab):
    ns = netns_lab.add("a")
    netns_lab.add("b")
    netns_lab.link("a", "eth0", "b", "eth0")
    ns.set_addr("eth0", "192.0.2.1/24")
    agent = ns.popen([VIPMGR, "agent", "--node", "x", "--etcd", "http://192.0.2.9:2379",
                      "--metrics-addr", ""], stdout=subprocess.PIPE)
    time.sleep(2.0)
    started = time.monotonic()
    os.killpg(agent.pid, signal.SIGTERM)
    assert agent.wait(10) == 0
    assert time.monotonic() - started < 1.0
    assert "table inet vipmgr" not in ns.run(["nft", "list", "tables"]).stdout
