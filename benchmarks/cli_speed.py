"""How long the command line takes to answer, beside ``python -c pass`` measured in the same run.

Each command runs as a fresh process (``python -m avalanche_lpa ...``), ``--repeats`` times, interleaved with the
others so that a busy moment of the machine touches them all alike; prints the median and the slowest seconds of
each and its ratio to an empty interpreter:

    python benchmarks/cli_speed.py              # 5 repeats, about a minute on 2 CPU cores
    python benchmarks/cli_speed.py --repeats 3

``--help``, ``--version``, ``configs`` and argument errors import neither torch, timm nor Avalanche
(``tests/test_command_line.py`` holds that); ``--print-config`` and config errors validate the config, which needs
the strategy registry (Avalanche's strategies and our plugins).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "--help": [sys.executable, "-m", "avalanche_lpa", "--help"],
    "--version": [sys.executable, "-m", "avalanche_lpa", "--version"],
    "configs": [sys.executable, "-m", "avalanche_lpa", "configs"],
    "argument error (--strategy l2p)": [sys.executable, "-m", "avalanche_lpa", "--strategy", "l2p"],
    "--print-config": [sys.executable, "-m", "avalanche_lpa", "--config", "cifar100_quick", "--print-config"],
    "config error (--set data.colour=1)": [sys.executable, "-m", "avalanche_lpa", "--set", "data.colour=1"],
}


def measure(repeats: int) -> Dict[str, List[float]]:
    times: Dict[str, List[float]] = {name: [] for name in COMMANDS}
    for _ in range(repeats):
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            times[name].append(time.perf_counter() - start)
    return times


def main(argv: List[str] = None) -> Dict[str, Dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    times = measure(args.repeats)
    base = statistics.median(times["python -c pass"])
    report = {name: {"median_s": statistics.median(t), "max_s": max(t), "vs_python": statistics.median(t) / base}
              for name, t in times.items()}
    width = max(map(len, report))
    print(f"{'command':<{width}}  median s  slowest s  x python -c pass")
    for name, row in report.items():
        print(f"{name:<{width}}  {row['median_s']:8.2f}  {row['max_s']:9.2f}  {row['vs_python']:16.1f}")
    return report


if __name__ == "__main__":
    main()
