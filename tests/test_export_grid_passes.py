"""The export's exact grid rewrites, on small graphs run in ONNX Runtime: a Q moved in front of a nearest Resize,
and a requantization on the grid a tensor already has skipped. Each must leave the engine's output bit for bit."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest

from srq.export.qdq_nodes import (IntGrid, quantize_activation_input, quantize_activation_output,
                                  quantize_before_nearest_resize, skip_requantization_on_same_grid)


def _run(graph: gs.Graph, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Output and the op types of ORT's optimized graph."""
    import tempfile

    import onnx

    model = gs.export_onnx(graph.cleanup().toposort())
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = f"{tmp}/opt.onnx"
        opts.log_severity_level = 3
        out = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(
            None, {"x": x})[0]
        return out, [n.op_type for n in onnx.load(f"{tmp}/opt.onnx").graph.node]


def _grid(scale: float, zp: int) -> IntGrid:
    return IntGrid(np.asarray(scale, np.float32), np.asarray(zp, np.uint8), 0, 255, "uint8")


def _lrelu_resize_conv(first: str) -> gs.Graph:
    """``x -> [first] -> Resize(nearest, x2) -> Q -> DQ -> Conv(1x1)``; ``first`` is a LeakyRelu, the LeakyRelu
    followed by a Q / DQ on another grid (``"dq"``), or an Add of two DQs (``"add"``)."""
    x = gs.Variable("x", np.float32, (1, 2, 4, 4))
    a = gs.Variable("a", np.float32, (1, 2, 4, 4))
    r = gs.Variable("r", np.float32, (1, 2, 8, 8))
    y = gs.Variable("y", np.float32, (1, 2, 8, 8))
    nodes = [gs.Node("Add", "add", inputs=[x, x], outputs=[a]) if first == "add"
             else gs.Node("LeakyRelu", "act", attrs={"alpha": 0.2}, inputs=[x], outputs=[a])]
    resize = gs.Node("Resize", "up", attrs={"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                                            "nearest_mode": "floor"},
                     inputs=[a, gs.Constant("roi", np.zeros(0, np.float32)),
                             gs.Constant("scales", np.array([1, 1, 2, 2], np.float32))], outputs=[r])
    conv = gs.Node("Conv", "conv", inputs=[r, gs.Constant("w", np.full((2, 2, 1, 1), 0.5, np.float32))], outputs=[y])
    graph = gs.Graph([*nodes, resize, conv], [x], [y], opset=17)
    if first == "dq":
        quantize_activation_output(graph, nodes[0], _grid(0.05, 100), "other")
    if first == "add":
        for i in range(2):
            quantize_activation_input(graph, nodes[0], i, _grid(0.05, 100), f"add_in{i}")
    quantize_activation_input(graph, conv, 0, _grid(0.02, 128), "conv_in")
    return graph


def test_a_q_after_a_nearest_resize_moves_in_front_of_it_exactly():
    x = np.random.default_rng(0).normal(size=(1, 2, 4, 4)).astype(np.float32) * 2
    before, _ = _run(_lrelu_resize_conv("lrelu"), x)
    graph = _lrelu_resize_conv("lrelu")
    assert quantize_before_nearest_resize(graph) == 1
    after, ops = _run(graph, x)
    np.testing.assert_array_equal(after, before)
    i = ops.index("Resize")  # the resize now moves uint8 levels: Q -> Resize -> DQ
    assert ops[i - 1:i + 2] == ["QuantizeLinear", "Resize", "DequantizeLinear"], ops


@pytest.mark.parametrize("first", ["dq", "add"])
def test_a_resize_of_another_grid_or_of_a_fusable_add_stays(first):
    """A Q in front would make ``Q -> DQ -> Q -> DQ`` (which ORT rewrites inexactly) or a QLinearAdd that
    calibration did not compute."""
    assert quantize_before_nearest_resize(_lrelu_resize_conv(first)) == 0


@pytest.mark.parametrize("same", [True, False])
def test_a_requantization_on_the_same_grid_is_skipped_exactly(same):
    """``Relu -> Q -> DQ -> Q' -> DQ' -> Conv`` with ``Q'`` on the same grid (skipped) or another (kept)."""
    x = np.random.default_rng(1).normal(size=(1, 2, 4, 4)).astype(np.float32)

    def build() -> gs.Graph:
        xi = gs.Variable("x", np.float32, (1, 2, 4, 4))
        h = gs.Variable("h", np.float32, (1, 2, 4, 4))
        y = gs.Variable("y", np.float32, (1, 2, 4, 4))
        relu = gs.Node("Relu", "relu", inputs=[xi], outputs=[h])
        conv = gs.Node("Conv", "conv", inputs=[h, gs.Constant("w", np.ones((2, 2, 1, 1), np.float32))], outputs=[y])
        graph = gs.Graph([relu, conv], [xi], [y], opset=17)
        quantize_activation_output(graph, relu, _grid(0.01, 0), "relu_out")
        quantize_activation_input(graph, conv, 0, _grid(0.01 if same else 0.011, 0), "conv_in")
        return graph

    before, _ = _run(build(), x)
    graph = build()
    assert skip_requantization_on_same_grid(graph) == int(same)
    after, _ = _run(graph, x)
    np.testing.assert_array_equal(after, before)
