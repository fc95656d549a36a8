"""finalmile against MLServer 1.7.1 (Seldon), side by side in one run, on the same models and the same machine.

    apt-get install wrk
    .venv/bin/python bench/mlserver.py [--rounds 2] [--duration 10] [--venv bench/.venv-mlserver]

MLServer runs from a virtualenv of its own (made on first use with the pinned `mlserver==1.7.1
mlserver-sklearn==1.7.1 "uvloop<0.21"`), serving the same fitted scikit-learn models with `mlserver_sklearn`;
finalmile serves them as pipelines (ONNX Runtime or scikit-learn, whichever it measured faster). Each server gets its
own V2 body — a `[rows, 29]` FP32 tensor, and for MLServer the `predict_proba` output asked for by name — and both
answers are checked against scikit-learn before any load, since an error answer is fast. The servers run one at a
time, alternating which goes first in each round; wrk -t1 -c16 on loopback; medians of the rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import joblib
import numpy as np
import orjson
import pandas as pd
from rich.console import Console
from rich.table import Table
from sklearn.linear_model import LogisticRegression

from finalmile import Client

sys.path.insert(0, str(Path(__file__).parent))
from runtimes import anchor_forest, data  # noqa: E402
from serving import _server, v2_named, wrk  # noqa: E402

PINNED = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.21"]


def tensor_body(frame: pd.DataFrame, mlserver: bool) -> bytes:
    body: dict[str, object] = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(frame.shape),
                "datatype": "FP32",
                "data": frame.to_numpy(np.float32).ravel().tolist(),
            }
        ]
    }
    if mlserver:
        body["outputs"] = [{"name": "predict_proba"}]
    return orjson.dumps(body)


def probabilities(answer: dict[str, object], name: str) -> np.ndarray:
    outputs = {o["name"]: o for o in answer["outputs"]}  # type: ignore[attr-defined, index]
    chosen = outputs[name]
    return np.asarray(chosen["data"], dtype=np.float64).reshape(chosen["shape"])


def ensure_venv(venv: Path, console: Console) -> Path:
    python = venv / "bin" / "python"
    if not (venv / "bin" / "mlserver").exists():
        console.print(f"making {venv} with {' '.join(PINNED)}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "-q", "install", *PINNED], check=True)
    return venv / "bin" / "mlserver"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mlserver(binary: Path, models: dict[str, object], workdir: Path, grpc_port: int | None = None) -> Iterator[str]:
    """`mlserver start` over a folder holding each model as `model.joblib` with its model-settings.json (its gRPC
    service on `grpc_port` when given)."""
    root = workdir / "mlserver"
    shutil.rmtree(root, ignore_errors=True)
    port = free_port()
    for name, model in models.items():
        folder = root / name
        folder.mkdir(parents=True)
        joblib.dump(model, folder / "model.joblib")
        settings = {"name": name, "implementation": "mlserver_sklearn.SKLearnModel"}
        (folder / "model-settings.json").write_text(json.dumps(settings | {"parameters": {"uri": "./model.joblib"}}))
    ports = {"http_port": port, "grpc_port": grpc_port or free_port(), "metrics_port": free_port()}
    (root / "settings.json").write_text(json.dumps(ports))
    log = (workdir / "mlserver.log").open("wb")
    server = subprocess.Popen([str(binary), "start", str(root)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if all(httpx.get(f"{url}/v2/models/{n}/ready").status_code == 200 for n in models):
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None:
                raise RuntimeError((workdir / "mlserver.log").read_text()[-3000:])
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()  # MLServer stops its inference workers first; give it time, then insist
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--venv", type=Path, default=Path(__file__).parent / ".venv-mlserver", help="MLServer's own virtualenv"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    console = Console()
    binary = ensure_venv(args.venv.resolve(), console)
    X, y = data()
    forest = anchor_forest(X, y)
    logreg = LogisticRegression(max_iter=500).fit(X, y)
    models = {"forest": forest, "logreg": logreg}
    workdir = Path(tempfile.mkdtemp())
    home = workdir / "home"
    with Client(home=home) as client:
        for name, model in models.items():
            mv = client.upload_model(name, model, sample=X.head(500))
            client.build_pipeline(name).add_model_step(mv).deploy(max_batch_size=1000, max_delay_ms=1)
        _, token = client.services.init_access()
    scenarios = [("forest, 1 row", "forest", X.head(1)), ("forest, 1,000 rows", "forest", X.head(1000))]
    scenarios.append(("logistic regression, 1 row", "logreg", X.head(1)))
    # each server the body its own metadata asks for: finalmile's lists the 29 named inputs, MLServer's one tensor
    scenarios.append(("forest, 1 row, the body each server's metadata asks for", "forest", X.head(1)))
    auth = {"authorization": f"Bearer {token}"}
    runs: dict[str, dict[str, list[dict[str, float]]]] = {"mlserver": {}, "finalmile": {}}

    def measure(side: str, base: str) -> None:
        for title, name, frame in scenarios:
            own = "metadata asks" in title and side == "finalmile"
            body = v2_named(frame) if own else tensor_body(frame, side == "mlserver")
            url = f"{base}/v2/models/{name}/infer"
            answer = httpx.post(url, content=body, headers={"content-type": "application/json"} | auth, timeout=60)
            assert answer.status_code == 200, f"{side} {title}: {answer.text[:300]}"
            got = probabilities(answer.json(), "predict_proba" if side == "mlserver" else "probabilities")
            expected = models[name].predict_proba(frame.astype(np.float32))
            assert np.allclose(got, expected, atol=1e-4), f"{side} {title}: answers differ from scikit-learn"
            result = wrk(url, body, "application/json", args.duration, args.connections, workdir, token=token)
            assert result["errors"] == 0, f"{side} {title}: {result['errors']:.0f} error answers under load"
            runs[side].setdefault(title, []).append(result)

    try:
        for round_ in range(args.rounds):
            for side in ("mlserver", "finalmile") if round_ % 2 == 0 else ("finalmile", "mlserver"):
                console.print(f"round {round_ + 1}: {side}")
                if side == "mlserver":
                    with mlserver(binary, models, workdir) as base:
                        measure(side, base)
                else:
                    with _server(sys.executable, (), home, auth) as base:
                        measure(side, base)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    table = Table(
        "work",
        "MLServer 1.7.1",
        "p99 ms",
        "finalmile",
        "p99 ms",
        "finalmile / MLServer",
        title=f"V2 JSON, wrk -t1 -c{args.connections} -d{args.duration}s, median of {args.rounds} (bench/mlserver.py)",
    )
    results = {}
    for title, _, frame in scenarios:
        rows = len(frame)
        theirs = {k: float(np.median([r[k] for r in runs["mlserver"][title]])) for k in ("rps", "p99_ms")}
        ours = {k: float(np.median([r[k] for r in runs["finalmile"][title]])) for k in ("rps", "p99_ms")}
        unit = "req/s" if rows == 1 else "rows/s"
        table.add_row(
            title,
            f"{theirs['rps'] * rows:,.0f} {unit}",
            f"{theirs['p99_ms']:.1f}",
            f"{ours['rps'] * rows:,.0f} {unit}",
            f"{ours['p99_ms']:.1f}",
            f"{ours['rps'] / theirs['rps']:.1f}×",
        )
        results[title] = {"mlserver": theirs, "finalmile": ours, "rows": rows}
    console.print(table)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
