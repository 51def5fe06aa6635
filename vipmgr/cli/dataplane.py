"""``vipmgr dataplane show|flush``: what vipmgr programmed in this node's kernel, and undo it.

Both act on the network namespace the command runs in (``--netns`` to point at a
named one, e.g. a lab node) and only on vipmgr's own objects (docs/dataplane.md).
"""

from __future__ import annotations

from typing import Callable, TypeVar

import click

from vipmgr.cli.common import fail

T = TypeVar("T")
_NETNS = click.option("--netns", metavar="NAME",
                      help="operate inside this named network namespace (default: the current one)")


def _on_dataplane(netns: str | None, body: Callable[..., T]) -> T:
    """Run ``body(dataplane)``; a kernel failure becomes one error line and exit code 1."""
    from vipmgr.dataplane.kernel import KernelError
    from vipmgr.dataplane.reconcile import Dataplane

    try:
        with Dataplane(netns) as dp:
            return body(dp)
    except KernelError as exc:
        fail(str(exc))
        raise


@click.group()
def dataplane() -> None:
    """Inspect or remove vipmgr's kernel state on this node."""


@dataplane.command()
@_NETNS
def show(netns: str | None) -> None:
    """Print vipmgr's nft tables, addresses, routes and rules here."""
    click.echo(_on_dataplane(netns, lambda dp: dp.show()))


@dataplane.command()
@_NETNS
def flush(netns: str | None) -> None:
    """Remove everything vipmgr programmed here (stop the agent first, or it re-creates it)."""
    report = _on_dataplane(netns, lambda dp: dp.flush())
    for change in report.changes:
        click.echo(change)
    for (gateway, reason), n in report.conntrack_deleted.items():
        click.echo(f"conntrack: {reason} {gateway}: {n} entries deleted")
    if not report:
        click.echo("nothing to remove")
