"""What the sandbox costs a code model per batch: the same Python model in the server's process
(`FINALMILE_SANDBOX=off`) and in its bubblewrap child (`bwrap`), one row and 1,000 rows, side by side.

    .venv/bin/python bench/sandbox.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from finalmile import Client
from finalmile.config import FinalmileSettings

MODEL = """
import numpy as np
import pandas as pd


class Linear:
    def predict(self, frame):
        return pd.DataFrame({"score": frame.to_numpy() @ np.linspace(-1, 1, frame.shape[1])})
"""


def per_call(predict, frame: pd.DataFrame, seconds: float) -> float:
    predict(frame)  # warm
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        predict(frame)
        calls += 1
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    frames = {n: pd.DataFrame(rng.normal(size=(n, 29)), columns=[f"x{i}" for i in range(29)]) for n in (1, 1000)}
    table = Table(title="a 29-feature Python model: seconds per call")
    for column in ("rows", "in-process", "sandboxed", "added per call"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "linear.py"
        source.write_text(MODEL)
        clients = {
            mode: Client(settings=FinalmileSettings(home=Path(folder) / mode, sandbox=mode))
            for mode in ("off", "bwrap")
        }
        runtimes = {}
        for mode, client in clients.items():
            client.upload_model("linear", f"{source}:Linear", sample=frames[1])
            runtimes[mode] = client.services.loader.load(client.services.metadata.get_version("linear", 1))
        from finalmile.arrow.frames import to_arrow

        for rows, frame in frames.items():
            arrow = to_arrow(frame)[0]
            off = per_call(runtimes["off"].predict, arrow, args.seconds)
            on = per_call(runtimes["bwrap"].predict, arrow, args.seconds)
            table.add_row(f"{rows:,}", f"{off * 1e6:,.0f} µs", f"{on * 1e6:,.0f} µs", f"+{(on - off) * 1e6:,.0f} µs")
        for client in clients.values():
            client.close()
    Console().print(table)


if __name__ == "__main__":
    main()
