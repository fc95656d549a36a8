"""How near one-row serving comes to the machine's bound, measured side by side in one run.

    apt-get install wrk
    .venv/bin/python bench/bound.py [--duration 10] [--connections 16] [--rounds 2] [--profile]

The bound is `1 / (t_bare + t_model)`: `t_bare` is the time per request of a bare ASGI app on the same stack
(uvicorn, uvloop, httptools) that reads the same body and answers a constant of the same size, and `t_model` the
deployed runtime's in-process time for one row (ONNX Runtime on the anchor forest: 100 trees of depth 8, 29
features). finalmile serves the forest with logging on (default durability) and every request carries a token.
Each scenario's throughput is printed with its share of the bound; `--profile` samples finalmile's server with
py-spy (when installed) during the named-inputs scenario and prints where its time goes.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from finalmile import Client

sys.path.insert(0, str(Path(__file__).parent))
from runtimes import anchor_forest, data  # noqa: E402
from serving import _median, _server, need, v2_named, v2_tensor, wrk  # noqa: E402

BARE = textwrap.dedent(
    """
    import sys, uvicorn
    ANSWER = open(sys.argv[2], "rb").read()
    HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        more = True
        while more:  # the whole body, as any server must read it
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": ANSWER})

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools", log_level="warning",
                access_log=False)
    """
)


def bare_server(port: int, answer: bytes, workdir: Path) -> subprocess.Popen[bytes]:
    """The bare app on `port`, answering `answer` to every request (started; ready once it answers)."""
    (workdir / "answer.json").write_bytes(answer)
    process = subprocess.Popen([sys.executable, "-c", BARE, str(port), str(workdir / "answer.json")])
    for _ in range(100):
        try:
            httpx.post(f"http://127.0.0.1:{port}/", content=b"{}")
            return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the bare ASGI app did not start")


def model_seconds(runtime: object, row: pa.Table, seconds: float = 3.0) -> float:
    """The deployed runtime's in-process time per one-row call (median of batches of 1,000 calls)."""
    predict = runtime.predict  # type: ignore[attr-defined]
    for _ in range(200):
        predict(row)
    timings = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(1000):
            predict(row)
        timings.append((time.perf_counter() - start) / 1000)
    return float(np.median(timings))


def profile(pid: int, seconds: int, workdir: Path) -> str:
    """py-spy's top functions of the server while it is loaded (empty when py-spy is not installed)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return ""
    out = workdir / "profile.txt"
    subprocess.run([spy, "record", "--pid", str(pid), "--duration", str(seconds), "--format", "raw",
                    "--output", str(out), "--nonblocking"], capture_output=True, check=False)  # fmt: skip
    if not out.exists():
        return ""
    own: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        total += int(count)
        for frame in dict.fromkeys(frames):  # each function once per sample: time spent in it or below
            name = frame.split(" (")[0] + " " + frame.rsplit("/", 1)[-1].rstrip(")")
            own[name] = own.get(name, 0) + int(count)
    top = sorted(own.items(), key=lambda kv: -kv[1])[:40]
    return "\n".join(f"{100 * n / total:5.1f}%  {name}" for name, n in top)


def _score(content: bytes) -> float:
    """The score in a V2 or records answer."""
    answer = orjson.loads(content)
    if isinstance(answer, dict):
        return float(next(o for o in answer["outputs"] if o["name"] == "score")["data"][0])
    return float(answer[0]["score"])


def server_pid() -> int:
    """The `finalmile serve` process the benchmark started (the Python process listening on its port)."""
    found = subprocess.run(["pgrep", "-f", "finalmile serve --port 18080"], capture_output=True, text=True)
    return int(found.stdout.split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    need("wrk")
    console = Console()
    X, y = data()
    workdir = Path(tempfile.mkdtemp())
    home = workdir / "home"
    with Client(home=home) as client:
        forest = client.upload_model("forest", anchor_forest(X, y), sample=X.head(500))
        client.build_pipeline("forest").add_model_step(forest).deploy()
        _, token = client.services.init_access()
        expected = float(forest.predict(X.head(1))["score"].iloc[0])
        t_model = model_seconds(forest.load(), pa.Table.from_pandas(X.head(1).astype(np.float32), preserve_index=False))
    row = X.head(1)
    scenarios = {
        "V2 JSON, 29 named inputs": ("/v2/models/forest/infer", v2_named(row)),
        "V2 JSON, one [1, 29] tensor": ("/v2/models/forest/infer", v2_tensor(row)),
        "records JSON, one row": ("/pipelines/forest/infer", orjson.dumps(row.astype(np.float32).to_dict("records"))),
    }
    auth = {"authorization": f"Bearer {token}"}
    runs: dict[str, list[dict[str, float]]] = {}
    answers: dict[str, bytes] = {}
    profiled = ""
    try:
        for round_ in range(args.rounds):
            with _server(sys.executable, (), home, auth, ready="/v2/models/forest/ready") as base:
                for name, (path, body) in scenarios.items():
                    check = httpx.post(base + path, content=body, headers={"content-type": "application/json"} | auth)
                    assert check.status_code == 200, check.text
                    assert abs(_score(check.content) - expected) < 1e-5, (name, check.text)  # scikit-learn's
                    answers[name] = check.content
                    runs.setdefault(name, []).append(
                        wrk(
                            base + path, body, "application/json", args.duration, args.connections, workdir, token=token
                        )  # fmt: skip
                    )
                if args.profile and round_ == 0:
                    path, body = scenarios["V2 JSON, 29 named inputs"]
                    seconds = args.duration + 2
                    load = threading.Thread(
                        target=wrk,
                        args=(base + path, body, "application/json", seconds, args.connections, workdir),
                        kwargs={"token": token},
                    )
                    load.start()
                    time.sleep(1)
                    profiled = profile(server_pid(), args.duration, workdir)
                    load.join()
            for name, (path, body) in scenarios.items():  # the bare app, with the same body and answer size
                process = bare_server(18090, answers[name], workdir)
                try:
                    runs.setdefault(f"bare: {name}", []).append(
                        wrk(
                            "http://127.0.0.1:18090" + path,
                            body,
                            "application/json",
                            args.duration,
                            args.connections,
                            workdir,
                            token=token,
                        )  # fmt: skip
                    )
                finally:
                    process.terminate()
                    process.wait()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    table = Table("scenario", "finalmile req/s", "bare req/s", "t_bare µs", "bound req/s", "share of bound",
                  title=f"one row, wrk -t1 -c{args.connections} -d{args.duration}s, median of {args.rounds}; "
                        f"t_model {t_model * 1e6:.1f} µs (bench/bound.py)")  # fmt: skip
    for name in scenarios:
        mine, bare = _median(runs[name])["rps"], _median(runs[f"bare: {name}"])["rps"]
        bound = 1 / (1 / bare + t_model)
        table.add_row(name, f"{mine:,.0f}", f"{bare:,.0f}", f"{1e6 / bare:.1f}", f"{bound:,.0f}", f"{mine / bound:.0%}")
    console.print(table)
    if profiled:
        console.print("[bold]where the server's time goes (named inputs; share of samples in or below)[/bold]")
        console.print(profiled)


if __name__ == "__main__":
    main()
