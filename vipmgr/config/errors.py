"""The error raised when configuration values are rejected, naming each field and its fix."""

from __future__ import annotations


class ConfigError(ValueError):
    """Configuration rejected; ``problems`` lists (field path, message with the fix)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("\n".join(f"{path}: {message}" for path, message in problems))
