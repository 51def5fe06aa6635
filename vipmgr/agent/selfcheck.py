"""The "datapath ready" criterion: the agent's own check of the kernel it needs.

The seed's third readiness criterion (cilium-agent Ready) becomes: the
interfaces this node would use are up with carrier, an egress route exists,
and the last dataplane reconcile succeeded (our nft table is in place).
"""

from __future__ import annotations

from typing import Iterable

from pyroute2 import IPRoute

IFF_UP = 0x1


def kernel_problems(interfaces: Iterable[str]) -> list[str]:
    """What is wrong with the named interfaces and the default route, in this netns."""
    problems: list[str] = []
    with IPRoute() as ipr:
        for name in sorted(set(interfaces)):
            links = ipr.get_links(ifname=name)
            if not links:
                problems.append(f"interface {name} does not exist")
                continue
            link = links[0]
            if not link["flags"] & IFF_UP:
                problems.append(f"interface {name} is down")
            elif link.get_attr("IFLA_CARRIER") == 0:
                problems.append(f"interface {name} has no carrier")
        if not ipr.get_default_routes(family=2):
            problems.append("no default (egress) route")
    return problems
