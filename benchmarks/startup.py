"""How long the command line takes to answer, against importing torch, side by side.

    python benchmarks/startup.py [--rounds 5]

Each command runs as a fresh process (``python -m geoseg.cli ...``), rounds interleaved, medians.
Target (issue 14): ``--help`` and ``models`` at most 0.25x the time of ``python -c "import torch"``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.runbench.common import table

COMMANDS = {
    'python -c "import torch" (baseline)': [sys.executable, "-c", "import torch"],
    'python -c "pass"': [sys.executable, "-c", "pass"],
    "geoseg --help": [sys.executable, "-m", "geoseg.cli", "--help"],
    "geoseg --version": [sys.executable, "-m", "geoseg.cli", "--version"],
    "geoseg models": [sys.executable, "-m", "geoseg.cli", "models"],
    "geoseg run --help": [sys.executable, "-m", "geoseg.cli", "run", "--help"],
    "geoseg run missing.tif (a usage error)": [sys.executable, "-m", "geoseg.cli", "run", "missing.tif"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    root = Path(__file__).resolve().parents[1]
    for _ in range(args.rounds + 1):  # the first round warms the page cache and is dropped
        for name, cmd in COMMANDS.items():
            started = time.perf_counter()
            subprocess.run(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            times[name].append(time.perf_counter() - started)
    base = statistics.median(times['python -c "import torch" (baseline)'][1:])
    rows = []
    for name, values in times.items():
        m = statistics.median(values[1:])
        rows.append([name, f"{m:.2f}", f"{m / base:.2f}"])
    table(f"start-up, median of {args.rounds} interleaved rounds", ("command", "seconds", "x import torch"), rows)


if __name__ == "__main__":
    main()
