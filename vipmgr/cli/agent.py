"""``vipmgr agent``: run the node agent in the foreground (systemd, the lab, a container)."""

from __future__ import annotations

import asyncio
import sys

import click

from vipmgr.config.errors import ConfigError


@click.command("agent")
@click.option("--node", envvar="VIPMGR_NODE", help="this node's name (or node: in the config)")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="agent config file (YAML); see docs/agent.md for every setting")
@click.option("--etcd", metavar="URL[,URL…]", help="etcd endpoints (overrides the config)")
@click.option("--metrics-addr", help="HOST:PORT for /metrics (default 127.0.0.1:9750; '' = off)")
@click.option("--log-format", type=click.Choice(["text", "json"]), help="log line format")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
def agent(node: str | None, config_path: str | None, etcd: str | None,
          metrics_addr: str | None, log_format: str | None, log_level: str | None) -> None:
    """Run the agent: join gateways, elect, program the datapath, publish status.

    \b
    Signals: SIGTERM/SIGINT release every gateway (successors take over at
    once) and exit; SIGHUP reloads the config file.
    """
    from dataclasses import replace

    from vipmgr.agent.config import load_config
    from vipmgr.agent.logs import setup_logging
    from vipmgr.agent.metrics import AgentMetrics
    from vipmgr.agent.runtime import FAILOVER_REASONS, Agent

    try:
        config = load_config(config_path, node=node, etcd=etcd)
    except ConfigError as exc:
        for path, message in exc.problems:
            click.echo(f"error: {config_path or 'config'}: {path}: {message}", err=True)
        sys.exit(1)
    overrides = {k: v for k, v in (("metrics_address", metrics_addr), ("log_format", log_format),
                                   ("log_level", log_level)) if v is not None}
    config = replace(config, **overrides)
    setup_logging(config.log_format, config.log_level)
    metrics = AgentMetrics(config.node, failover_reasons=FAILOVER_REASONS)
    endpoint = None
    if config.metrics_address:
        try:
            endpoint = metrics.serve(config.metrics_address)
        except (ValueError, OSError) as exc:
            click.echo(f"error: metrics address {config.metrics_address}: {exc}", err=True)
            sys.exit(1)
    try:
        asyncio.run(Agent(config, metrics, config_path).run())
    finally:
        if endpoint is not None:
            endpoint.close()
