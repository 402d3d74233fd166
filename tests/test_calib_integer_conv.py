"""Calib's integer-exact conv output (``QuantConv2d`` with an output quantizer) against real ONNX Runtime kernels.

Tiny graphs with hand-chosen integer tensors run in ORT (``ORT_ENABLE_ALL``,
``session.x64quantprecision=1``, as ``srq.runtime.ort_engine``); the fake-quantized layer gets the
same grids through its quantizer bounds and must reproduce every output level exactly:
QLinearConv's accumulator, int32 bias, float32 multiplier, clamp and round-half-even, and
QLinearLeakyRelu's lookup table (``DQ -> LeakyRelu -> Q`` fused).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from srq.calib.layers import QuantConv2d
from srq.calib.quantizer import FakeQuantizer, QuantFormat, fake_quant
from srq.export.ort_fusion import optimized_op_counts

U8 = QuantFormat(8)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.x64quantprecision", "1")
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _qlinearconv(qw, s_x, zp_x, s_w, zp_w, s_y, zp_y, bias, pad: int) -> onnx.ModelProto:
    """One QLinearConv (u8 input/output, weight container of ``qw``, int32 bias) as a model."""
    inits = [_const("xs", np.float32(s_x)), _const("xz", np.uint8(zp_x)), _const("w", qw),
             _const("ws", np.asarray(s_w, np.float32)), _const("wz", np.asarray(zp_w).astype(qw.dtype)),
             _const("ys", np.float32(s_y)), _const("yz", np.uint8(zp_y)), _const("b", np.asarray(bias, np.int32))]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                            pads=[pad] * 4)
    graph = helper.make_graph([node], "qconv", [helper.make_tensor_value_info("x", TensorProto.UINT8, None)],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def _quantizer(kind: str, fmt: QuantFormat, scale, zero_point) -> FakeQuantizer:
    """A quantizing ``FakeQuantizer`` with bounds for about ``(scale, zero_point)``; its snapped grid
    (``qparams``, float32) is what the integer model then uses, as the export does."""
    per_channel = np.ndim(scale) == 1
    q = FakeQuantizer(kind, fmt, op="conv2d", channels=len(scale) if per_channel else None,
                      axis=0 if per_channel else None)
    s, zp = torch.tensor(scale, dtype=torch.float32), torch.tensor(zero_point, dtype=torch.float32)
    q.set_bounds(-fmt.qmax * s, fmt.qmax * s) if fmt.symmetric else q.set_bounds((fmt.qmin - zp) * s, (fmt.qmax - zp) * s)
    q.mode = "quant"
    assert torch.equal(q.qparams()[1], zp)
    return q


def _grid(q: FakeQuantizer) -> tuple[np.ndarray, np.ndarray]:
    """(float32 scale, int64 zero point) of a quantizer, as the export writes them."""
    s, zp = q.qparams()
    return s.detach().numpy().astype(np.float32), zp.detach().numpy().astype(np.int64)


class Case:
    """One integer conv: quantizers (hence grids), integer weights / bias, and the matching QuantConv2d."""

    def __init__(self, qw: np.ndarray, x_grid, w_grid, y_grid, bias: np.ndarray, pad: int, w_fmt: QuantFormat = U8):
        self.qx_q = _quantizer("activation", U8, *x_grid)
        self.w_q = _quantizer("weight", w_fmt, *w_grid)
        self.y_q = _quantizer("activation", U8, *y_grid)
        (self.s_x, self.zp_x), (self.s_w, self.zp_w), (self.s_y, self.zp_y) = map(_grid, (self.qx_q, self.w_q, self.y_q))
        self.qw, self.bias, self.pad = qw, bias, pad
        cout, cin, kh, kw = qw.shape
        conv = nn.Conv2d(cin, cout, (kh, kw), padding=pad)
        s_w = torch.from_numpy(self.s_w)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy((qw.astype(np.int64) - self.zp_w.reshape(-1, 1, 1, 1)).astype(np.float32))
                              * s_w.reshape(-1, 1, 1, 1))
            conv.bias.copy_(torch.from_numpy(bias.astype(np.float32)) * (torch.from_numpy(self.s_x) * s_w))
        self.layer = QuantConv2d(conv, self.w_q, self.qx_q, output=self.y_q)

    def engine(self, qx: np.ndarray) -> np.ndarray:
        """ORT's QLinearConv output levels (uint8) for integer input ``qx`` (N, C, H, W)."""
        model = _qlinearconv(self.qw, self.s_x, self.zp_x, self.s_w, self.zp_w, self.s_y, self.zp_y, self.bias, self.pad)
        sess = _session(model)
        return np.concatenate([sess.run(None, {"x": qx[i:i + 1]})[0] for i in range(len(qx))])

    def dequantized_input(self, qx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((qx.astype(np.int64) - self.zp_x).astype(np.float32)) * torch.from_numpy(self.s_x)

    def levels(self, y: torch.Tensor) -> np.ndarray:
        return (y.detach() / torch.from_numpy(self.s_y) + torch.from_numpy(self.zp_y.astype(np.float32))).round().numpy()

    def fake(self, qx: np.ndarray) -> np.ndarray:
        """The fake-quantized layer's output levels (no autograd)."""
        with torch.no_grad():
            return self.levels(self.layer(self.dequantized_input(qx)))


def _exact_scale(near: float, zero_point: int) -> np.float32:
    """The first float32 scale from ``near`` up that the asymmetric 8-bit quantizer reproduces exactly."""
    s = np.float32(near)
    while True:
        got = _grid(_quantizer("activation", U8, s, zero_point))[0]
        if got == s and _grid(_quantizer("activation", U8, np.float32(2 * s * 2.0**-3), 120))[0] == np.float32(2 * s * 2.0**-3):
            return s
        s = np.nextafter(s, np.float32(1))


def test_ties_round_half_to_even_clamp_and_zero_point_padding():
    """``s_y = 2 s_x s_w[0] = 4 s_x s_w[1]`` with a non-dyadic ``s_x``: ORT's multiplier is exactly 1/2 and
    1/4, so ``acc * M`` lands on .5 for odd / 2-mod-4 accumulators (round half to even), while a float32
    conv of dequantized values misses those ties by an ulp either way. Also: big inputs saturate at 0
    and 255, zero padding is the input zero point, per-channel weight zero points differ, odd bias."""
    rng = np.random.default_rng(0)
    s_x = _exact_scale(0.1, 128)
    zp_w = np.array([100, 121])
    qw = (zp_w.reshape(-1, 1, 1, 1) + rng.integers(-3, 4, size=(2, 8, 3, 3))).astype(np.uint8)
    case = Case(qw, (s_x, 128), ([2.0**-3, 2.0**-4], zp_w), (np.float32(2 * s_x * 2.0**-3), 120), np.array([3, -6]), 1)
    assert case.s_x == s_x and list(case.s_w) == [2.0**-3, 2.0**-4] and case.s_y == np.float32(2 * s_x * 2.0**-3)
    qx = (128 + rng.integers(-3, 4, size=(1, 8, 10, 10))).astype(np.uint8)
    qx[0, 0, 4, 4], qx[0, 1, 2, 6], qx[0, 0, 7, 1] = 255, 0, 250  # saturating neighbourhoods
    engine = case.engine(qx)

    acc = F.conv2d(torch.from_numpy(qx.astype(np.float64) - 128),
                   torch.from_numpy(qw.astype(np.float64) - zp_w.reshape(-1, 1, 1, 1)),
                   torch.tensor([3.0, -6.0], dtype=torch.float64), padding=1).numpy()
    scaled = acc * np.array([0.5, 0.25]).reshape(1, -1, 1, 1)
    ties = np.abs(scaled - np.floor(scaled)) == 0.5
    assert ties.sum() > 40 and (engine == 0).any() and (engine == 255).any()  # the cases under test occur
    assert (engine[ties].astype(np.int64) - 120 != np.floor(scaled[ties] + 0.5)).any()  # not half-up
    np.testing.assert_array_equal(case.fake(qx), engine)


@pytest.mark.parametrize("weights", ["u8 asymmetric", "s8 symmetric"])
def test_random_8_bit_conv_is_bit_exact(weights):
    """Non-dyadic per-channel scales, full-range 8-bit data, 3x3 conv with padding: every output level
    equals ORT's (float32 multiplier in ORT's order ``(s_x * s_w) / s_y``, exact accumulator)."""
    rng = np.random.default_rng(1)
    cout, cin = 8, 16
    s_w = rng.uniform(0.002, 0.01, cout)
    if weights == "u8 asymmetric":
        w_fmt, zp_w = U8, rng.integers(90, 160, cout)
        qw = rng.integers(0, 256, size=(cout, cin, 3, 3)).astype(np.uint8)
    else:
        w_fmt, zp_w = QuantFormat(8, symmetric=True, narrow=True), np.zeros(cout, np.int64)
        qw = rng.integers(-127, 128, size=(cout, cin, 3, 3)).astype(np.int8)
    case = Case(qw, (0.0173, 131), (s_w, zp_w), (0.13, 128), rng.integers(-30000, 30000, cout), pad=1, w_fmt=w_fmt)
    qx = rng.integers(0, 256, size=(2, cin, 12, 12)).astype(np.uint8)
    engine = case.engine(qx)
    assert 0.01 < np.mean(engine == 0) + np.mean(engine == 255) < 0.3  # range neither idle nor mostly clipped
    np.testing.assert_array_equal(case.fake(qx), engine)


def test_gradients_are_the_float_paths_and_forward_the_exact_value():
    """With autograd on, the forward value is still the engine's; bounds get the straight-through
    gradients of the float path (non-zero for the output, input and weight quantizers)."""
    rng = np.random.default_rng(2)
    qw = rng.integers(0, 256, size=(4, 3, 3, 3)).astype(np.uint8)
    case = Case(qw, (0.0173, 37), (rng.uniform(0.002, 0.01, 4), rng.integers(90, 160, 4)), (0.0411, 141),
                rng.integers(-3000, 3000, 4), pad=1)
    qx = rng.integers(0, 256, size=(1, 3, 8, 8)).astype(np.uint8)
    y = case.layer(case.dequantized_input(qx))
    np.testing.assert_array_equal(case.levels(y), case.engine(qx))
    y.square().sum().backward()
    for q in (case.y_q, case.qx_q, case.w_q):
        assert q.ub.grad is not None and bool(q.ub.grad.abs().sum() > 0)


def test_qlinear_leaky_relu_table_is_fake_quant_of_leaky_relu():
    """``DQ -> LeakyRelu(0.05) -> Q -> DQ`` fuses to QLinearLeakyRelu, whose 256-entry table is built in
    float32 exactly as calib's ``fake_quant(leaky_relu(DQ(q)))``: all 256 input levels agree."""
    rng = np.random.default_rng(3)
    levels = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    for s_in, zp_in, s_out, zp_out in [(0.0311, 200, 0.0123, 3), *zip(rng.uniform(0.001, 0.1, 5),
                                       rng.integers(0, 256, 5), rng.uniform(0.001, 0.1, 5), rng.integers(0, 40, 5))]:
        nodes = [helper.make_node("DequantizeLinear", ["x", "si", "zi"], ["v"]),
                 helper.make_node("LeakyRelu", ["v"], ["a"], alpha=0.05),
                 helper.make_node("QuantizeLinear", ["a", "so", "zo"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "so", "zo"], ["y"])]
        inits = [_const("si", np.float32(s_in)), _const("zi", np.uint8(zp_in)),
                 _const("so", np.float32(s_out)), _const("zo", np.uint8(zp_out))]
        graph = helper.make_graph(nodes, "lrelu", [helper.make_tensor_value_info("x", TensorProto.UINT8, None)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
        assert optimized_op_counts(model)["QLinearLeakyRelu"] == 1
        engine = _session(model).run(None, {"x": levels})[0]
        s_i, s_o = torch.tensor(np.float32(s_in)), torch.tensor(np.float32(s_out))
        v = (torch.tensor(levels.astype(np.float32)) - float(zp_in)) * s_i
        fake = fake_quant(F.leaky_relu(v, 0.05), s_o, torch.tensor(float(zp_out)), 0, 255).numpy()
        np.testing.assert_array_equal(fake, engine)
