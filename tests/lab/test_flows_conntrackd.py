"""The comparison recipe works as configured: conntrackd (FTFW, generated config) on two
gateway namespaces syncs the active's SNAT entries, and a commit on the other puts them
in its kernel with the same mapping (what keepalived's notify script does on promotion)."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "dataplane"))

from dpworld import world  # noqa: E402,F401  (the dataplane test world)
from test_ctsync_netns import (dump, established, report, serve_from,  # noqa: E402
                               start_flows, start_server)

from vipmgr.dataplane.reconcile import Dataplane  # noqa: E402
from vipmgr.lab.conntrackd import conntrackd_command, conntrackd_conf, notify_script  # noqa: E402

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(shutil.which("conntrackd") is None,
                                 reason="conntrackd is not installed (Debian package conntrackd)")]


def test_conntrackd_syncs_the_active_s_entries_and_commits_them_on_the_other(world, tmp_path):
    start_server(world)
    confs = {}
    for g, ip in (("ga", "198.51.100.11"), ("gb", "198.51.100.12")):
        wd = tmp_path / g
        wd.mkdir()
        confs[g] = wd / "conntrackd.conf"
        confs[g].write_text(conntrackd_conf(wd, "eth0", ip))
        (wd / "notify.sh").write_text(notify_script(confs[g]))
        world[g].popen(conntrackd_command(confs[g]))
    for g in confs:
        deadline = time.monotonic() + 10
        while world[g].run(["conntrackd", "-C", str(confs[g]), "-s"], check=False).returncode:
            assert time.monotonic() < deadline, f"conntrackd did not start on {g}"
            time.sleep(0.1)
    with Dataplane(world["ga"].name, 60.0) as ga, Dataplane(world["gb"].name, 60.0) as gb, \
            Dataplane(world["w"].name, 60.0) as w:
        serve_from(ga, gb, w, "ga")
        proc = start_flows(world, "vm1", 10, 4.0)
        have = {(f.key, f.nat_port) for f in established(world, "ga", 10)}
        ports = {f"sport={key[2]} " for key, _ in have}

        def synced() -> int:  # FTFW: gb's external cache fills as ga's events come
            cache = world["gb"].run(["conntrackd", "-C", str(confs["gb"]), "-e"],
                                    check=False).stdout
            return sum(any(p in line for p in ports) for line in cache.splitlines())

        deadline = time.monotonic() + 10
        while synced() < len(have):
            assert time.monotonic() < deadline, "gb's conntrackd did not receive the entries"
            time.sleep(0.2)
        sh = tmp_path / "gb" / "notify.sh"
        out = world["gb"].run(["/bin/sh", str(sh), "primary"], check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        assert {(f.key, f.nat_port) for f in dump(world, "gb")} >= have, \
            "conntrackd's commit did not put the synced entries into gb's kernel"
        report(proc)
