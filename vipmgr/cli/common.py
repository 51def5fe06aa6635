"""What every store-backed command shares: etcd options, one event loop, error → exit code."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from typing import Any, Awaitable, Callable, Sequence

import aetcd.exceptions
import click
import grpc
import yaml

from vipmgr.resources.errors import ValidationError
from vipmgr.store.client import EtcdSettings, EtcdUnavailable, connect
from vipmgr.store.resources import (
    ConflictError,
    CorruptObjectError,
    KeyLayout,
    NotFoundError,
    ResourceStore,
)

EXIT_PROBLEM = 1
EXIT_USAGE = 2  # click's own code for bad options
EXIT_UNREACHABLE = 3
MAX_PRINTED = 100  # problems printed in full; an apply of 10,000 objects may have more


def etcd_options(fn: Callable) -> Callable:
    """--etcd, --etcd-prefix, TLS and auth options; env VIPMGR_ETCD / VIPMGR_ETCD_PREFIX."""
    options = [
        click.option("--etcd", "etcd", metavar="URL[,URL…]",
                     help="etcd endpoints (default $VIPMGR_ETCD or http://127.0.0.1:2379)"),
        click.option("--etcd-prefix", "etcd_prefix", metavar="PREFIX",
                     help="key prefix (default $VIPMGR_ETCD_PREFIX or /vipmgr)"),
        click.option("--cacert", type=click.Path(exists=True, dir_okay=False),
                     help="CA bundle to verify etcd's certificate"),
        click.option("--cert", type=click.Path(exists=True, dir_okay=False),
                     help="client certificate for etcd"),
        click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False),
                     help="client key for etcd"),
        click.option("--user", help="etcd user (with --password)"),
        click.option("--password", help="etcd password"),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def settings_from(kwargs: dict[str, Any]) -> EtcdSettings:
    """Pop the etcd options out of a command's kwargs into settings."""
    try:
        return EtcdSettings.from_options(
            kwargs.pop("etcd"), kwargs.pop("etcd_prefix"), cacert=kwargs.pop("cacert"),
            cert=kwargs.pop("cert"), key=kwargs.pop("key_file"), user=kwargs.pop("user"),
            password=kwargs.pop("password"))
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)


def print_problems(problems: Sequence[Any], level: str, limit: int = MAX_PRINTED) -> None:
    """``level: problem`` lines on stderr; past ``limit`` one line says how many more."""
    for problem in problems[:limit]:
        click.echo(f"{level}: {problem}", err=True)
    if len(problems) > limit:
        click.echo(f"{level}: … and {len(problems) - limit:,} more like these", err=True)


def fail(message: str, code: int = EXIT_PROBLEM) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def run_with_store(settings: EtcdSettings,
                   body: Callable[[ResourceStore], Awaitable[int | None]]) -> None:
    """Connect, run ``body``, close; turn the expected failures into one line + exit code."""

    async def main() -> int | None:
        client = await connect(settings)
        try:
            return await body(ResourceStore(client, KeyLayout(settings.prefix)))
        finally:
            await client.close()

    try:
        code = asyncio.run(main())
    except EtcdUnavailable as exc:
        fail(str(exc), EXIT_UNREACHABLE)
    except (aetcd.exceptions.ConnectionFailedError, aetcd.exceptions.ConnectionTimeoutError,
            grpc.RpcError) as exc:
        fail(f"etcd at {settings.describe()} failed during the request: {exc}", EXIT_UNREACHABLE)
    except ValidationError as exc:
        print_problems(exc.problems, "error")
        click.echo("nothing was changed", err=True)
        sys.exit(EXIT_PROBLEM)
    except (ConflictError, NotFoundError, CorruptObjectError) as exc:
        fail(str(exc).strip("'\""))
    sys.exit(code or 0)


def store_command(fn: Callable[..., Awaitable[int | None]]) -> Callable[..., None]:
    """Wrap ``async fn(store, **kwargs)`` as a click callback with etcd options."""

    @etcd_options
    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> None:
        settings = settings_from(kwargs)
        run_with_store(settings, lambda store: fn(store, **kwargs))

    return wrapper


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """kubectl-style columns: upper-case headers, three spaces between columns."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("   ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def dump(data: Any, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=False))
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())
