"""Asymmetric -> symmetric (TensorRT) grid lowering: exact below 8 bits, widened (bits lost) at 8."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort

from srq.export.lint import lint_model
from srq.export.qdq_nodes import IntGrid, quantize_activation_input
from srq.export.symmetric import requantize_weight, to_symmetric


def _qdq(grid: IntGrid, x: np.ndarray) -> np.ndarray:
    inp, out = gs.Variable("x", np.float32, x.shape), gs.Variable("y", np.float32, x.shape)
    node = gs.Node("Identity", "id", inputs=[inp], outputs=[out])
    graph = gs.Graph(nodes=[node], inputs=[inp], outputs=[out], opset=21)
    quantize_activation_input(graph, node, 0, grid, "s")
    graph.cleanup().toposort()
    model = gs.export_onnx(graph)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0], model


def test_4bit_asymmetric_activation_lowers_exactly_and_passes_trt_lint():
    asym = IntGrid(np.array(0.1, np.float32), np.array(3), 0, 15, "uint8")
    sym, lost = to_symmetric(asym, weight=False)
    assert lost == 0.0 and (sym.qmin, sym.qmax) == (-3, 12)
    x = np.linspace(-1, 2, 301, dtype=np.float32)
    a, _ = _qdq(asym, x)
    b, model = _qdq(sym, x)
    np.testing.assert_array_equal(a, b)
    assert lint_model(model, "trt") == []


def test_8bit_one_sided_range_widens_and_loses_one_bit():
    asym = IntGrid(np.array(0.01, np.float32), np.array(0), 0, 255, "uint8")  # [0, 2.55]
    sym, lost = to_symmetric(asym, weight=False)
    assert (sym.qmin, sym.qmax) == (-128, 127)
    np.testing.assert_allclose(float(sym.scale), 2.55 / 127, rtol=1e-6)
    np.testing.assert_allclose(lost, np.log2(255 / 127), rtol=1e-6)


def test_8bit_zero_point_128_is_exact():
    assert to_symmetric(IntGrid(np.array(0.01, np.float32), np.array(128), 0, 255, "uint8"), weight=False)[1] == 0.0


def test_per_channel_weights_exact_below_8_bits_and_requantized_at_8():
    q = np.array([[0, 15, 7], [2, 9, 15]])
    grid = IntGrid(np.array([0.5, 0.25], np.float32), np.array([7, 2]), 0, 15, "uint8", axis=0)
    sym, lost = to_symmetric(grid, weight=True)
    assert lost == 0.0
    np.testing.assert_array_equal(requantize_weight(q, grid, sym), q - np.array([[7], [2]]))
    grid8 = IntGrid(np.array([0.5, 0.25], np.float32), np.array([10, 200]), 0, 255, "uint8", axis=0)
    sym8, lost8 = to_symmetric(grid8, weight=True)
    assert (sym8.qmin, sym8.qmax) == (-127, 127) and lost8 > 0.9
    w = requantize_weight(np.array([[255, 0], [0, 255]]), grid8, sym8)
    assert np.abs(w).max() == 127
