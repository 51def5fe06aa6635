"""`vipmgr --help` and the README list the same exit codes with the same meaning."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from vipmgr.cli.main import EXIT_CODES_HELP, cli

README = Path(__file__).resolve().parents[2] / "README.md"


def _lead(text: str) -> tuple[str, ...]:
    """The first three words of a meaning, without markup and punctuation."""
    words = text.replace("`", "").split("(")[0].split()
    return tuple(w.strip(":;,.") for w in words[:3])


def help_codes() -> dict[int, tuple[str, ...]]:
    return {int(m.group(1)): _lead(m.group(2))
            for m in re.finditer(r"^  (\d)  (.+)$", EXIT_CODES_HELP, re.M)}


def readme_codes() -> dict[int, tuple[str, ...]]:
    text = " ".join(README.read_text().split())
    para = text[text.index("Exit codes (also in `vipmgr --help`)"):]
    body = para[:para.index(". ", para.index("--timeout"))].split("for every command: ", 1)[1]
    return {int(part[0]): _lead(part[2:]) for part in re.split(r"; (?=\d )", body)}


def test_help_and_readme_give_every_exit_code_the_same_meaning():
    in_help, in_readme = help_codes(), readme_codes()
    assert sorted(in_help) == [0, 1, 2, 3, 4, 5]
    assert in_readme == in_help


def test_the_help_shows_the_exit_codes():
    out = CliRunner().invoke(cli, ["--help"])
    assert out.exit_code == 0
    assert "Exit codes" in out.output and "3  etcd unreachable" in out.output
