"""bench/wire.py stays runnable and bounded, and prints every row (the figures are the
bench's to print: a test asserts no timings)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "wire.py"


def test_bench_runs_and_prints_every_row():
    out = subprocess.run([sys.executable, str(BENCH), "--runs", "1", "--iter", "300"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    rows = {(m.group(1).strip(), int(m.group(2))): (int(m.group(3)), float(m.group(4)))
            for m in re.finditer(r"^(\D+?)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+[\d.]+\s+\(", out, re.M)}
    assert {(name, gw) for name in ("codec build", "codec verify") for gw in (1, 10, 100)} \
        <= rows.keys(), out
    assert rows["codec build", 10][0] == 1 and rows["codec build", 100][0] > 1, out
    assert all(median > 0 for _datagrams, median in rows.values()), out
