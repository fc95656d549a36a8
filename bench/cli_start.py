"""How long a `finalmile` command takes from the shell, and how much memory it holds: start-up is most of it.

    .venv/bin/python bench/cli_start.py [--runs 5] [--against OTHER/src]

Each command runs `--runs` times in a fresh interpreter against a store made first (so no run migrates it). With
`--against`, the same commands also run on another source tree (a `git worktree` of an earlier commit, put first
on `PYTHONPATH`), alternating run by run so both see the same machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

COMMANDS = [["--help"], ["models", "list"], ["pipelines", "list"]]
SRC = Path(__file__).parents[1] / "src"


def timed(src: Path, args: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one `python -m finalmile ARGS` on source tree `src`."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "finalmile", *args],
        env=env | {"PYTHONPATH": str(src)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    assert os.waitstatus_to_exitcode(status) == 0, args
    return seconds, usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--against", type=Path, help="another source tree (its src/), run alternately")
    options = parser.parse_args()
    trees = {"this tree": SRC} | ({f"{options.against}": options.against} if options.against else {})
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINALMILE_")} | {"FINALMILE_HOME": home}
        timed(SRC, ["models", "list"], env)  # makes and migrates the store
        results: dict[tuple[str, str], list[tuple[float, int]]] = {}
        for _ in range(options.runs):
            for args in COMMANDS:
                for name, src in trees.items():
                    results.setdefault((name, " ".join(args)), []).append(timed(src, args, env))
    table = Table(title=f"finalmile commands, median of {options.runs} runs")
    for column in ("command", "source", "seconds", "peak RSS"):
        table.add_column(column)
    for (name, command), runs in results.items():
        seconds = statistics.median(s for s, _ in runs)
        rss = statistics.median(r for _, r in runs)
        table.add_row(f"finalmile {command}", name, f"{seconds:.2f}", f"{rss / 1024:.0f} MiB")
    Console().print(table)


if __name__ == "__main__":
    main()
