"""``lab up``/``lab down`` ten times in a row leaves the host exactly as before."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from test_lab_runtime import seed_topology, unique_name

from vipmgr.lab.netns import list_namespaces
from vipmgr.lab.runtime import deploy, destroy, state_root

pytestmark = [pytest.mark.netns, pytest.mark.slow]  # ~17 s: ten full seed labs

CYCLES = 10


def _children() -> set[int]:
    """Live (non-zombie) child processes of this test process."""
    me, found = str(os.getpid()), set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[1] == me and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def _processes_in(inodes: set[int]) -> set[int]:
    """Processes whose network namespace is one of ``inodes``."""
    found = set()
    for ns_link in Path("/proc").glob("[0-9]*/ns/net"):
        try:
            inode = int(os.readlink(ns_link).split("[")[1].rstrip("]"))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if inode in inodes:
            found.add(int(ns_link.parent.parent.name))
    return found


def host_snapshot() -> dict:
    """What a lab could leave behind: lab namespaces, host links, state and temp dirs, children.

    Namespaces are compared by the labs' ``vl-`` prefix only: other test
    sessions on the same host create and delete their own namespaces meanwhile.
    """
    host_links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                                check=True).stdout
    root = state_root()
    return {
        "lab namespaces": sorted(ns for ns in list_namespaces() if ns.startswith("vl-")),
        "host links": sorted(line.split(":")[1].strip() for line in host_links.splitlines()),
        "state dirs": sorted(os.listdir(root)) if root.exists() else None,
        "temp dirs": sorted(p.name for p in Path(tempfile.gettempdir()).glob("vipmgr-lab-*")),
        "children": sorted(_children()),
    }


def test_up_down_ten_times_leaves_the_host_as_before(request):
    name = unique_name(request.node.nodeid)
    destroy(name)
    before = host_snapshot()
    ups, downs = [], []
    try:
        for _ in range(CYCLES):
            start = time.monotonic()
            lab = deploy(seed_topology(name))
            ups.append(time.monotonic() - start)
            assert lab.curl("vm-frontend") == "198.18.0.21"
            inodes = {os.stat(f"/run/netns/{st.netns}").st_ino for st in lab.state.nodes.values()}
            assert _processes_in(inodes)  # etcd, echo and the placeholders run in there
            start = time.monotonic()
            destroy(name)
            downs.append(time.monotonic() - start)
            assert not _processes_in(inodes)
            assert host_snapshot() == before
    finally:
        destroy(name)
    print(f"\nlab up: min {min(ups):.2f} s, max {max(ups):.2f} s; "
          f"lab down: max {max(downs):.2f} s over {CYCLES} cycles")
