"""Which integer kernels the ORT engine picks (``session.x64quantprecision``) and that they stay exact.

Real sessions on a tiny x2 SR graph around one QDQ Conv (u8 activations over their full range,
per-channel weights): the engine's fused output must equal the unfused QDQ graph
(``ORT_DISABLE_ALL``: DequantizeLinear + float Conv + QuantizeLinear) bit for bit, whichever
kernel it picked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from srq.runtime.ort_engine import OrtEngine, OrtOptions, needs_u8u8_kernels, u8s8_can_saturate

CIN, COUT, HW = 32, 12, 16  # COUT = 3 * 2 * 2: DepthToSpace to an x2 RGB output
X_SCALE, Y_SCALE = np.float32(1 / 255), np.float32(0.05)


def _qdq_conv(path: Path, w_int: np.ndarray, w_zp: np.ndarray, w_scale: np.ndarray) -> Path:
    """``lr`` (1, 3, HW, HW) -> float 1x1 Conv to CIN + Sigmoid -> Q/DQ u8 -> Conv 3x3 (DQ weights,
    DQ int32 bias) -> Q/DQ u8 -> DepthToSpace -> ``sr`` (1, 3, 2 HW, 2 HW)."""
    rng = np.random.default_rng(1)
    bias = np.round(rng.normal(0, 200, COUT)).astype(np.int32)
    spread = rng.normal(0, 3, (CIN, 3, 1, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("spread", spread), ("xs", X_SCALE), ("xz", np.uint8(0)), ("ys", Y_SCALE), ("yz", np.uint8(128)),
        ("w", w_int), ("ws", w_scale), ("wz", w_zp),
        ("b", bias), ("bs", (X_SCALE * w_scale).astype(np.float32)), ("bz", np.zeros(COUT, np.int32))]]
    nodes = [
        helper.make_node("Conv", ["lr", "spread"], ["s"]),
        helper.make_node("Sigmoid", ["s"], ["a"]),
        helper.make_node("QuantizeLinear", ["a", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["bd"], axis=0),
        helper.make_node("Conv", ["xd", "wd", "bd"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["cq"]),
        helper.make_node("DequantizeLinear", ["cq", "ys", "yz"], ["y"]),
        helper.make_node("DepthToSpace", ["y"], ["sr"], blocksize=2),
    ]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("lr", TensorProto.FLOAT, [1, 3, HW, HW])],
                              [helper.make_tensor_value_info("sr", TensorProto.FLOAT, [1, 3, 2 * HW, 2 * HW])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path)
    return path


def _weights(lo: int, hi: int, dtype: type) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = np.random.default_rng(0).integers(lo, hi + 1, (COUT, CIN, 3, 3)).astype(dtype)
    return w, np.zeros(COUT, dtype), np.full(COUT, 0.004, np.float32)


def _run_unfused(path: Path, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"lr": x})[0]


def _run_fused(path: Path, x: np.ndarray, precision: bool) -> np.ndarray:
    so = ort.SessionOptions()
    if precision:
        so.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"lr": x})[0]


X = np.random.default_rng(2).random((1, 3, HW, HW), dtype=np.float32)


def test_small_s8_weights_keep_the_fast_kernel_and_stay_exact(tmp_path):
    """|w| <= 64 with u8 inputs over [0, 255]: no int16 pair can saturate, so U8S8 is exact."""
    path = _qdq_conv(tmp_path / "s8_small.onnx", *_weights(-64, 64, np.int8))
    assert not needs_u8u8_kernels(onnx.load(path))
    with OrtEngine(path, OrtOptions(threads=1, save_optimized=False)) as eng:
        assert eng.u8u8_kernels is False
        np.testing.assert_array_equal(eng.run(X), _run_unfused(path, X))


def test_full_range_s8_weights_switch_to_exact_kernels_where_u8s8_saturates(tmp_path):
    """Full-range s8 weights: on x86 without VNNI the engine switches to U8U8 (U8S8 drifts there); with
    VNNI it keeps U8S8, which is exact. The engine's output equals the unfused graph either way."""
    path = _qdq_conv(tmp_path / "s8_full.onnx", *_weights(-128, 127, np.int8))
    assert needs_u8u8_kernels(onnx.load(path))
    unfused = _run_unfused(path, X)
    with OrtEngine(path, OrtOptions(threads=1, save_optimized=False)) as eng:
        assert eng.u8u8_kernels is u8s8_can_saturate()
        np.testing.assert_array_equal(eng.run(X), unfused)
    fast = _run_fused(path, X, precision=False)
    cpu = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    if not u8s8_can_saturate():  # vpdpbusd: exact without the switch
        np.testing.assert_array_equal(fast, unfused)
    elif " avx2" in cpu:  # the reason for the switch: vpmaddubsw's int16 pairs saturate here
        assert not np.array_equal(fast, unfused)


@pytest.mark.parametrize(("flags", "saturates"), [("fpu avx2 fma", True), ("avx2 avx512f avx512_vnni", False),
                                                  ("avx2 avx_vnni", False)])
def test_u8s8_saturation_follows_the_cpu_flags(flags, saturates):
    assert u8s8_can_saturate(f"processor\t: 0\nflags\t\t: {flags}\n") is saturates
    assert u8s8_can_saturate("processor\t: 0\nFeatures\t: fp asimd\n") is True  # no x86 flags: the safe answer


def test_u8_weights_and_int8_activations(tmp_path):
    """u8 weights run U8U8 anyway (no switch needed); an int8 activation feeding a DQ does need it."""
    path = _qdq_conv(tmp_path / "u8.onnx", *_weights(0, 255, np.uint8))
    assert not needs_u8u8_kernels(onnx.load(path))
    model = onnx.load(path)
    for t in model.graph.initializer:
        if t.name == "xz":
            t.CopyFrom(numpy_helper.from_array(np.int8(0), "xz"))
    assert needs_u8u8_kernels(model)
