"""The ``vipmgr`` command: a kubectl-like front end over the etcd store and the agent.

Subcommands live in their own modules and are imported only when used, so
``vipmgr get`` never pays for scapy or pyroute2.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

EXIT_CODES_HELP = """\b
Exit codes:
  0  success
  1  the command ran but found a problem (validation failed, object not
     found, degraded status)
  2  could not reach etcd / usage error / a gateway has no active node
     (status)
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
