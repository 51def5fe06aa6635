"""The ``vipmgr`` command: a kubectl-like front end over the etcd store and the agent.

Subcommands live in their own modules and are imported only when used, so
``vipmgr get`` never pays for scapy or pyroute2.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

EXIT_CODES_HELP = """\b
Exit codes (each means one thing, for every command):
  0  success (status: every gateway healthy)
  1  the command found a problem: invalid input, object not found,
     conflict, a refused request; status: a gateway is degraded
  2  usage error (unknown option, missing argument)
  3  etcd unreachable (one line naming the endpoints)
  4  status: a gateway has no active node (its traffic is dropped)
  5  switchover --wait: no new active serves within --timeout
"""

# name -> "module:attribute"; each module owns its command.
SUBCOMMANDS: dict[str, str] = {
    "apply": "vipmgr.cli.resources:apply_cmd",
    "get": "vipmgr.cli.resources:get_cmd",
    "describe": "vipmgr.cli.resources:describe_cmd",
    "delete": "vipmgr.cli.resources:delete_cmd",
    "label": "vipmgr.cli.resources:label_cmd",
    "cordon": "vipmgr.cli.resources:cordon_cmd",
    "uncordon": "vipmgr.cli.resources:uncordon_cmd",
    "sim": "vipmgr.cli.sim:sim",
    "dataplane": "vipmgr.cli.dataplane:dataplane",
    "lab": "vipmgr.cli.lab:lab",
    "agent": "vipmgr.cli.agent:agent",
    "status": "vipmgr.cli.status:status",
    "switchover": "vipmgr.cli.status:switchover",
    "events": "vipmgr.cli.events:events",
    "keys": "vipmgr.cli.keys:keys",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in SUBCOMMANDS if self._resolvable(name))

    @staticmethod
    def _resolvable(name: str) -> bool:
        module = SUBCOMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(name)
        if target is None or not self._resolvable(name):
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, epilog=EXIT_CODES_HELP,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vipmgr")
def cli() -> None:
    """vipmgr: HA egress gateways with etcd-fenced failover."""


def main() -> None:
    cli()
