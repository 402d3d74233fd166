"""Q/DQ insertion primitives on tiny graphs built here, run in real ONNX Runtime sessions."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest

from srq.export.ort_fusion import optimized_op_counts
from srq.export.qdq_nodes import (IntGrid, add_matmul_shift_terms, add_output_constant, dequantize_bias_input, dequantize_weight_input,
                                  fold_into_bias, quantize_activation_input, requantize_concat_inputs, set_metadata)


def _run(graph: gs.Graph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    graph.cleanup().toposort()
    model = gs.export_onnx(graph)
    onnx.checker.check_model(model)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def _two_consumers() -> tuple[gs.Graph, gs.Node, gs.Node]:
    x = gs.Variable("x", np.float32, (2, 8))
    a, b = gs.Variable("a", np.float32, (2, 8)), gs.Variable("b", np.float32, (2, 8))
    na, nb = gs.Node("Identity", "ia", inputs=[x], outputs=[a]), gs.Node("Identity", "ib", inputs=[x], outputs=[b])
    return gs.Graph(nodes=[na, nb], inputs=[x], outputs=[a, b], opset=21), na, nb


def test_activation_site_4bit_gives_exact_grid_and_leaves_other_consumer_float():
    graph, na, _ = _two_consumers()
    grid = IntGrid(np.array(0.25, np.float32), np.array(3), 0, 15, "uint8")
    quantize_activation_input(graph, na, 0, grid, "site")
    x = np.linspace(-2, 5, 16, dtype=np.float32).reshape(2, 8)
    qa, fb = _run(graph, {"x": x})
    expected = (np.clip(np.round(x / 0.25) + 3, 0, 15) - 3) * 0.25  # 16 levels from -0.75 to 3.0
    np.testing.assert_array_equal(qa, expected.astype(np.float32))
    np.testing.assert_array_equal(fb, x)
    ops = [n.op for n in graph.nodes]
    assert ops.count("Clip") == 1 and ops.count("QuantizeLinear") == 1


def test_activation_site_8bit_has_no_clip_and_int8_container():
    graph, na, _ = _two_consumers()
    quantize_activation_input(graph, na, 0, IntGrid(np.array(0.1, np.float32), np.array(0), -128, 127, "int8"), "s")
    x = np.linspace(-20, 20, 16, dtype=np.float32).reshape(2, 8)
    qa, _ = _run(graph, {"x": x})
    np.testing.assert_allclose(qa, np.clip(np.round(x / np.float32(0.1)), -128, 127) * np.float32(0.1), rtol=1e-6)
    assert "Clip" not in [n.op for n in graph.nodes]


@pytest.mark.parametrize("container,opset,qmin,qmax,nbytes", [
    ("int8", 21, -127, 127, 24), ("uint8", 21, 0, 255, 24), ("int4", 21, -7, 7, 12), ("uint2", 25, 0, 3, 6)])
def test_weight_site_per_channel_axis0_matches_dequantized_values(container, opset, qmin, qmax, nbytes):
    x, y = gs.Variable("x", np.float32, (4, 6)), gs.Variable("y", np.float32, (4, 6))
    q = np.random.default_rng(0).integers(qmin, qmax + 1, size=(4, 6))
    scale = np.array([0.5, 0.25, 1.0, 2.0], np.float32)
    zp = np.full(4, (qmax + 1) // 2 if qmin == 0 else 0)
    node = gs.Node("Add", inputs=[x, gs.Constant("w", np.zeros((4, 6), np.float32))], outputs=[y])
    graph = gs.Graph(nodes=[node], inputs=[x], outputs=[y], opset=opset)
    dequantize_weight_input(graph, node, 1, q, IntGrid(scale, zp, qmin, qmax, container, axis=0), "w")
    (out,) = _run(graph, {"x": np.zeros((4, 6), np.float32)})
    np.testing.assert_array_equal(out, ((q - zp[:, None]) * scale[:, None]).astype(np.float32))
    stored = next(t for t in gs.export_onnx(graph).graph.initializer if t.name == "w_quantized")
    assert len(stored.raw_data) == nbytes  # 24 values: 1 byte each, or packed 2 / 4 per byte


def test_weight_outside_grid_is_refused():
    graph, na, _ = _two_consumers()
    with pytest.raises(ValueError, match="outside"):
        dequantize_weight_input(graph, na, 0, np.full((2, 8), 9), IntGrid(np.array(1.0, np.float32), np.array(0), -7, 7,
                                                                        "int4"), "w")


def _linear(bias: np.ndarray) -> tuple[gs.Graph, gs.Node]:
    x, y = gs.Variable("x", np.float32, (3, 4)), gs.Variable("y", np.float32, (3, 2))
    w = np.arange(8, dtype=np.float32).reshape(4, 2) / 8
    node = gs.Node("Gemm", "fc", inputs=[x, gs.Constant("W", w), gs.Constant("B", bias)], outputs=[y])
    return gs.Graph(nodes=[node], inputs=[x], outputs=[y], opset=21), node


def test_bias_as_int32_dq_rounds_half_to_even_at_sx_times_sw():
    graph, node = _linear(np.array([0.3, -1.25], np.float32))
    dequantize_bias_input(graph, node, 2, np.array([0.1, 0.5], np.float32), "B")
    (out,) = _run(graph, {"x": np.zeros((3, 4), np.float32)})
    # 0.3 / 0.1 -> 3 -> 0.3 ; -1.25 / 0.5 = -2.5 -> -2 (half to even) -> -1.0
    np.testing.assert_allclose(out[0], [np.float32(3) * np.float32(0.1), -1.0], rtol=1e-7)


def test_fold_into_bias_equals_explicit_add_for_linear():
    x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    addend = np.array([0.5, -0.25], np.float32)
    g1, n1 = _linear(np.array([1.0, 2.0], np.float32))
    fold_into_bias(g1, n1, addend, "beta")
    g2, n2 = _linear(np.array([1.0, 2.0], np.float32))
    add_output_constant(g2, n2, addend, "beta")
    (a,), (b,) = _run(g1, {"x": x}), _run(g2, {"x": x})
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert [n.op for n in g2.nodes].count("Add") == 1


def test_fold_into_bias_creates_missing_bias():
    x, y = gs.Variable("x", np.float32, (1, 2, 3, 3)), gs.Variable("y", np.float32, (1, 1, 3, 3))
    node = gs.Node("Conv", inputs=[x, gs.Constant("W", np.ones((1, 2, 1, 1), np.float32))], outputs=[y])
    graph = gs.Graph(nodes=[node], inputs=[x], outputs=[y], opset=21)
    fold_into_bias(graph, node, np.array([2.0], np.float32), "beta")
    (out,) = _run(graph, {"x": np.zeros((1, 2, 3, 3), np.float32)})
    np.testing.assert_array_equal(out, np.full((1, 1, 3, 3), 2.0, np.float32))


def test_metadata_props_set_and_replaced():
    graph, _, _ = _two_consumers()
    model = gs.export_onnx(graph)
    set_metadata(model, {"srq.version": "1", "srq.target": "ort"})
    set_metadata(model, {"srq.target": "trt"})
    assert {p.key: p.value for p in model.metadata_props} == {"srq.version": "1", "srq.target": "trt"}


@pytest.mark.parametrize("then", ["Softmax", "Relu"])
def test_matmul_shift_terms_leave_out_what_a_row_softmax_cancels(then):
    """``(A' + b_a) @ (B' + b_b)``: before a softmax over the last axis (through a bias Add) only the
    ``b_a colsum(B')`` term is added, and the probabilities match the full product; before anything
    else every term is added and the product itself matches."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 5, 4)).astype(np.float32), rng.normal(size=(2, 4, 6)).astype(np.float32)
    bias = rng.normal(size=(5, 6)).astype(np.float32)
    beta_a, beta_b = 0.7, -1.3
    va, vb = gs.Variable("a", np.float32, a.shape), gs.Variable("b", np.float32, b.shape)
    mm, biased, out = (gs.Variable(n, np.float32, (2, 5, 6)) for n in ("mm", "biased", "out"))
    nodes = [gs.Node("MatMul", "mm", inputs=[va, vb], outputs=[mm]),
             gs.Node("Add", "bias", inputs=[mm, gs.Constant("bias_c", bias)], outputs=[biased]),
             gs.Node(then, "then", attrs={"axis": -1} if then == "Softmax" else {}, inputs=[biased], outputs=[out])]
    graph = gs.Graph(nodes=nodes, inputs=[va, vb], outputs=[out], opset=21)
    add_matmul_shift_terms(graph, nodes[0], beta_a, beta_b, "s")
    (got,) = _run(graph, {"a": a, "b": b})
    logits = (a.astype(np.float64) + beta_a) @ (b.astype(np.float64) + beta_b) + bias
    if then == "Softmax":
        want = np.exp(logits - logits.max(-1, keepdims=True))
        want /= want.sum(-1, keepdims=True)
    else:
        want = np.maximum(logits, 0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert [n.op for n in graph.nodes].count("ReduceSum") == (1 if then == "Softmax" else 2)


@pytest.mark.parametrize("bits", [8, 4])
def test_requantized_concat_parts_give_the_same_levels_and_fuse(bits):
    """``DQ -> LeakyRelu`` and a float part concatenated, then one grid (with the integer Clip below 8
    bits): the parts requantized on that grid first give bit-identical outputs, and ORT runs
    QLinearConcat / QLinearLeakyRelu; a Concat read by anything but one QuantizeLinear is left alone."""
    def build() -> gs.Graph:
        a_q, b = gs.Variable("a_q", np.uint8, (1, 3, 4, 4)), gs.Variable("b", np.float32, (1, 2, 4, 4))
        a, leaky, cat = (gs.Variable(n, np.float32) for n in ("a", "leaky", "cat"))
        s_a, zp_a = gs.Constant("s_a", np.array(0.05, np.float32)), gs.Constant("zp_a", np.array(100, np.uint8))
        nodes = [gs.Node("DequantizeLinear", "dq_a", inputs=[a_q, s_a, zp_a], outputs=[a]),
                 gs.Node("LeakyRelu", "leaky", attrs={"alpha": 0.2}, inputs=[a], outputs=[leaky]),
                 gs.Node("Concat", "concat", attrs={"axis": 1}, inputs=[leaky, b], outputs=[cat])]
        graph = gs.Graph(nodes=nodes, inputs=[a_q, b], outputs=[], opset=13)
        grid = IntGrid(np.array(0.03, np.float32), np.array(40), 0, 2**bits - 1, "uint8")
        reader = gs.Node("Identity", "reader", inputs=[cat], outputs=[gs.Variable("out", np.float32, (1, 5, 4, 4))])
        graph.nodes.append(reader)
        quantize_activation_input(graph, reader, 0, grid, "site")
        graph.outputs = [reader.outputs[0]]
        return graph

    rng = np.random.default_rng(0)
    feeds = {"a_q": rng.integers(0, 256, (1, 3, 4, 4)).astype(np.uint8),
             "b": rng.uniform(-3, 6, (1, 2, 4, 4)).astype(np.float32)}
    before, after = build(), build()
    assert requantize_concat_inputs(after) == 1
    np.testing.assert_array_equal(_run(after, feeds)[0], _run(before, feeds)[0])
    counts = optimized_op_counts(gs.export_onnx(after.cleanup().toposort()))
    assert counts["QLinearConcat"] == 1 and counts["QLinearLeakyRelu"] == 1 and "Concat" not in counts, counts
    two_readers = build()
    two_readers.outputs.append(two_readers.nodes[2].outputs[0])  # the Concat's output is also a graph output
    assert requantize_concat_inputs(two_readers) == 0
