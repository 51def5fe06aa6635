#!/usr/bin/env python3
"""What the agent pays at start for the modules it imports: wall time and RSS.

Each figure is a fresh interpreter (``python -X importtime`` is too noisy to sum):
the time to import the modules named, and the process's RSS after it, median of
RUNS runs. Rows: the bare interpreter, what ``vipmgr agent`` imports
(``vipmgr.cli.agent`` + ``vipmgr.agent.runtime``), and for comparison the lab and
the simulator, which the agent must not load (tests/test_packaging.py checks it),
and scapy, which vipmgr does not use at all.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

ROWS = {
    "interpreter only": "",
    "vipmgr agent": "vipmgr.cli.agent, vipmgr.agent.runtime",
    "agent + lab + simulator": "vipmgr.cli.agent, vipmgr.agent.runtime, vipmgr.lab.bench, "
                               "vipmgr.lab.chaos, vipmgr.sim.world",
    "scapy (layers.inet, l2)": "scapy.layers.inet, scapy.layers.l2",
}
PROBE = """\
import time
t = time.perf_counter()
{imports}
dt = time.perf_counter() - t
rss = next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmRSS'))
print(dt * 1000, rss / 1024)
"""


def measure(modules: str, runs: int) -> tuple[float, float]:
    code = PROBE.format(imports=f"import {modules}" if modules else "pass")
    samples = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.split()
        samples.append((float(out[0]), float(out[1])))
    return (statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(f"{'imports':<26} {'time ms':>8} {'RSS MB':>7}   (median of {args.runs} runs)")
    for name, modules in ROWS.items():
        try:
            ms, mb = measure(modules, args.runs)
        except subprocess.CalledProcessError as exc:
            print(f"{name:<26} not importable: {exc.stderr.strip().splitlines()[-1]}")
            continue
        print(f"{name:<26} {ms:8.1f} {mb:7.1f}")


if __name__ == "__main__":
    main()
