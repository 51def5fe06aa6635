"""A wheel built from the tree installs into a fresh venv and runs; the agent imports only what
it uses.

The wheel is built by pip (build isolation fetches setuptools from the configured index);
the fresh venv gets no pip and no network: the wheel goes in with ``--no-deps --no-index``,
and the dependencies come from this venv's site-packages through a path line (its own
``.pth`` files, among them this tree's editable install, are not processed), so the
``vipmgr`` that runs is the wheel's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HERE_SITE = sysconfig.get_paths()["purelib"]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(tmp / "dist"), str(ROOT)], capture_output=True, text=True,
                           timeout=300)
    if build.returncode != 0:
        pytest.skip(f"pip cannot build the wheel here (no index?): {build.stderr.strip()[-300:]}")
    (wheel,) = (tmp / "dist").glob("vipmgr-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, timeout=120)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True).stdout
    Path(site.strip(), "deps-from-build-venv.pth").write_text(HERE_SITE + "\n")
    return venv


def run(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIPMGR_", "PYTHON"))}
    return subprocess.run([str(venv / "bin" / "vipmgr"), *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd="/")


@pytest.mark.slow
def test_the_wheel_runs_the_cli_and_the_agent(fresh):
    where = subprocess.run([str(fresh / "bin" / "python"), "-c",
                            "import vipmgr; print(vipmgr.__file__)"], capture_output=True,
                           text=True, cwd="/").stdout
    assert where.startswith(str(fresh)), where  # the wheel's copy, not this tree
    for args in (["--help"], ["agent", "--help"], ["status", "--help"], ["lab", "--help"]):
        out = run(fresh, *args)
        assert out.returncode == 0 and "Usage:" in out.stdout, (args, out.stderr)
    out = run(fresh, "get", "egw", "--etcd", "http://127.0.0.1:9")  # nothing listens there
    assert out.returncode == 3 and "Traceback" not in out.stderr, out.stderr  # etcd unreachable
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_the_agent_does_not_import_the_lab_the_simulator_or_scapy():
    code = ("import sys; import vipmgr.cli.agent, vipmgr.agent.runtime; "
            "print(' '.join(sorted(m for m in sys.modules "
            "if m.startswith(('vipmgr', 'scapy', 'hypothesis')))))")
    mods = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.split()
    assert "vipmgr.agent.runtime" in mods
    assert [m for m in mods if m.startswith(("vipmgr.lab", "vipmgr.sim", "scapy",
                                             "hypothesis"))] == []


def test_the_containerfile_copies_what_exists():
    """The recipe is not built here (no buildah on the test machine): its inputs exist."""
    lines = (ROOT / "deploy" / "Containerfile").read_text().splitlines()
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY ") and "--from" not in line]
    assert copies and all((ROOT / src).exists() for srcs in copies for src in srcs)
