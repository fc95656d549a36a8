"""What OpenTelemetry tracing costs one-row serving: the same server with tracing off, on (every request sampled,
spans exported over OTLP/HTTP to a receiver on loopback) and on with 1-in-10 and 1-in-100 samplers, side by side in
one run.

    apt-get install wrk
    .venv/bin/python bench/tracing.py [--duration 10] [--rounds 2]

The anchor forest (100 trees of depth 8, 29 features), one [1, 29] V2 tensor per request, a token on every request,
logging on (default durability); wrk -t1 -c16 pinned to one core, the server on the other; the span exporting
process the server starts (`finalmile.tracing.export`) is moved to wrk's core, beside the OTLP receiver, as a
collector would run: the server's core serves. The rounds alternate the settings so drift of a shared machine
falls on all of them. Beside requests/s, the server's CPU time per request (and its children's: the exporter).

    .venv/bin/python bench/tracing.py --spans [--requests 3000] [--rounds 3]

measures instead what one traced request's six spans cost in CPU time, made as the server makes them in a loop and
exported to the same receiver, three ways, each in a fresh process: exported by the SDK's `BatchSpanProcessor` in a
thread of the process (how finalmile exported before), by finalmile's exporting process (`finalmile.tracing.export`,
its CPU counted apart), and not exported at all.
"""

from __future__ import annotations

import argparse
import os
import statistics
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
    "on, none sampled": {"FINALMILE_TRACING": "true", "OTEL_TRACES_SAMPLER": "always_off"},
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
    parser.add_argument("--spans", action="store_true", help="what a traced request's spans cost, in CPU time")
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    if args.spans:
        receiver = OtlpReceiver()
        span_costs(args.requests, args.rounds, receiver.port)
        return
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
        cpu: dict[str, list[tuple[float, float]]] = {name: [] for name in chosen}
        for round_ in range(args.rounds):
            for name, extra in chosen.items():
                port = free_port()
                served = _server(sys.executable, (), home, headers, port, "/v2/models/forest/ready",
                                 extra | exporter, {1} if (os.cpu_count() or 1) > 1 else None)  # fmt: skip
                with served as url:
                    infer = f"{url}/v2/models/forest/infer"
                    wrk(infer, body, "application/json", 2, 16, work, {0}, token)  # warm
                    server = _pid_serving(port)
                    for child in _children(server):  # the span exporter: off the server's core, as a collector is
                        os.sched_setaffinity(child, {0})
                    before = _cpu_seconds(server)
                    with console.status(f"round {round_ + 1}: tracing {name}"):
                        result = wrk(infer, body, "application/json", args.duration, 16, work, {0}, token)
                    after = _cpu_seconds(server)
                    assert result["errors"] == 0, result
                    figures[name].append(result["rps"])
                    requests = result["rps"] * args.duration
                    cpu[name].append(((after[0] - before[0]) / requests * 1e6, (after[1] - before[1]) / requests * 1e6))
    base = max(figures["off"])
    table = Table(title=f"one-row V2 tensor requests/s, tracing off and on (best of {args.rounds} rounds)")
    table.add_column("tracing")
    table.add_column("req/s", justify="right")
    table.add_column("every round", justify="right")
    table.add_column("cost vs off", justify="right")
    table.add_column("server CPU µs/request (median)", justify="right")
    table.add_column("CPU cost vs off", justify="right")
    table.add_column("its children's CPU µs/request", justify="right")
    served_base = statistics.median(c[0] for c in cpu["off"])
    for name, runs in figures.items():
        best = max(runs)
        own, children = (statistics.median(c[i] for c in cpu[name]) for i in (0, 1))
        table.add_row(name, f"{best:,.0f}", ", ".join(f"{r:,.0f}" for r in runs), f"{1 - best / base:+.1%}",
                      f"{own:,.0f}", f"{own / served_base - 1:+.1%}", f"{children:,.0f}")  # fmt: skip
    console.print(table)
    console.print(f"spans exported: {sum(map(len, receiver.bodies)) / 1e6:.1f} MB of OTLP to the receiver")


SPANS = r"""
import os, resource, sys, time
from finalmile import tracing
variant, count = sys.argv[1], int(sys.argv[2])
os.environ["OTEL_TRACES_EXPORTER"] = "none" if variant == "none" else "otlp"
tracing.setup(True)
if variant == "in-thread":  # the SDK's own: encoded and posted by a thread of this process
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    provider = TracerProvider(resource=tracing._provider.resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    tracing._provider, tracing._tracer = provider, provider.get_tracer("finalmile")

def request():
    span = tracing.start_request("forest", "v2", {})
    with tracing.child(span, "decode"):
        pass
    def run():
        with tracing.step("model forest:1"):
            pass
        with tracing.step("log"):
            pass
    tracing.batch([span], [time.time_ns()], run)()
    tracing.end_request(span, 200, {})

for _ in range(200):
    request()
tracing._provider.force_flush()
started = time.process_time()
for _ in range(count):
    request()
tracing._provider.force_flush()
own = time.process_time() - started
tracing.shutdown()
children = resource.getrusage(resource.RUSAGE_CHILDREN)
print(own / count * 1e6, (children.ru_utime + children.ru_stime) / count * 1e6)
"""


def span_costs(requests: int, rounds: int, port: int) -> None:
    """CPU µs per traced request (six spans) of each way of exporting them, median of `rounds` fresh processes."""
    import subprocess

    env = os.environ | {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_BSP_MAX_QUEUE_SIZE": "1000000"}
    variants = {"in-thread": "SDK's BatchSpanProcessor, in a thread of the serving process",
                "process": "finalmile's exporting process (finalmile.tracing.export)",
                "none": "not exported"}  # fmt: skip
    found: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    for _ in range(rounds):
        for variant in variants:
            out = subprocess.run([sys.executable, "-c", SPANS, variant, str(requests)], env=env, capture_output=True,
                                 text=True, check=True).stdout.split()  # fmt: skip
            found[variant].append((float(out[-2]), float(out[-1])))
    table = Table(title=f"CPU µs per traced request (6 spans), {requests:,} requests, median of {rounds} processes")
    for column in ("exported by", "serving process", "exporting process", "serving process vs in-thread"):
        table.add_column(column, justify="left" if column == "exported by" else "right")
    base = statistics.median(c[0] for c in found["in-thread"])
    for variant, name in variants.items():
        own, child = (statistics.median(c[i] for c in found[variant]) for i in (0, 1))
        table.add_row(name, f"{own:,.0f}", f"{child:,.0f}" if variant == "process" else "—", f"{own / base:.2f}×")
    Console().print(table)


def _pid_serving(port: int) -> int:
    """The pid of the `finalmile serve` on `port` (the `_server` helper yields its address only)."""
    wanted = f"serve\0--port\0{port}\0".encode()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and wanted in (entry / "cmdline").read_bytes():
                return int(entry.name)
        except OSError:
            continue
    raise RuntimeError(f"no finalmile serve on port {port}")


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) the process has used, and those of its live children (the span exporter):
    steadier than requests/s on a shared machine, where another guest's load takes time from both sides alike."""
    tick = os.sysconf("SC_CLK_TCK")

    def used(p: int) -> float:
        fields = (Path("/proc") / str(p) / "stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    return used(pid), sum(used(child) for child in _children(pid))


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


if __name__ == "__main__":
    main()
