"""``vipmgr keys``: the heartbeat keys in etcd (status, rotate) and the etcd roles.

    vipmgr keys status [-o json]          which key signs, which are accepted until when
    vipmgr keys rotate [--if-due] [--every 24h] [--force]
    vipmgr keys roles [--node N …] [--apply]   etcdctl commands for least-privilege users

Secrets are never printed. docs/security.md explains the design.
"""

from __future__ import annotations

import time
from typing import Any

import aetcd.exceptions
import click
import grpc

from vipmgr.cli.common import dump, fail, print_table, store_command
from vipmgr.config.durations import format_duration, parse_duration
from vipmgr.config.errors import ConfigError
from vipmgr.resources.models import KIND_BY_KIND
from vipmgr.store.keys import (KeyDoc, KeyDocError, RotationRefused, keys_key,
                               permission_denied, read_keys, rotate_keys, utc)
from vipmgr.store.resources import ResourceStore
from vipmgr.store.roles import apply_roles, etcdctl_script, roles_for

EXIT_NO_KEYS = 1


@click.group("keys")
def keys() -> None:
    """Heartbeat authentication keys (kept in etcd; agents follow them)."""


def _rows(doc: KeyDoc, now: float) -> list[dict[str, Any]]:
    signing = doc.signing(now)
    out = []
    for role, key in (("current", doc.current), ("previous", doc.previous)):
        if key is None:
            continue
        retired = key.retires is not None and now >= key.retires
        state = "signing" if key is signing else ("retired" if retired else "accepted")
        out.append({"role": role, "state": state, **key.public()})
    return out


@keys.command("status")
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text")
@store_command
async def status(store: ResourceStore, output: str) -> int:
    """Which heartbeat key signs now, which are accepted, when the next rotation is due."""
    prefix = store.layout.prefix
    try:
        doc, mod = await read_keys(store.client, prefix)
    except KeyDocError as exc:
        fail(str(exc))
    if doc is None:
        click.echo(f"no heartbeat key at {keys_key(prefix)} yet: the first agent to start "
                   "creates one, or run `vipmgr keys rotate`")
        return EXIT_NO_KEYS
    now = time.time()
    rows = _rows(doc, now)
    if output != "text":
        dump({"key": keys_key(prefix), "revision": mod, "rotateEvery": doc.rotate_every,
              "nextRotation": doc.rotation_due(), "keys": rows}, output)
        return 0
    click.echo(f"heartbeat keys at {keys_key(prefix)} (revision {mod}); agents sign and "
               "require HMAC-SHA256 unless configured otherwise (heartbeat.insecure, authKeyFile)")
    print_table(["key", "state", "created", "signs from", "accepted until"],
                [(r["id"], r["state"], utc(r["created"]), utc(r["activates"]),
                  utc(r["retires"]) if "retires" in r else "-") for r in rows])
    click.echo(f"next scheduled rotation: {utc(doc.rotation_due())} "
               f"(every {_period(doc.rotate_every)}; done by the first agent allowed to "
               "write keys, or `vipmgr keys rotate --if-due` from cron)")
    return 0


_LONG_UNITS = {"h": 3600.0, "d": 86400.0}


def _schedule(value: str) -> float:
    """A rotation period: the usual durations plus hours and days ("12h", "7d")."""
    unit = _LONG_UNITS.get(value.strip()[-1:])
    try:
        seconds = parse_duration(value.strip()[:-1], "--every") * unit if unit \
            else parse_duration(value, "--every")
    except ConfigError:
        seconds = 0.0
    if seconds <= 0:
        fail(f"--every must be a period like 24h, 7d or 90m, not {value!r}", 2)
    return seconds


def _period(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return format_duration(seconds)


@keys.command("rotate")
@click.option("--if-due", is_flag=True, help="only if the scheduled rotation is due (for cron)")
@click.option("--every", metavar="DURATION", help="new schedule, e.g. 24h or 7d (default: kept)")
@click.option("--force", is_flag=True,
              help="replace an unreadable key document, or rotate during the previous overlap "
                   "(peers that still sign with the dropped key are rejected until they follow)")
@store_command
async def rotate(store: ResourceStore, if_due: bool, every: str | None, force: bool) -> int:
    """Make a new heartbeat key: accepted at once, signing after the activation delay."""
    prefix = store.layout.prefix
    rotate_every = _schedule(every) if every is not None else None
    now = time.time()
    try:
        doc, mod = await read_keys(store.client, prefix)
        if if_due and doc is not None and now < doc.rotation_due():
            click.echo(f"not due: next rotation at {utc(doc.rotation_due())}")
            return 0
        new = await rotate_keys(store.client, prefix, now, expect_mod=mod, force=force,
                                rotate_every=rotate_every)
    except (RotationRefused, KeyDocError) as exc:
        fail(str(exc))
    except (aetcd.exceptions.ClientError, grpc.RpcError) as exc:
        if permission_denied(exc):
            fail(f"etcd refused to write {keys_key(prefix)}: this user may not write keys; use "
                 "the admin credential (role vipmgr-admin, `vipmgr keys roles`)")
        raise
    if new.previous is None:
        click.echo(f"created heartbeat key {new.current.id}: signs now")
    else:
        click.echo(f"rotated: key {new.current.id} is accepted now and signs from "
                   f"{utc(new.current.activates)}; key {new.previous.id} is accepted until "
                   f"{utc(new.previous.retires)}")
    return 0


@keys.command("roles")
@click.option("--node", "nodes", multiple=True, metavar="NODE",
              help="a node to make an agent role for (default: every registered Node)")
@click.option("--apply", "do_apply", is_flag=True,
              help="create/refresh the roles in etcd now (needs a root or admin user)")
@store_command
async def roles(store: ResourceStore, nodes: tuple[str, ...], do_apply: bool) -> int:
    """The etcd roles for least privilege: vipmgr-admin and one vipmgr-agent-<node> per node."""
    names = list(nodes) or sorted(n.name for n in await store.list(KIND_BY_KIND["Node"]))
    table = roles_for(store.layout.prefix, names)
    if not do_apply:
        click.echo(etcdctl_script(table))
        return 0
    for line in await apply_roles(store.client, table):
        click.echo(line)
    return 0
