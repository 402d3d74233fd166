"""`srq lint`: each rule fires on a tiny graph that breaks it; clean graphs pass (and ORT-clean ones fuse)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

from srq.export.lint import lint_model
from srq.export.ort_fusion import INTEGER_OPS, optimized_op_counts
from srq.export.qdq_nodes import IntGrid, dequantize_bias_input, dequantize_weight_input, quantize_activation_input
from srq.pipeline.cli import main

U8 = IntGrid(np.array(0.05, np.float32), np.array(128), 0, 255, "uint8")
S8 = IntGrid(np.array(0.05, np.float32), np.array(0), -128, 127, "int8")


def _w_grid(container="int8", channels=4, axis=0, zp=0, qmin=-127, qmax=127):
    return IntGrid(np.full(channels, 0.02, np.float32), np.full(channels, zp), qmin, qmax, container, axis)


def conv(act=U8, w_grid=None, output_q=True, quantize_input=True, out_grid=None, weight_axis=0):
    x, y = gs.Variable("x", np.float32, (1, 4, 6, 6)), gs.Variable("y", np.float32, (1, 4, 6, 6))
    node = gs.Node("Conv", "conv", attrs={"pads": [1] * 4}, inputs=[x, gs.Constant("W", np.zeros((4, 4, 3, 3), np.float32)),
                                                                   gs.Constant("B", np.ones(4, np.float32))], outputs=[y])
    g = gs.Graph(nodes=[node], inputs=[x], outputs=[y], opset=21)
    if quantize_input:
        quantize_activation_input(g, node, 0, act, "x_site")
    wg = w_grid or _w_grid(axis=weight_axis)
    dequantize_weight_input(g, node, 1, np.full((4, 4, 3, 3), max(wg.qmin, 1)), wg, "W")
    if output_q:
        out = gs.Variable("out", np.float32, y.shape)
        ident = gs.Node("Identity", "out_identity", inputs=[y], outputs=[out])
        g.nodes.append(ident)
        g.outputs = [out]
        quantize_activation_input(g, ident, 0, out_grid or act, "y_site")
    g.cleanup().toposort()
    return gs.export_onnx(g)


def rules(model, target):
    return sorted({v.rule for v in lint_model(model, target)})


def test_clean_ort_graph_passes_ort_fuses_and_fails_trt_on_uint8():
    model = conv()
    assert rules(model, "ort") == []
    assert optimized_op_counts(model)["QLinearConv"] == 1
    assert rules(model, "trt") == ["trt-type", "trt-zero-point"]


def test_clean_trt_graph_passes_trt():
    assert rules(conv(act=S8), "trt") == []
    assert rules(conv(act=S8, output_q=False), "trt") == []


def test_conv_without_output_q_is_flagged_for_ort_and_does_not_fuse():
    model = conv(output_q=False)
    assert rules(model, "ort") == ["ort-conv-output-q"]
    assert not INTEGER_OPS & set(optimized_op_counts(model))


def test_scale_rules():
    model = conv(act=IntGrid(np.array(0.0, np.float32), np.array(0), -128, 127, "int8"))
    assert "scale-positive" in rules(model, "trt") and "scale-positive" in rules(model, "ort")
    model = conv(act=S8)
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    model.graph.input.append(onnx.helper.make_tensor_value_info("runtime_scale", onnx.TensorProto.FLOAT, []))
    q.input[1] = "runtime_scale"
    assert rules(model, "trt") == ["scale-constant"]


def test_weight_axis_and_both_inputs():
    assert rules(conv(act=S8, weight_axis=1), "trt") == ["weight-axis"]
    lines = [str(v) for v in lint_model(conv(act=S8, quantize_input=False, output_q=False), "trt")]
    assert lines == ["node conv: qdq-both-inputs: input is not quantized (no DequantizeLinear)"]


def test_sub_byte_and_signedness_rules():
    assert rules(conv(w_grid=_w_grid("int4", qmin=-7, qmax=7)), "ort") == ["ort-subbyte-type"]
    assert rules(conv(act=S8, w_grid=_w_grid("int4", qmin=-7, qmax=7)), "trt") == ["trt-type"]
    u2 = IntGrid(np.array(0.5, np.float32), np.array(1), 0, 3, "uint2")
    assert "ort-2bit-type" in rules(conv(act=u2), "ort")
    assert rules(conv(act=S8, w_grid=_w_grid("uint8", zp=128, qmin=0, qmax=255)), "ort") == ["ort-signedness"]


def test_int4_block_quantized_matmul_weight_is_legal_for_trt():
    x, y = gs.Variable("x", np.float32, (2, 32)), gs.Variable("y", np.float32, (2, 4))
    mm = gs.Node("MatMul", "fc", inputs=[x, gs.Constant("W", np.zeros((32, 4), np.float32))], outputs=[y])
    g = gs.Graph(nodes=[mm], inputs=[x], outputs=[y], opset=21)
    quantize_activation_input(g, mm, 0, S8, "x_site")
    dequantize_weight_input(g, mm, 1, np.ones((32, 4)), IntGrid(np.full(4, 0.1, np.float32), np.zeros(4, int), -7, 7,
                                                                 "int4", axis=1), "W")
    g.cleanup().toposort()
    model = gs.export_onnx(g)
    assert rules(model, "trt") == ["trt-type"]
    dq = next(n for n in model.graph.node if n.name == "W_DequantizeLinear")
    dq.attribute.extend([onnx.helper.make_attribute("block_size", 16)])
    dq.attribute[0].i = 0  # axis 0: blocks of 16 along K, scale / zero point [K / 16, N]
    for init in model.graph.initializer:
        if init.name in ("W_scale", "W_zero_point"):
            values = onnx.numpy_helper.to_array(init)
            init.CopyFrom(onnx.numpy_helper.from_array(np.stack([values, values]), init.name))
    onnx.checker.check_model(model)
    assert rules(model, "trt") == []


def linear(bias="float"):
    x, t, y = (gs.Variable(n, np.float32, s) for n, s in (("x", (1, 8, 4)), ("t", (1, 8, 3)), ("y", (1, 8, 3))))
    mm = gs.Node("MatMul", "fc", inputs=[x, gs.Constant("W", np.ones((4, 3), np.float32))], outputs=[t])
    add = gs.Node("Add", "fc_bias", inputs=[t, gs.Constant("B", np.ones(3, np.float32))], outputs=[y])
    g = gs.Graph(nodes=[mm, add], inputs=[x], outputs=[y], opset=21)
    quantize_activation_input(g, mm, 0, U8, "x_site")
    wg = IntGrid(np.full(3, 0.02, np.float32), np.zeros(3, int), -127, 127, "int8", axis=1)
    dequantize_weight_input(g, mm, 1, np.full((4, 3), 50), wg, "W")
    if bias == "int32":
        dequantize_bias_input(g, add, 1, U8.scale * wg.scale, "B")
    g.cleanup().toposort()
    return gs.export_onnx(g)


def test_linear_bias_rule_agrees_with_ort():
    assert rules(linear(), "ort") == ["ort-linear-bias"]
    assert optimized_op_counts(linear())["QGemm"] == 0
    assert rules(linear("int32"), "ort") == []
    assert optimized_op_counts(linear("int32"))["QGemm"] == 1


def _two_branch(op: str, second_scale: float, quantize_second=True):
    a, b, y = (gs.Variable(n, np.float32, (1, 4, 6, 6)) for n in ("a", "b", "y"))
    c = gs.Variable("c", np.float32, (1, 4, 6, 6))
    cv = gs.Node("Conv", "conv", attrs={"pads": [1] * 4}, inputs=[a, gs.Constant("W", np.zeros((4, 4, 3, 3), np.float32))],
                 outputs=[c])
    node = gs.Node(op, "join", attrs={"axis": 1} if op == "Concat" else {}, inputs=[c, b], outputs=[y])
    g = gs.Graph(nodes=[cv, node], inputs=[a, b], outputs=[y], opset=21)
    quantize_activation_input(g, cv, 0, S8, "a_site")
    dequantize_weight_input(g, cv, 1, np.ones((4, 4, 3, 3)), _w_grid(), "W")
    if op == "Concat":
        quantize_activation_input(g, node, 0, S8, "c_site")
    if quantize_second:
        quantize_activation_input(g, node, 1, IntGrid(np.array(second_scale, np.float32), np.array(0), -128, 127, "int8"),
                                  "b_site")
    g.cleanup().toposort()
    return gs.export_onnx(g)


def test_trt_concat_scales():
    assert rules(_two_branch("Concat", 0.05), "trt") == []
    assert rules(_two_branch("Concat", 0.1), "trt") == ["trt-concat-scales"]
    assert rules(_two_branch("Concat", 0.05, quantize_second=False), "trt") == ["trt-concat-scales"]


def test_trt_residual_add():
    assert rules(_two_branch("Add", 0.05), "trt") == []
    assert rules(_two_branch("Add", 0.05, quantize_second=False), "trt") == ["trt-residual-add"]


def test_cli_exit_codes(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(conv(), path)
    assert main(["lint", str(path), "--target", "ort"]) == 0
    assert main(["lint", str(path), "--target", "trt"]) == 1
    assert "node x_site_QuantizeLinear: trt-zero-point:" in capsys.readouterr().out
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert main(["lint", str(bad), "--target", "trt"]) == 2
    assert "bad.onnx" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["ort", "trt"])
def test_unknown_target_refused(target):
    with pytest.raises(ValueError):
        lint_model(conv(), target + "x")


def test_trt_rejects_float64_casts(tmp_path):
    """A Cast to DOUBLE (IMDN's ORT export sums its attention statistics in float64) is flagged for
    TensorRT, which would compute it in float32; ORT accepts it."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])
    nodes = [helper.make_node("Cast", ["x"], ["x64"], name="up", to=TensorProto.DOUBLE),
             helper.make_node("ReduceMean", ["x64"], ["m64"], name="mean", keepdims=1),
             helper.make_node("Cast", ["m64"], ["y"], name="down", to=TensorProto.FLOAT)]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    assert [(v.node, v.rule) for v in lint_model(model, "trt")] == [("up", "trt-float64")]
    assert lint_model(model, "ort") == []
