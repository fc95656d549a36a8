"""Regenerates `open_inference_pb2.py` and `open_inference_pb2_grpc.py` from `open_inference.proto` (needs
grpcio-tools with a protoc of the protobuf major version the `grpc` extra allows: `grpcio-tools<1.80` for 6.x)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    from grpc_tools import protoc

    code = protoc.main(["protoc", f"-I{HERE}", f"--python_out={HERE}", f"--pyi_out={HERE}",
                        f"--grpc_python_out={HERE}", str(HERE / "open_inference.proto")])  # fmt: skip
    if code:
        raise SystemExit(code)
    # protoc writes a top-level import; the modules live in this package
    stub = HERE / "open_inference_pb2_grpc.py"
    stub.write_text(stub.read_text().replace("import open_inference_pb2 as", "from . import open_inference_pb2 as"))


if __name__ == "__main__":
    main()
