"""What OpenTelemetry tracing costs one-row serving: the same server with tracing off, on (every request sampled,
spans exported over OTLP/HTTP to a receiver on loopback) and on with 1-in-10 and 1-in-100 samplers, side by side in
one run.

    apt-get install wrk
    .venv/bin/python bench/tracing.py [--duration 10] [--rounds 2]

The anchor forest (100 trees of depth 8, 29 features), one [1, 29] V2 tensor per request, a token on every request,
logging on (default durability); wrk -t1 -c16 pinned to one core, the server on the other. The rounds alternate the
settings so drift of a shared machine falls on all of them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from finalmile import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.fixtures import OtlpReceiver  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from mlserver import free_port  # noqa: E402
from runtimes import anchor_forest, data  # noqa: E402
from serving import _server, need, v2_tensor, wrk  # noqa: E402

SETTINGS = {
    "off": {},
    "on, every request": {"FINALMILE_TRACING": "true"},
    "on, 1 in 10 sampled": {
        "FINALMILE_TRACING": "true",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    },
    "on, 1 in 100 sampled": {
        "FINALMILE_TRACING": "true",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.01",
    },
    "on, 1 in 1000 sampled": {
        "FINALMILE_TRACING": "true",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.001",
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", nargs="+", choices=list(SETTINGS), help="these settings ('off' is always run)")
    args = parser.parse_args()
    need("wrk")
    console = Console()
    X, y = data()
    receiver = OtlpReceiver()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        home = work / "home"
        with Client(home=home) as client:
            client.upload_model("forest", anchor_forest(X, y), sample=X.head(50))
            client.build_pipeline("forest").add_model_step("forest:1").deploy()
            _, token = client.services.init_access("bench")
        body = v2_tensor(X.head(1))
        headers = {"authorization": f"Bearer {token}"}
        exporter = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}"}
        chosen = {name: SETTINGS[name] for name in SETTINGS if name == "off" or name in (args.only or SETTINGS)}
        figures: dict[str, list[float]] = {name: [] for name in chosen}
        for round_ in range(args.rounds):
            for name, extra in chosen.items():
                served = _server(sys.executable, (), home, headers, free_port(), "/v2/models/forest/ready",
                                 extra | exporter, {1} if (os.cpu_count() or 1) > 1 else None)  # fmt: skip
                with served as url:
                    infer = f"{url}/v2/models/forest/infer"
                    wrk(infer, body, "application/json", 2, 16, work, {0}, token)  # warm
                    with console.status(f"round {round_ + 1}: tracing {name}"):
                        result = wrk(infer, body, "application/json", args.duration, 16, work, {0}, token)
                    assert result["errors"] == 0, result
                    figures[name].append(result["rps"])
    base = max(figures["off"])
    table = Table(title=f"one-row V2 tensor requests/s, tracing off and on (best of {args.rounds} rounds)")
    table.add_column("tracing")
    table.add_column("req/s", justify="right")
    table.add_column("every round", justify="right")
    table.add_column("cost vs off", justify="right")
    for name, runs in figures.items():
        best = max(runs)
        table.add_row(name, f"{best:,.0f}", ", ".join(f"{r:,.0f}" for r in runs), f"{1 - best / base:+.1%}")
    console.print(table)
    console.print(f"spans exported: {sum(map(len, receiver.bodies)) / 1e6:.1f} MB of OTLP to the receiver")


if __name__ == "__main__":
    main()
