"""Shared fixtures: ``shared_data`` = the read-only ../shared/data folder (benchmarks, weights)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from srq.imaging.datasets import open_folder


def shared_data_path() -> Path:
    """``$SRQ_SHARED_DATA`` if set, else ``<repo>/../shared/data``."""
    env = os.environ.get("SRQ_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; skips the test with the reason when it is absent."""
    path = shared_data_path()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set SRQ_SHARED_DATA)")
    return path


@pytest.fixture(scope="module")
def lr_images(shared_data) -> list[torch.Tensor]:
    """Set5 x2 LR images as (1, 3, h, w) float32 in [0, 1]."""
    ds = open_folder(shared_data / "benchmarks/Set5", 2)
    return [torch.from_numpy(s.lr.astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous() for s in ds]


@pytest.fixture(scope="module")
def set5_lr(shared_data):
    """``load(scale)``: Set5 LR images at that scale as (1, 3, h, w) float32 in [0, 1]."""
    def load(scale: int) -> list[torch.Tensor]:
        ds = open_folder(shared_data / "benchmarks/Set5", scale)
        return [torch.from_numpy(s.lr.astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous() for s in ds]

    return load


@pytest.fixture
def assert_engine_equals_fake_quant():
    """``check(weights, recipe, onnx_path, tiles)``: ORT (all optimizations, so every fusion) runs the exported
    model on each LR tile and matches the fake-quant model (``weights`` with ``recipe`` applied) to 1e-6."""
    import onnxruntime as ort

    from srq.calib.recipe import apply_recipe
    from srq.zoo.loader import load_model

    def check(weights, recipe, path, tiles) -> None:
        fake = load_model(weights)
        apply_recipe(fake.module, recipe)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        for x in tiles:
            with torch.no_grad():
                ref = fake.module(x).numpy()
            out = session.run(None, {"lr": x.numpy()})[0]
            assert np.abs(out - ref).max() <= 1e-6, np.abs(out - ref).max()

    return check


@pytest.fixture
def assert_swinir_integer_kernels():
    """``check(recipe, onnx_path)``: every quantized Linear runs as QGemm and every quantized MatMul as an
    integer MatMul in ORT's optimized graph, with no float MatMul/Gemm left."""
    from srq.export.ort_fusion import optimized_op_counts

    def check(recipe, path) -> None:
        linears = {s.name.rsplit(".", 1)[0] for s in recipe.sites if s.op == "linear"}
        matmuls = {s.name.rsplit(".", 1)[0] for s in recipe.sites if s.op == "matmul"}
        counts = optimized_op_counts(path)
        assert counts["QGemm"] == len(linears), counts
        assert counts["QLinearMatMul"] + counts["MatMulIntegerToFloat"] == len(matmuls), counts
        assert counts["MatMul"] == 0 and counts["Gemm"] == 0, counts

    return check
