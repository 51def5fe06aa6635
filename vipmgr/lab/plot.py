"""One failover trial drawn as an SVG, by hand (no plotting library): what the bench measured.

Two bands per node: the datagrams it delivered to the echo host (one tick per
arrival, grey when the source was wrong) and the ARP probes for the VIP it
answered. The fault is a red line, the outage (the longest gap in good
arrivals after the fault) a shaded span labelled with its length. Time runs
left to right in milliseconds from the fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

WIDTH, LEFT, RIGHT, TOP, LANE, BAND = 960, 110, 20, 40, 34, 12


@dataclass
class Trace:
    """What one trial's instruments saw, in CLOCK_MONOTONIC seconds."""

    title: str
    start: float
    end: float
    fault_at: float
    nodes: list[str]
    arrivals: list[tuple[float, str, bool]] = field(default_factory=list)  # (t, node, good)
    arp: list[tuple[float, str]] = field(default_factory=list)            # (t, node)


def outage_span(trace: Trace) -> tuple[float, float]:
    """(start, end) of the longest gap between good arrivals that ends after the fault."""
    good = sorted(t for t, _node, ok in trace.arrivals if ok)
    before = [t for t in good if t <= trace.fault_at]
    points = before[-1:] + [t for t in good if t > trace.fault_at]
    if len(points) < 2:
        return (points[0] if points else trace.fault_at, trace.end)
    return max(zip(points, points[1:]), key=lambda ab: ab[1] - ab[0])


def svg(trace: Trace) -> str:
    span = max(trace.end - trace.start, 1e-3)
    plot_w = WIDTH - LEFT - RIGHT
    height = TOP + LANE * len(trace.nodes) + 50

    def x(t: float) -> float:
        return round(LEFT + (t - trace.start) / span * plot_w, 1)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{LEFT}" y="18" font-size="14">{escape(trace.title)}</text>']
    gap = outage_span(trace)
    bottom = TOP + LANE * len(trace.nodes)
    out.append(f'<rect x="{x(gap[0])}" y="{TOP - 6}" '
               f'width="{max(1.0, round(x(gap[1]) - x(gap[0]), 1))}"'
               f' height="{bottom - TOP + 6}" fill="#fde2e2"/>')
    out.append(f'<text x="{x(gap[1]) + 4}" y="{TOP - 10}" fill="#b00">outage '
               f'{(gap[1] - gap[0]) * 1000:.0f} ms</text>')
    for i, node in enumerate(trace.nodes):
        y = TOP + LANE * i
        out.append(f'<text x="{LEFT - 8}" y="{y + BAND + 4}" text-anchor="end">{escape(node)}</text>')
        out.append(f'<line x1="{LEFT}" y1="{y + LANE - 3}" x2="{WIDTH - RIGHT}" y2="{y + LANE - 3}" '
                   'stroke="#eee"/>')
        for good, colour in ((True, "#1f77b4"), (False, "#999")):
            ticks = "".join(f"M{x(t)} {y}v{BAND}" for t, n, ok in trace.arrivals
                            if n == node and ok == good)
            if ticks:
                out.append(f'<path d="{ticks}" stroke="{colour}" stroke-width="0.6"/>')
        arp = "".join(f"M{x(t)} {y + BAND + 3}v{BAND - 4}" for t, n in trace.arp
                      if n == node and trace.start <= t <= trace.end)  # the prober outlasts it
        if arp:
            out.append(f'<path d="{arp}" stroke="#2ca02c" stroke-width="1.2"/>')
    out.append(f'<line x1="{x(trace.fault_at)}" y1="{TOP - 6}" x2="{x(trace.fault_at)}" '
               f'y2="{bottom}" stroke="#d62728" stroke-width="1.5"/>')
    out.append(f'<text x="{x(trace.fault_at) + 4}" y="{bottom + 14}" fill="#d62728">fault</text>')
    step = 500 if span > 2 else 250
    first = -int((trace.fault_at - trace.start) * 1000 // step) * step
    for ms in range(first, int((trace.end - trace.fault_at) * 1000) + 1, step):
        tx = x(trace.fault_at + ms / 1000)
        if LEFT <= tx <= WIDTH - RIGHT:
            out.append(f'<line x1="{tx}" y1="{bottom}" x2="{tx}" y2="{bottom + 4}" stroke="#333"/>')
            out.append(f'<text x="{tx}" y="{bottom + 28}" text-anchor="middle">{ms:+d} ms</text>')
    legend_y = height - 6
    out.append(f'<text x="{LEFT}" y="{legend_y}"><tspan fill="#1f77b4">| datagram delivered '
               '(source = VIP)</tspan>   <tspan fill="#999">| wrong source</tspan>   '
               '<tspan fill="#2ca02c">| answered ARP for the VIP</tspan></text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
