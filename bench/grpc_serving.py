"""The Open Inference Protocol over gRPC: finalmile against MLServer's gRPC, and against finalmile's own HTTP path,
one-row tensor requests, side by side in one run.

    apt-get install wrk nghttp2-client     # wrk for HTTP, h2load for gRPC (both C load generators, one thread)
    .venv/bin/python bench/grpc_serving.py [--duration 10] [--connections 16] [--rounds 2] [--venv bench/.venv-mlserver]

Each server gets a `ModelInferRequest` of one [1, 29] FP32 tensor as raw contents (the anchor forest: 100 trees of
depth 8, 29 features); both answers are first checked against scikit-learn with a gRPC client. h2load sends the same
framed request over HTTP/2 (`application/grpc`) on 16 connections; finalmile checks a token on every request,
MLServer has none to check. finalmile's HTTP figure is wrk with the same tensor as V2 JSON.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
import numpy as np
from rich.console import Console
from rich.table import Table

from finalmile import Client
from finalmile.serving.grpc import open_inference_pb2 as pb
from finalmile.serving.grpc.open_inference_pb2_grpc import GRPCInferenceServiceStub

sys.path.insert(0, str(Path(__file__).parent))
from mlserver import ensure_venv, free_port, mlserver  # noqa: E402
from runtimes import anchor_forest, data  # noqa: E402
from serving import _median, _server, need, v2_tensor, wrk  # noqa: E402

METHOD = "/inference.GRPCInferenceService/ModelInfer"
OUTPUTS = {"mlserver": "predict_proba", "finalmile": "probabilities"}


def infer_request(model: str, row: np.ndarray, output: str) -> pb.ModelInferRequest:
    """One [1, 29] tensor as raw contents, asking for the class probabilities (each server's own name for them)."""
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="input-0", datatype="FP32", shape=list(row.shape))
    request.raw_input_contents.append(row.astype("<f4").tobytes())
    request.outputs.add(name=output)
    return request


def probabilities(response: pb.ModelInferResponse, name: str) -> np.ndarray:
    """An output as an array (raw contents in order, or typed contents)."""
    for i, output in enumerate(response.outputs):
        if output.name == name:
            if response.raw_output_contents:
                dtype = {"FP32": "<f4", "FP64": "<f8"}[output.datatype]
                return np.frombuffer(response.raw_output_contents[i], dtype=dtype).reshape(list(output.shape))
            return np.asarray(output.contents.fp64_contents or output.contents.fp32_contents).reshape(
                list(output.shape)
            )
    raise KeyError(name)


def h2load(target: str, body: bytes, token: str, seconds: int, connections: int, workdir: Path) -> float:
    """Requests/s of h2load posting the framed gRPC message `body` for `seconds` (after a one-second warm-up)."""
    framed = workdir / "grpc-body.bin"
    framed.write_bytes(b"\x00" + len(body).to_bytes(4, "big") + body)
    headers = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    if token:
        headers += ["-H", f"authorization: Bearer {token}"]
    out = subprocess.run(
        ["h2load", "-t1", f"-c{connections}", "-m1", f"-D{seconds}", "--warm-up-time=1", "-d", str(framed),
         *headers, target + METHOD],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    failed = re.search(r"requests: .*?(\d+) failed", out)
    assert found, out
    assert failed is None or failed.group(1) == "0", out
    return float(found.group(1))


def check(target: str, request: pb.ModelInferRequest, name: str, expected: np.ndarray, token: str) -> None:
    """One answer over gRPC, compared with scikit-learn's."""
    with grpc.insecure_channel(target) as channel:
        metadata = [("authorization", f"Bearer {token}")] if token else []
        response = GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=metadata, timeout=30)
    got = probabilities(response, name)
    assert np.allclose(got.reshape(expected.shape), expected, atol=1e-4), (target, got, expected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--venv", type=Path, default=Path(__file__).parent / ".venv-mlserver")
    args = parser.parse_args()
    need("wrk", "h2load")
    console = Console()
    binary = ensure_venv(args.venv.resolve(), console)
    X, y = data()
    forest = anchor_forest(X, y)
    row = X.head(1).to_numpy(np.float32)
    expected = forest.predict_proba(X.head(1))
    workdir = Path(tempfile.mkdtemp())
    home = workdir / "home"
    with Client(home=home) as client:
        uploaded = client.upload_model("forest", forest, sample=X.head(500))
        client.build_pipeline("forest").add_model_step(uploaded).deploy()
        _, token = client.services.init_access()
    auth = {"authorization": f"Bearer {token}"}
    requests = {side: infer_request("forest", row, name) for side, name in OUTPUTS.items()}
    runs: dict[str, list[float]] = {}
    try:
        for round_ in range(args.rounds):
            for side in ("mlserver", "finalmile") if round_ % 2 == 0 else ("finalmile", "mlserver"):
                console.print(f"round {round_ + 1}: {side}")
                if side == "mlserver":
                    grpc_port = free_port()
                    with mlserver(binary, {"forest": forest}, workdir, grpc_port=grpc_port):
                        target = f"127.0.0.1:{grpc_port}"
                        check(target, requests[side], OUTPUTS[side], expected, "")
                        body = requests[side].SerializeToString()
                        rps = h2load(f"http://{target}", body, "", args.duration, args.connections, workdir)
                        runs.setdefault("MLServer 1.7.1, gRPC", []).append(rps)
                else:
                    grpc_port = free_port()
                    with _server(sys.executable, ("--grpc-port", str(grpc_port)), home, auth,
                                 ready="/v2/models/forest/ready") as base:  # fmt: skip
                        target = f"127.0.0.1:{grpc_port}"
                        check(target, requests[side], OUTPUTS[side], expected, token)
                        body = requests[side].SerializeToString()
                        rps = h2load(f"http://{target}", body, token, args.duration, args.connections, workdir)
                        runs.setdefault("finalmile, gRPC", []).append(rps)
                        http = wrk(f"{base}/v2/models/forest/infer", v2_tensor(X.head(1)), "application/json",
                                   args.duration, args.connections, workdir, token=token)  # fmt: skip
                        runs.setdefault("finalmile, HTTP (V2 JSON)", []).append(_median([http])["rps"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    medians = {name: float(np.median(values)) for name, values in runs.items()}
    table = Table("server", "req/s", "vs MLServer gRPC",
                  title=f"one row, [1, 29] FP32 tensor, {args.connections} connections, {args.duration} s, median of "
                        f"{args.rounds} (bench/grpc_serving.py)")  # fmt: skip
    for name, rps in medians.items():
        table.add_row(name, f"{rps:,.0f}", f"{rps / medians['MLServer 1.7.1, gRPC']:.1f}×")
    console.print(table)
    console.print(
        f"finalmile gRPC / finalmile HTTP: {medians['finalmile, gRPC'] / medians['finalmile, HTTP (V2 JSON)']:.2f}"
    )


if __name__ == "__main__":
    main()
