"""Switchover requests: the CLI puts one key per gateway, the active node's agent takes it.

``<prefix>/switchover/<gateway>`` -> ``{"to": NODE or null, "requested": unix time}``.
Its own module so that the agent reads the layout without importing the CLI.
"""

from __future__ import annotations


def switchover_prefix(prefix: str) -> str:
    return f"{prefix}/switchover/"


def switchover_key(prefix: str, gateway: str) -> str:
    return f"{switchover_prefix(prefix)}{gateway}"
