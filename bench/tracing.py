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

    .venv/bin/python bench/tracing.py --in-process [--requests 20000] [--rounds 8]

calls the server's ASGI app directly, one request after another (no socket, no wrk), `off` and each other setting
in two fresh processes at the same time, each pinned to a core of its own (swapped every round), measuring over the
same seconds: a shared machine's slow spells then fall on both sides of a pair alike, where rounds run one after
the other differed by ±30% on this VM. Each pair gives the setting's cost against `off` (wall and CPU time per
request of the serving process); the table gives the median pair. The same absolute cost on a request that also
pays for HTTP is a smaller share of it, so the share measured here bounds the served one from above.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from finalmile import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.fixtures import OtlpReceiver  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from asgi_direct import deployed_forest  # noqa: E402
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
    parser.add_argument("--in-process", action="store_true", help="the ASGI app called directly, no HTTP")
    args = parser.parse_args()
    if args.in_process:
        in_process(args.requests, args.rounds, args.only)
        return
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
variant, count = sys.argv[1], int(sys.argv[2])
if variant.startswith("sdk"):  # the SDK's own spans, as finalmile made them before (same six, same parentage)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import Link, SpanKind, set_span_in_context, use_span
    provider = TracerProvider(resource=Resource.create({"service.name": "finalmile"}))
    if variant == "sdk-in-thread":  # encoded and posted by a thread of this process
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    tracer = provider.get_tracer("finalmile")

    def request():
        span = tracer.start_span("infer forest", kind=SpanKind.SERVER,
                                 attributes={"finalmile.pipeline": "forest", "finalmile.route": "v2"})
        with tracer.start_as_current_span("decode", context=set_span_in_context(span)):
            pass
        queued = time.time_ns()
        tracer.start_span("queue", context=set_span_in_context(span), start_time=queued).end()
        batch = tracer.start_span("batch", context=set_span_in_context(span), attributes={"finalmile.requests": 1})
        with use_span(batch, end_on_exit=True):
            with tracer.start_as_current_span("model forest:1"):
                pass
            with tracer.start_as_current_span("log"):
                pass
        span.set_attribute("http.response.status_code", 200)
        span.end()

    flush, stop = provider.force_flush, provider.shutdown
else:  # finalmile's recorded spans, shipped to its exporting process, or not exported at all
    from finalmile import tracing
    os.environ["OTEL_TRACES_EXPORTER"] = "none" if variant == "none" else "otlp"
    tracing.setup(True)

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

    flush = tracing._sink.flush if tracing._sink else (lambda: None)
    stop = tracing.shutdown

for _ in range(200):
    request()
flush()
started = time.process_time()
for _ in range(count):
    request()
flush()
own = time.process_time() - started
stop()
children = resource.getrusage(resource.RUSAGE_CHILDREN)
print(own / count * 1e6, (children.ru_utime + children.ru_stime) / count * 1e6)
"""


IN_PROCESS = r"""
import asyncio, json, sys, time
import uvloop
sys.path.insert(0, sys.argv[4])
from asgi_direct import DirectApp
body, token, count = open(sys.argv[1], "rb").read(), sys.argv[2], int(sys.argv[3])
async def main():
    app = DirectApp(body, "/v2/models/forest/infer", token)
    await app.start()
    for _ in range(2000):
        await app.post()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # both sides start together
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        await app.post()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await app.stop()
    print(json.dumps({"wall_us": wall / count * 1e6, "cpu_us": cpu / count * 1e6}), flush=True)
uvloop.run(main())
"""


def in_process(requests: int, rounds: int, only: list[str] | None) -> None:
    """Each setting's serving cost per request against `off`, both called directly at the same time on cores of
    their own, over `rounds` pairs of fresh processes."""
    X, y = data()
    receiver = OtlpReceiver()
    chosen = {name: SETTINGS[name] for name in SETTINGS if name != "off" and name in (only or SETTINGS)}
    found: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = {name: [] for name in chosen}
    cores = [0, 1] if (os.cpu_count() or 1) > 1 else [0, 0]
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch) / "home"
        token = deployed_forest(home, X, y, sample_rows=50)
        body = Path(scratch) / "body.json"
        body.write_bytes(v2_tensor(X.head(1)))
        env = os.environ | {"FINALMILE_HOME": str(home),
                            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}"}  # fmt: skip
        with Console().status("") as status:
            for round_ in range(rounds):
                for name, extra in chosen.items():
                    status.update(f"round {round_ + 1} of {rounds}: off beside tracing {name}")
                    off_core, on_core = cores if round_ % 2 == 0 else cores[::-1]
                    off = _AppProcess(body, token, requests, env, off_core)
                    on = _AppProcess(body, token, requests, env | extra, on_core)
                    time.sleep(3)  # the span exporting process has started (~1 s of imports), as a server's has
                    off.go(), on.go()  # both warmed: they measure over the same seconds
                    found[name].append((off.result(), on.result()))
    table = Table(title=f"one-row V2 tensor requests, the ASGI app called directly: {requests:,} a process, "
                        f"{rounds} pairs, `off` beside each setting at the same time on the other core")  # fmt: skip
    for column in ("tracing", "off µs/request", "on µs/request", "cost vs off", "every pair's cost", "CPU cost"):
        table.add_column(column, justify="left" if column == "tracing" else "right")
    for name, pairs in found.items():
        costs = [on["wall_us"] / off["wall_us"] - 1 for off, on in pairs]
        cpu_costs = [on["cpu_us"] / off["cpu_us"] - 1 for off, on in pairs]
        table.add_row(name, f"{statistics.median(off['wall_us'] for off, _ in pairs):,.1f}",
                      f"{statistics.median(on['wall_us'] for _, on in pairs):,.1f}", f"{statistics.median(costs):+.1%}",
                      ", ".join(f"{c:+.1%}" for c in costs), f"{statistics.median(cpu_costs):+.1%}")  # fmt: skip
    Console().print(table)


class _AppProcess:
    """One `IN_PROCESS` child pinned to `core`, warmed and waiting; `result` starts it measuring and waits."""

    def __init__(self, body: Path, token: str, requests: int, env: dict[str, str], core: int) -> None:
        import subprocess

        argv = [sys.executable, "-c", IN_PROCESS, str(body), token, str(requests), str(Path(__file__).parent)]
        self.process = subprocess.Popen(argv, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        preexec_fn=lambda: os.sched_setaffinity(0, {core}))  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the app process did not start: {line!r}")

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def result(self) -> dict[str, float]:
        out, _ = self.process.communicate()
        if self.process.returncode:
            raise RuntimeError(f"the app process failed ({self.process.returncode})")
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def span_costs(requests: int, rounds: int, port: int) -> None:
    """CPU µs per traced request (six spans) of each way of exporting them, median of `rounds` fresh processes."""
    import subprocess

    env = os.environ | {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_BSP_MAX_QUEUE_SIZE": "1000000"}
    variants = {"sdk-in-thread": "the SDK's spans, its BatchSpanProcessor in a thread of the serving process",
                "sdk": "the SDK's spans, not exported",
                "process": "finalmile's spans, its exporting process (finalmile.tracing.export)",
                "none": "finalmile's spans, not exported"}  # fmt: skip
    found: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    for _ in range(rounds):
        for variant in variants:
            out = subprocess.run([sys.executable, "-c", SPANS, variant, str(requests)], env=env, capture_output=True,
                                 text=True, check=True).stdout.split()  # fmt: skip
            found[variant].append((float(out[-2]), float(out[-1])))
    table = Table(title=f"CPU µs per traced request (6 spans), {requests:,} requests, median of {rounds} processes")
    for column in ("exported by", "serving process", "exporting process", "serving process vs the SDK's in-thread"):
        table.add_column(column, justify="left" if column == "exported by" else "right")
    base = statistics.median(c[0] for c in found["sdk-in-thread"])
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
