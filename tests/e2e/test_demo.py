"""``make demo`` as a newcomer runs it: every expectation holds and the lab is gone after (~15 s)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vipmgr.lab.bench import agent_available
from vipmgr.lab.netns import list_namespaces
from vipmgr.lab.runtime import destroy, state_root

pytestmark = [pytest.mark.netns, pytest.mark.slow,
              pytest.mark.skipif(not agent_available()[0], reason="agent not available")]

LAB = "e2e-demo"
VIPMGR = str(Path(sys.executable).with_name("vipmgr"))


def test_demo_tells_the_seed_story_and_cleans_up():
    destroy(LAB)
    try:
        out = subprocess.run([VIPMGR, "lab", "demo", "--name", LAB], capture_output=True,
                             text=True, timeout=120)
    finally:
        destroy(LAB)
    print(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "ok   vm-backend  (selected by the policy) is seen as the VIP: 192.0.2.100" in text
    assert "ok   vm-frontend (not selected) is seen as its worker's own uplink: 198.18.0.21" in text
    assert "ok   another node is active" in text and "gap in the stream" in text
    assert "FAIL" not in text and text.rstrip().endswith("All good.")
    assert not [ns for ns in list_namespaces() if ns.startswith(f"vl-{LAB}-")]
    assert not (state_root() / LAB).exists()
