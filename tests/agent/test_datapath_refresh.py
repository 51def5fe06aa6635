"""How the agent's datapath reads a dead-man refresh's outcome (fakes, no root).

A refresh that ran too late (a loaded machine) is not a broken datapath: it must not
make the node "not ready", which would release every gateway with a false reason."""

from __future__ import annotations

import concurrent.futures

import pytest

from vipmgr.agent.datapath import NodeDatapath
from vipmgr.dataplane.kernel import KernelError
from vipmgr.dataplane.plan import GarpSettings
from vipmgr.dataplane.nftstate import Refresh


class Metrics:
    def __init__(self):
        self.refreshed = 0

    def deadman_refreshed(self, gateway: str) -> None:
        self.refreshed += 1


def done(result=None, exc=None):
    future = concurrent.futures.Future()
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
    return future


@pytest.fixture
def datapath():
    async def planner(*_):
        raise AssertionError("not planned in these tests")
    dp = NodeDatapath("ga", None, Metrics(), GarpSettings(), lambda: 0.0, planner)
    dp.book.armed = {"egw"}
    return dp


def test_armed_counts(datapath):
    datapath._refresh_outcomes(["egw"], done({"egw": Refresh.ARMED}))
    assert datapath.metrics.refreshed == 1 and not datapath.error


def test_late_is_not_a_datapath_problem(datapath):
    datapath._refresh_outcomes(["egw"], done({"egw": Refresh.LATE}))
    assert datapath.error == "" and "egw" in datapath.book.armed and not datapath._dirty.is_set()


def test_gone_while_armed_is_drift_repaired_not_an_outage(datapath):
    datapath._refresh_outcomes(["egw"], done({"egw": Refresh.GONE}))
    assert datapath.error == "" and "egw" not in datapath.book.armed
    assert datapath.book.verify_next and datapath._dirty.is_set()


def test_gone_after_a_withdraw_is_expected(datapath):
    datapath.book.armed = set()
    datapath._refresh_outcomes(["egw"], done({"egw": Refresh.GONE}))
    assert not datapath._dirty.is_set() and datapath.error == ""


def test_a_kernel_error_makes_the_datapath_not_ready(datapath):
    datapath._refresh_outcomes(["egw"], done(exc=KernelError("netlink: EPERM")))
    assert "EPERM" in datapath.error and datapath.book.verify_next
