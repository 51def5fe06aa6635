"""carrier and route probes against a real kernel, inside lab namespaces only."""

from __future__ import annotations

import json
import sys

import pytest

pytestmark = pytest.mark.netns

# Runs inside the namespace: netlink answers for the namespace the process lives in.
SCRIPT = """
import asyncio, json, sys
from vipmgr.health.checks import check
from vipmgr.health.probes import CarrierProbe, RouteProbe
kinds = {"carrier": CarrierProbe, "route": RouteProbe}
async def main():
    out = []
    for kind, kw in json.loads(sys.argv[1]):
        r = await check(kinds[kind](name="p", **kw))
        out.append([r.ok, r.detail])
    return out
print(json.dumps(asyncio.run(main())))
"""


def run_checks(ns, *probes: tuple[str, dict]) -> list[tuple[bool, str]]:
    out = ns.run([sys.executable, "-c", SCRIPT, json.dumps(probes)]).stdout
    return [tuple(item) for item in json.loads(out)]


@pytest.fixture
def pair(netns_lab):
    a, b = netns_lab.add("a"), netns_lab.add("b")
    netns_lab.link("a", "a0", "b", "b0")
    return a, b


def test_carrier_follows_link_and_peer(pair):
    a, b = pair
    assert run_checks(a, ("carrier", {"interface": "a0"}), ("carrier", {"interface": "lo"}),
                      ("carrier", {"interface": "eth9"})) == [
        (True, "carrier, operstate UP"),
        (True, "carrier, operstate UNKNOWN"),
        (False, "interface eth9 not found"),
    ]
    b.ip("link", "set", "b0", "down")
    assert run_checks(a, ("carrier", {"interface": "a0"})) == [(False, "no carrier")]
    a.ip("link", "set", "a0", "down")
    assert run_checks(a, ("carrier", {"interface": "a0"})) == [(False, "administratively down")]


def test_route_present_absent_and_interface(pair, netns_lab):
    a, _ = pair
    netns_lab.link("a", "d0", "b", "d1")
    a.set_addr("a0", "198.51.100.2/24")
    a.ip("route", "add", "203.0.113.0/24", "via", "198.51.100.1")
    a.ip("route", "add", "blackhole", "192.0.2.0/24")
    results = run_checks(
        a,
        ("route", {"destination": "203.0.113.5"}),
        ("route", {"destination": "203.0.113.5", "interface": "a0"}),
        ("route", {"destination": "203.0.113.5", "interface": "d0"}),
        ("route", {"destination": "198.18.0.1"}),
        ("route", {"destination": "192.0.2.9"}),
    )
    assert results[:3] == [
        (True, "via 198.51.100.1 dev a0"),
        (True, "via 198.51.100.1 dev a0"),
        (False, "route to 203.0.113.5 leaves via 198.51.100.1 dev a0, not dev d0"),
    ]
    assert results[3] == (False, "no route to 198.18.0.1: Network is unreachable")
    assert results[4][0] is False and results[4][1].startswith("no route to 192.0.2.9: ")
