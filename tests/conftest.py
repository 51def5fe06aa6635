"""Shared fixtures: a real etcd on loopback, and namespace labs torn down on failure too."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from vipmgr.lab.etcd import EtcdServer
from vipmgr.lab.netns import NetnsLab, cleanup_prefix, netns_supported

_NETNS_OK: tuple[bool, str] | None = None


def _netns_ok() -> tuple[bool, str]:
    global _NETNS_OK
    if _NETNS_OK is None:
        _NETNS_OK = netns_supported()
    return _NETNS_OK


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "netns" in item.keywords:
            ok, why = _netns_ok()
            if not ok:
                item.add_marker(pytest.mark.skip(reason=f"netns test: {why}"))
        if "etcd" in item.keywords and shutil.which("etcd") is None:
            item.add_marker(pytest.mark.skip(reason="etcd binary missing: run 'make system-deps'"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test that drives a lab gets the tail of every lab process's log in its report
    (the agents' view of what went wrong; the lab itself is gone by the time anyone looks)."""
    outcome = yield
    rep = outcome.get_result()
    lab = getattr(item, "funcargs", {}).get("lab")
    if rep.failed and lab is not None and hasattr(lab, "log_tail"):
        for log in sorted(Path(lab.state.tmpdir).glob("*.log")):
            rep.sections.append((f"lab log {log.name} (last 40 lines)",
                                 lab.log_tail(log.stem, lines=40)))


@pytest.fixture(scope="session")
def etcd_server():
    """One etcd for the session; tests isolate themselves with their own key prefix."""
    server = EtcdServer().start()
    yield server
    server.destroy()


@pytest.fixture
def etcd_prefix(request) -> str:
    """A key prefix unique to this test, so tests sharing the session etcd never collide."""
    return f"/vipmgr-test/{request.node.name}-{os.getpid()}-{id(request)}"


@pytest.fixture
def netns_lab(request):
    """A NetnsLab whose namespaces and processes are removed when the test ends, pass or fail."""
    prefix = f"vt{os.getpid() % 100000}{request.node.nodeid.__hash__() % 1000:03d}-"
    cleanup_prefix(prefix)
    lab = NetnsLab(prefix)
    request.addfinalizer(lab.close)
    return lab
