"""Validation problems that name where (file, line, field path) and how to fix."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    source: str = ""  # "file.yaml:12" when known

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
