"""``vipmgr events [GATEWAY]``: the gateways' history, and the Events section of ``describe egw``.

The agents append every role change and failover (with its reason and
duration) to etcd, the CLI appends refused requests; the history is bounded
per gateway (:mod:`vipmgr.store.events`).
"""

from __future__ import annotations

import asyncio
import signal
import time

import click

from vipmgr.cli.common import dump, store_command
from vipmgr.store import events as history_store
from vipmgr.store.events import GatewayEvent
from vipmgr.store.resources import ResourceStore

HEADERS = ("AGE", "GATEWAY", "NODE", "KIND", "REASON", "CHANGE", "DETAIL")


def age(ts: float, now: float) -> str:
    secs = max(0.0, now - ts)
    if secs < 120:
        return f"{secs:.1f}s"
    if secs < 7200:
        return f"{int(secs // 60)}m"
    return f"{int(secs // 3600)}h"


def change_text(event: GatewayEvent) -> str:
    if event.kind == "failover":
        took = f"{event.previous} -> {event.node}" if event.previous else f"{event.node} took it"
        return took + (f" in {event.duration_ms:g} ms" if event.duration_ms is not None else "")
    if event.kind == "role":
        return f"{event.old} -> {event.new}"
    return "refused"


def rows(events: list[GatewayEvent], now: float, with_gateway: bool = True) -> list[list[str]]:
    return [[age(e.at, now), *([e.gateway] if with_gateway else []), e.node or "-", e.kind,
             e.reason or "-", change_text(e), e.detail] for e in events]


def table(headers: tuple[str, ...] | list[str], body: list[list[str]], indent: str = "") -> str:
    """kubectl-style columns; the last column is never padded."""
    cells = [list(headers)] + body
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers) - 1)]
    return "\n".join(indent + "   ".join([*(c.ljust(w) for c, w in zip(r, widths)), r[-1]]).rstrip()
                     for r in cells)


async def describe_events(store: ResourceStore, gateway: str, limit: int = 10) -> str:
    """The Events section of ``describe egw GATEWAY``: its newest ``limit`` events."""
    events = await history_store.history(store.client, store.layout.prefix, gateway, limit)
    if not events:
        return "Events: <none>"
    headers = [h for h in HEADERS if h != "GATEWAY"]
    return "Events:\n" + table(headers, rows(events, time.time(), with_gateway=False), "  ")


def render(events: list[GatewayEvent], now: float) -> str:
    if not events:
        return "No events."
    return table(HEADERS, rows(events, now))


async def record_refusal(store: ResourceStore, gateway: str, node: str, what: str,
                         why: str) -> None:
    """A request the CLI turned down, in the gateway's history (``reason`` names the request)."""
    await history_store.append(store.client, store.layout.prefix, GatewayEvent(
        gateway, node, "refusal", time.time(), what, detail=why))


@click.command("events")
@click.argument("gateway", required=False)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True,
              help="newest events to show")
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text")
@click.option("-w", "--watch", is_flag=True, help="keep printing new events (Ctrl-C stops)")
@click.option("--interval", type=click.FloatRange(0.2, 60), default=1.0, show_default=True,
              help="seconds between reads with --watch")
@store_command
async def events(store: ResourceStore, gateway: str | None, limit: int, output: str,
                 watch: bool, interval: float) -> int:
    """Role changes, failovers (reason, duration) and refusals, oldest first.

    \b
    vipmgr events                  # every gateway
    vipmgr events egress-gw -o yaml
    vipmgr events --watch          # then new events as they happen
    """
    stop = asyncio.Event()
    if watch:
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
    found = await history_store.history(store.client, store.layout.prefix, gateway, limit)
    if output != "text":
        dump({"events": [e.to_dict() for e in found]}, output)
        return 0
    click.echo(render(found, time.time()))
    if not watch:
        return 0
    seen = {(e.at, e.node, e.kind) for e in found}
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except asyncio.TimeoutError:
            pass
        new = [e for e in await history_store.history(store.client, store.layout.prefix, gateway)
               if (e.at, e.node, e.kind) not in seen]
        for e in new:
            seen.add((e.at, e.node, e.kind))
            click.echo(table(HEADERS, rows([e], time.time())).splitlines()[1])
    return 0
