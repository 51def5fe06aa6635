"""Validation problems that name where (file, line, field path) and how to fix."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CLIP_TOKEN = 60  # characters of an over-long value that a message keeps
CLIP_MESSAGE = 600
_LONG_TOKEN = re.compile(r"\S{%d,}" % (CLIP_TOKEN + 20))


def clip(text: str) -> str:
    """``text`` with every over-long value cut to its start plus its size, so a 5 MB label
    is echoed as ``'xxxx…' … (5,000,000 bytes)`` rather than in full."""
    def cut(match: re.Match) -> str:
        token = match.group(0)
        return f"{token[:CLIP_TOKEN]}… ({len(token.encode()):,} bytes)"

    text = _LONG_TOKEN.sub(cut, text)
    if len(text) > CLIP_MESSAGE:
        text = f"{text[:CLIP_MESSAGE - 60]}… ({len(text.encode()):,} bytes)"
    return text


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    source: str = ""  # "file.yaml:12" when known

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", clip(self.path))
        object.__setattr__(self, "message", clip(self.message))

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.path}: {self.message}"


@dataclass
class Problems:
    """Collects every problem of an input, so the user fixes them in one round."""

    items: list[Problem] = field(default_factory=list)

    def add(self, path: str, message: str, source: str = "") -> None:
        self.items.append(Problem(path, message, source))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise ValidationError(list(self.items))


class ValidationError(ValueError):
    """Input rejected; nothing was changed."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
