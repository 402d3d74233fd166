"""ONNX Runtime fusion of srq's QDQ patterns (the table in docs/export-ort-fusion.md), real CPU sessions."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest

from srq.export.ort_fusion import optimized_op_counts
from srq.export.qdq_nodes import (IntGrid, dequantize_bias_input, dequantize_weight_input,
                                  quantize_activation_input)

RNG_SEED = 0


def _act(bits: int, container: str = "uint8", scale: float = 0.05) -> IntGrid:
    if container.startswith("u"):
        return IntGrid(np.array(scale, np.float32), np.array(2 ** (bits - 1)), 0, 2**bits - 1, container)
    return IntGrid(np.array(scale, np.float32), np.array(0), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1, container)


def _weight_grid(w: np.ndarray, container: str, symmetric: bool) -> tuple[np.ndarray, IntGrid]:
    """Per-output-channel (axis 0) min-max grid of ``w`` and its integer values."""
    flat = w.reshape(w.shape[0], -1)
    shape = (-1,) + (1,) * (w.ndim - 1)
    if symmetric:
        hi = {"int8": 127, "int4": 7, "int2": 1}[container]
        s = (np.abs(flat).max(1) / hi).astype(np.float32)
        return np.clip(np.round(w / s.reshape(shape)), -hi, hi), IntGrid(s, np.zeros(len(s), int), -hi, hi, container, 0)
    s = ((flat.max(1) - flat.min(1)) / 255).astype(np.float32)
    zp = np.round(-flat.min(1) / s).astype(int)
    q = np.clip(np.round(w / s.reshape(shape)) + zp.reshape(shape), 0, 255)
    return q, IntGrid(s, zp, 0, 255, container, 0)


def _quantize_output(graph: gs.Graph, y: gs.Variable, grid: IntGrid) -> None:
    out = gs.Variable("out", np.float32, y.shape)
    node = gs.Node("Identity", "out_identity", inputs=[y], outputs=[out])
    graph.nodes.append(node)
    graph.outputs = [out]
    quantize_activation_input(graph, node, 0, grid, "y_site")


def conv_model(bits=8, act="uint8", weights="int8", symmetric=True, int32_bias=True, output_q=True,
               producer_float_clip=None, opset=21):
    """[producer Conv ->] Conv 4->6 3x3 with QDQ input, weight (axis 0), bias; optional Q on the output."""
    rng = np.random.default_rng(RNG_SEED)
    x = gs.Variable("x", np.float32, (1, 4, 8, 8))
    y = gs.Variable("y", np.float32, (1, 6, 8, 8))
    w = rng.normal(size=(6, 4, 3, 3)).astype(np.float32)
    conv = gs.Node("Conv", "conv", attrs={"pads": [1] * 4},
                   inputs=[x, gs.Constant("W", w), gs.Constant("B", rng.normal(size=6).astype(np.float32))], outputs=[y])
    graph = gs.Graph(nodes=[conv], inputs=[x], outputs=[y], opset=opset)
    if producer_float_clip is not None:
        p = gs.Variable("p", np.float32, (1, 4, 8, 8))
        producer = gs.Node("Conv", "producer", attrs={"pads": [1] * 4},
                           inputs=[x, gs.Constant("W0", rng.normal(size=(4, 4, 3, 3)).astype(np.float32))], outputs=[p])
        graph.nodes.append(producer)
        conv.inputs[0] = p
        if producer_float_clip:
            c = gs.Variable("pc", np.float32, (1, 4, 8, 8))
            graph.nodes.append(gs.Node("Clip", "float_clip", inputs=[p, gs.Constant("lo", np.array(0.0, np.float32)),
                                                                     gs.Constant("hi", np.array(0.75, np.float32))], outputs=[c]))
            conv.inputs[0] = c
        quantize_activation_input(graph, producer, 0, _act(8, act), "p_in")
        q0, g0 = _weight_grid(producer.inputs[1].values, "int8", True)
        dequantize_weight_input(graph, producer, 1, q0, g0, "W0")
    x_grid = _act(bits, act)
    quantize_activation_input(graph, conv, 0, x_grid, "x_site")
    qw, w_grid = _weight_grid(w, weights, symmetric)
    dequantize_weight_input(graph, conv, 1, qw, w_grid, "W")
    if int32_bias:
        dequantize_bias_input(graph, conv, 2, x_grid.scale * w_grid.scale, "B")
    if output_q:
        _quantize_output(graph, y, _act(bits, act, scale=0.3))
    graph.cleanup().toposort()
    return gs.export_onnx(graph)


def matmul_model(bits=8, container="uint8", output_q=True):
    """Activation x activation MatMul (attention-like), both inputs QDQ."""
    a, b = gs.Variable("a", np.float32, (1, 2, 16, 8)), gs.Variable("b", np.float32, (1, 2, 8, 16))
    y = gs.Variable("y", np.float32, (1, 2, 16, 16))
    mm = gs.Node("MatMul", "mm", inputs=[a, b], outputs=[y])
    graph = gs.Graph(nodes=[mm], inputs=[a, b], outputs=[y], opset=21)
    quantize_activation_input(graph, mm, 0, _act(bits, container), "a_site")
    quantize_activation_input(graph, mm, 1, _act(bits, container), "b_site")
    if output_q:
        _quantize_output(graph, y, _act(bits, container, scale=0.3))
    graph.cleanup().toposort()
    return gs.export_onnx(graph)


def linear_model(bias="float", output_q=False, weights="int8"):
    """torch's Linear export: MatMul(x[1,16,8], W[8,6]) + Add(bias); weight axis 1."""
    rng = np.random.default_rng(RNG_SEED)
    x, t, y = (gs.Variable(n, np.float32, s) for n, s in (("x", (1, 16, 8)), ("t", (1, 16, 6)), ("y", (1, 16, 6))))
    w = rng.normal(size=(8, 6)).astype(np.float32)
    mm = gs.Node("MatMul", "fc", inputs=[x, gs.Constant("W", w)], outputs=[t])
    add = gs.Node("Add", "fc_bias", inputs=[t, gs.Constant("B", rng.normal(size=6).astype(np.float32))], outputs=[y])
    graph = gs.Graph(nodes=[mm, add], inputs=[x], outputs=[y], opset=21)
    x_grid = _act(8)
    quantize_activation_input(graph, mm, 0, x_grid, "x_site")
    qw, grid = _weight_grid(w.T, weights, True)
    dequantize_weight_input(graph, mm, 1, qw.T, IntGrid(grid.scale, grid.zero_point, grid.qmin, grid.qmax,
                                                        weights, axis=1), "W")
    if bias == "int32":
        dequantize_bias_input(graph, add, 1, x_grid.scale * grid.scale, "B")
    if output_q:
        _quantize_output(graph, y, _act(8, scale=0.3))
    graph.cleanup().toposort()
    return gs.export_onnx(graph)


@pytest.mark.parametrize("kwargs,fused,float_op", [
    ({}, "QLinearConv", None),
    ({"int32_bias": False}, "QLinearConv", None),
    ({"output_q": False}, None, "Conv"),
    ({"weights": "uint8", "symmetric": False}, "QLinearConv", None),
    ({"act": "int8"}, "QLinearConv", None),
    ({"bits": 4}, "QLinearConv", None),
    ({"bits": 4, "act": "uint4", "weights": "int4"}, None, "Conv"),
    ({"weights": "int4"}, None, "Conv"),
])
def test_conv_fusion(kwargs, fused, float_op):
    ops = optimized_op_counts(conv_model(**kwargs))
    if fused:
        assert ops[fused] == 1 and ops["Conv"] == 0, ops
    else:
        assert ops[float_op] == 1 and ops["QLinearConv"] == 0, ops


def test_integer_clip_keeps_producer_fused_float_clip_breaks_it():
    assert optimized_op_counts(conv_model(bits=4, producer_float_clip=False))["QLinearConv"] == 2
    ops = optimized_op_counts(conv_model(bits=4, producer_float_clip=True))
    assert ops["QLinearConv"] == 1 and ops["FusedConv"] + ops["Conv"] == 1, ops


def test_uint2_activations_fail_session_creation():
    with pytest.raises(Exception, match="uint2"):
        optimized_op_counts(conv_model(bits=2, act="uint2", weights="int2", opset=25))


@pytest.mark.parametrize("kwargs,fused", [
    ({}, "QLinearMatMul"), ({"output_q": False}, "MatMulIntegerToFloat"), ({"bits": 4}, "QLinearMatMul"),
    ({"bits": 4, "container": "uint4"}, None)])
def test_activation_matmul_fusion(kwargs, fused):
    ops = optimized_op_counts(matmul_model(**kwargs))
    assert (ops[fused] == 1) if fused else (ops["MatMul"] == 1), ops


@pytest.mark.parametrize("kwargs,fused", [
    ({"output_q": True}, True), ({}, False), ({"bias": "int32"}, True), ({"bias": "int32", "weights": "int4"}, False)])
def test_linear_fusion(kwargs, fused):
    ops = optimized_op_counts(linear_model(**kwargs))
    assert (ops["QGemm"] == 1) == fused, ops


def _run(model, level, x64_precision):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    if x64_precision:
        opts.add_session_config_entry("session.x64quantprecision", "1")
    x = np.random.default_rng(1).uniform(-3, 3, (1, 4, 8, 8)).astype(np.float32)
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_fused_qlinearconv_equals_unfused_graph_with_x64quantprecision():
    model = conv_model()
    reference = _run(model, ort.GraphOptimizationLevel.ORT_DISABLE_ALL, False)
    fused = _run(model, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, True)
    np.testing.assert_array_equal(fused, reference)
    float_bias = _run(conv_model(int32_bias=False), ort.GraphOptimizationLevel.ORT_ENABLE_ALL, True)
    np.testing.assert_array_equal(float_bias, reference)
