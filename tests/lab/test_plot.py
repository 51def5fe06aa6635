"""The bench's SVG: valid XML with a lane per node, the fault, the outage and the ARP owners."""

import xml.etree.ElementTree as ET

from vipmgr.lab.plot import Trace, outage_span, svg

NS = "{http://www.w3.org/2000/svg}"


def trace() -> Trace:
    arrivals = [(i / 100, "gw-a", True) for i in range(100)]           # 0.00 .. 0.99 via gw-a
    arrivals += [(1.15 + i / 100, "gw-b", True) for i in range(100)]   # 1.15 .. via gw-b
    arrivals += [(1.12, "worker-b", False)]                             # one wrong source
    arp = [(i / 50, "gw-a") for i in range(50)] + [(1.2 + i / 50, "gw-b") for i in range(40)]
    return Trace("crash of gw-a", 0.0, 2.2, 1.0, ["gw-a", "gw-b", "worker-b"], arrivals, arp)


def test_outage_span_is_the_gap_that_ends_after_the_fault():
    start, end = outage_span(trace())
    assert (round(start, 2), round(end, 2)) == (0.99, 1.15)


def test_svg_draws_every_lane_the_fault_and_the_outage():
    root = ET.fromstring(svg(trace()))
    texts = ["".join(t.itertext()) for t in root.iter(f"{NS}text")]
    assert {"gw-a", "gw-b", "worker-b", "fault", "outage 160 ms"} <= set(texts)
    paths = [p.get("stroke") for p in root.iter(f"{NS}path")]
    assert paths.count("#1f77b4") == 2 and paths.count("#999") == 1  # good per node, wrong
    assert paths.count("#2ca02c") == 2                                # ARP owners gw-a, gw-b
