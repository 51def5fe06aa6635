"""Durations as users write them: "20ms", "1.5s", "2m", or a number of seconds."""

from __future__ import annotations

import math
import re

from vipmgr.config.errors import ConfigError

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(us|ms|s|m)?\s*$")


def parse_duration(value: object, path: str) -> float:
    """Seconds as a float; raises ConfigError naming ``path`` on anything else."""
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        raise ConfigError([(path, f"must be a duration like '20ms', '1.5s' or a number of "
                                  f"seconds >= 0, not {value!r}")])
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling parse_duration reads back ("20ms", "2s")."""
    ms = seconds * 1000.0
    if ms == int(ms) and ms % 1000:
        return f"{int(ms)}ms"
    return f"{seconds:g}s"
