"""Engines: ONNX Runtime session settings and model checks; TensorRT when it exists here."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from srq.errors import SrqError
from srq.runtime.engine import open_engine
from srq.runtime.ort_engine import OrtEngine, OrtOptions, optimized_model_path
from srq.runtime.tiling import upscale
from srq.runtime.trt_engine import TrtEngine, build_trt_engine, trt_available
from test_runtime_nets import make_sr_onnx

TRT_OK, TRT_WHY = trt_available()


def test_ort_engine_reads_io_and_saves_the_optimized_graph(tmp_path):
    model = make_sr_onnx(tmp_path / "m.onnx", (12, 20), channels=3, scale=3)
    with open_engine(model, threads=1) as eng:
        assert (eng.input_name, eng.output_name) == ("lr", "sr")
        assert eng.input_shape == (1, 3, 12, 20) and eng.output_shape == (1, 3, 36, 60)
        assert (eng.scale, eng.tile, eng.channels) == (3, (12, 20), 3)
        x = np.random.default_rng(0).random(eng.input_shape, np.float32)
        y = eng.run(x)
    opt = optimized_model_path(model)
    assert opt.name == "m.ort-opt.onnx" and onnx.load(opt).graph.node  # a real ONNX graph
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left
    plain = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(y, plain.run(None, {"lr": x})[0], atol=1e-5)
    reloaded = ort.InferenceSession(str(opt), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(y, reloaded.run(None, {"lr": x})[0], atol=1e-5)


def test_ort_engine_profile_sums_kernel_time_by_op_type(tmp_path):
    model = make_sr_onnx(tmp_path / "m.onnx", (12, 20), channels=3, scale=3)
    graph_ops = [n.op_type for n in onnx.load(model).graph.node]
    eng = OrtEngine(model, OrtOptions(threads=1, save_optimized=False, optimization="disable", profile=True))
    x = np.random.default_rng(0).random(eng.input_shape, np.float32)
    for _ in range(3):
        eng.run(x)
    times = eng.op_times()
    assert {op: n for op, (_, n) in times.items()} == {op: 3 * graph_ops.count(op) for op in set(graph_ops)}
    assert all(ms > 0 for ms, _ in times.values())
    assert list(times) == sorted(times, key=lambda op: -times[op][0])
    with pytest.raises(SrqError, match="profile=True"):
        OrtEngine(model, OrtOptions(threads=1, save_optimized=False)).op_times()


def test_ort_engine_rejects_what_it_cannot_tile(tmp_path):
    model = onnx.load(make_sr_onnx(tmp_path / "m.onnx", (8, 8)))
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    onnx.save(model, tmp_path / "dyn.onnx")
    with pytest.raises(SrqError, match=r"dyn.onnx: input shape .* is not fixed"):
        OrtEngine(tmp_path / "dyn.onnx")
    with pytest.raises(SrqError, match="no such engine file"):
        OrtEngine(tmp_path / "absent.onnx")
    with pytest.raises(SrqError, match="not available here"):
        OrtEngine(tmp_path / "m.onnx", OrtOptions(providers=("cpu", "rocm")))
    with pytest.raises(SrqError, match="optimization level"):
        OrtEngine(tmp_path / "m.onnx", OrtOptions(optimization="max"))


@pytest.mark.skipif(TRT_OK, reason="TensorRT is available here")
def test_tensorrt_absent_is_a_clear_error_at_use_time(tmp_path):
    assert TRT_WHY
    with pytest.raises(SrqError, match="TensorRT not available here: "):
        TrtEngine(tmp_path / "m.engine")
    with pytest.raises(SrqError, match="TensorRT not available here: "):
        build_trt_engine(make_sr_onnx(tmp_path / "m.onnx", (8, 8)), tmp_path / "m.engine")


@pytest.mark.gpu
@pytest.mark.skipif(not TRT_OK, reason=f"TensorRT: {TRT_WHY}")
def test_tensorrt_engine_matches_onnx_runtime(tmp_path):
    model = make_sr_onnx(tmp_path / "m.onnx", (32, 32))
    cache = tmp_path / "timing.cache"
    path = build_trt_engine(model, tmp_path / "m.engine", timing_cache=cache)
    assert path.stat().st_size > 0 and cache.is_file()
    img = np.random.default_rng(0).random((45, 70, 3), np.float32)
    with open_engine(path) as trt_eng, open_engine(model, save_optimized=False) as ort_eng:
        assert trt_eng.input_shape == ort_eng.input_shape and trt_eng.scale == 2
        np.testing.assert_allclose(upscale(trt_eng, img), upscale(ort_eng, img), atol=5e-3)  # TF32 convs
