from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest
from skl2onnx import to_onnx
from sklearn.linear_model import LinearRegression

from finalmile.config import FinalmileSettings
from finalmile.runtimes import onnx as onnx_runtime

X = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
MODEL = to_onnx(LinearRegression().fit(X, X[:, 0]), X[:1]).SerializeToString()


def test_sessions_are_tuned_for_a_small_machine() -> None:
    settings = FinalmileSettings(ort_intra_op_threads=2, ort_device="cpu")
    session = onnx_runtime.make_session(MODEL, settings)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session.get_providers() == ["CPUExecutionProvider"]


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this machine has CUDA")
def test_without_cuda_it_falls_back_to_cpu_with_a_log_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_runtime, "_cpu_fallback_logged", False)
    with caplog.at_level(logging.INFO, logger="finalmile.runtimes.onnx"):
        session = onnx_runtime.make_session(MODEL, FinalmileSettings(ort_device="auto"))
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert "CUDA execution provider not available; running ONNX models on the CPU" in caplog.text


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(), reason="needs onnxruntime-gpu and a GPU"
)
def test_with_cuda_the_cuda_provider_comes_first() -> None:
    session = onnx_runtime.make_session(MODEL, FinalmileSettings(ort_device="auto"))
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    out = session.run(None, {"X": X})[0]
    np.testing.assert_allclose(out.reshape(-1), X[:, 0], atol=1e-4)
