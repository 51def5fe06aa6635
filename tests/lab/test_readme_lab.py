"""The README's Lab steps, run as written: the VIP for vm-backend, a crash fault that works.

The lines are parsed out of README.md (the first ``sh`` block of the "## Lab"
section), so the test breaks when the README drifts from what the lab does.
Only the lab name differs: ``$VIPMGR_LAB`` keeps this lab apart from a user's.
A line commented with an address must print exactly that address; ``vipmgr
status`` may say degraded (exit 1) right after a crash, but must show another
active than before it and "last failover: <old> -> <new>"; every other line exits 0.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from test_lab_runtime import unique_name

from vipmgr.lab.runtime import destroy

pytestmark = [pytest.mark.netns, pytest.mark.slow]  # ~15 s: one seed lab with agents

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_lab_lines() -> list[tuple[str, str]]:
    """(command, comment) for each command line of the Lab section's first sh block."""
    text = README.read_text()
    section = text[text.index("\n## Lab\n"):]
    section = section[:section.index("\n## ", 1)]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README's Lab section has no sh block"
    lines = []
    for raw in block.group(1).splitlines():
        command, _, comment = raw.partition("#")
        if command.strip():
            lines.append((command.strip(), comment.strip()))
    return lines


def expected_address(comment: str) -> str | None:
    word = comment.split()[0] if comment else ""
    try:
        return str(ipaddress.ip_address(word))
    except ValueError:
        return None


def test_readme_names_the_vip_and_a_crash():
    commands = [c for c, _ in readme_lab_lines()]
    assert commands[0] == "vipmgr lab up" and commands[-1] == "vipmgr lab down"
    assert any(re.fullmatch(r"vipmgr lab fault \S+ crash", c) for c in commands)
    assert [expected_address(n) for c, n in readme_lab_lines() if c.startswith("vipmgr lab curl")] \
        == ["192.0.2.100"] * 3


def test_readme_lab_steps_run_as_written(request):
    name = unique_name(request.node.nodeid)
    env = dict(os.environ, VIPMGR_LAB=name,
               PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
    env.pop("VIPMGR_ETCD", None)
    cwd = README.parent
    actives: list[str] = []  # the active each status line shows
    crashed = False
    try:
        for step, (command, comment) in enumerate(readme_lab_lines()):
            out = subprocess.run(shlex.split(command), cwd=cwd, env=env, capture_output=True,
                                 text=True, timeout=90)
            allowed = (0, 1) if command.endswith("vipmgr status") else (0,)
            assert out.returncode in allowed, (step, command, out.returncode, out.stdout,
                                               out.stderr)
            want = expected_address(comment)
            if want is not None:
                assert out.stdout.strip() == want, (command, out.stdout, out.stderr)
            if command.endswith("vipmgr status"):
                active = re.search(r"^  active: (\S+)", out.stdout, re.M)
                assert active and active.group(1) != "<none>", (command, out.stdout)
                actives.append(active.group(1))
                if crashed:  # the crash moved the role, and status names the move
                    old, new = actives[0], actives[-1]
                    assert new != old, (old, out.stdout)
                    assert f"last failover: {old} -> {new}" in out.stdout, out.stdout
                    crashed = False
            if re.fullmatch(r"vipmgr lab fault \S+ crash", command):
                crashed = True
        assert len(actives) >= 2, actives
    finally:
        destroy(name)
