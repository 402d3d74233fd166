"""Fake quantizer: hand-computed cases, ONNX Runtime parity, degenerate bounds, gradients."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from srq.calib.quantizer import FakeQuantizer, QuantFormat, fake_quant, qparams
from srq.errors import SrqError


def fq(x, lb, ub, fmt):
    s, zp = qparams(torch.tensor(lb), torch.tensor(ub), fmt)
    return fake_quant(torch.as_tensor(x, dtype=torch.float32), s, zp, fmt.qmin, fmt.qmax)


def test_asymmetric_hand_case_snaps_zero_point_and_clamps():
    # 4 bit, [-1.03, 2.0]: s = 3.03 / 15 = 0.202, zp = round(1.03 / 0.202 = 5.099) = 5 -> grid -1.01 .. 2.02
    fmt = QuantFormat(4)
    s, zp = qparams(torch.tensor(-1.03), torch.tensor(2.0), fmt)
    assert float(s) == pytest.approx(0.202, rel=1e-6) and float(zp) == 5.0
    y = fq([-2.0, -0.5, 0.3, 1.0, 2.5], -1.03, 2.0, fmt)
    np.testing.assert_allclose(y.numpy(), [-1.01, -0.404, 0.202, 1.01, 2.02], rtol=1e-6)


def test_round_half_to_even():
    y = fq([0.5, 1.5, 2.5, 3.5], 0.0, 15.0, QuantFormat(4))  # s = 1, zp = 0
    assert y.tolist() == [0.0, 2.0, 2.0, 4.0]


def test_round_half_even_is_applied_before_adding_the_zero_point():
    # s = 1, zp = 3 (odd): x = 0.5 -> round(0.5) + 3 = 3 -> y = 0 (rounding x + zp = 3.5 would give 4 -> 1)
    assert fq([0.5, 1.5], -3.0, 12.0, QuantFormat(4)).tolist() == [0.0, 2.0]


def test_single_signed_bounds_widen_to_include_zero():
    # [0.5, 2.0], 4 bit -> [0, 2.0]: s = 2/15, zp = 0; 0.3 -> 2.25 -> 2, 1.1 -> 8.25 -> 8, 2.5 -> 18.75 -> 15
    s = 2.0 / 15
    y = fq([-1.0, 0.3, 1.1, 2.5], 0.5, 2.0, QuantFormat(4))
    np.testing.assert_allclose(y.numpy(), [0.0, 2 * s, 8 * s, 2.0], rtol=1e-6)
    # [-2.0, -0.5] -> [-2.0, 0]: zp = 15 (an all-negative weight channel keeps its far end)
    y = fq([-2.5, -0.3, 0.5], -2.0, -0.5, QuantFormat(4))
    np.testing.assert_allclose(y.numpy(), [-2.0, -2 * s, 0.0], rtol=1e-6)


def test_symmetric_ranges_full_for_activations_narrow_for_weights():
    act, wt = QuantFormat(4, symmetric=True), QuantFormat(4, symmetric=True, narrow=True)
    assert (act.qmin, act.qmax, wt.qmin, wt.qmax) == (-8, 7, -7, 7)
    assert (QuantFormat(8, True).qmin, QuantFormat(2, True, True).qmin, QuantFormat(2, True, True).qmax) == (-128, -1, 1)
    # s = max(0.5, 0.7) / 7 = 0.1, zp = 0; 0.75 / 0.1 = 7.5 -> 8 (half even) -> clamped to 7
    np.testing.assert_allclose(fq([-1.0, -0.26, 0.75], -0.5, 0.7, act).numpy(), [-0.8, -0.3, 0.7], rtol=1e-6)
    np.testing.assert_allclose(fq([-1.0, -0.26, 0.75], -0.5, 0.7, wt).numpy(), [-0.7, -0.3, 0.7], rtol=1e-6)
    assert float(qparams(torch.tensor(-0.5), torch.tensor(0.7), act)[1]) == 0.0


def test_per_channel_axis_matches_per_tensor_on_each_slice():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5) * torch.tensor([0.1, 1.0, 10.0]).reshape(1, 3, 1)
    q = FakeQuantizer("weight", QuantFormat(3), op="linear", channels=3, axis=1)
    q.set_bounds(torch.tensor([-0.2, -1.5, -12.0]), torch.tensor([0.1, 2.0, 8.0]))
    q.mode = "quant"
    y = q(x)
    for c, (lb, ub) in enumerate([(-0.2, 0.1), (-1.5, 2.0), (-12.0, 8.0)]):
        assert torch.equal(y[:, c], fq(x[:, c], lb, ub, QuantFormat(3)))


@pytest.mark.parametrize("c", [0.7, -0.3, 0.0, 1e-30])
def test_degenerate_bounds_give_a_valid_scale_and_keep_the_constant(c):
    fmt = QuantFormat(4)
    s, zp = qparams(torch.tensor(c), torch.tensor(c), fmt)
    assert torch.isfinite(s) and float(s) > 0 and 0 <= float(zp) <= 15
    y = fake_quant(torch.full((4,), c), s, zp, fmt.qmin, fmt.qmax)
    np.testing.assert_allclose(y.numpy(), np.full(4, c, np.float32), rtol=1e-6, atol=0)
    s_sym, _ = qparams(torch.tensor(c), torch.tensor(c), QuantFormat(4, symmetric=True))
    assert float(s_sym) > 0


def test_crossed_bounds_give_a_positive_scale():
    s, zp = qparams(torch.tensor(1.0), torch.tensor(0.5), QuantFormat(4))  # widened to [0, 0.5]
    assert float(s) == pytest.approx(0.5 / 15) and float(zp) == 0.0


def test_nan_or_inf_in_observed_data_names_the_site():
    q = FakeQuantizer("activation", QuantFormat(4), op="conv2d")
    q.site, q.mode = "body.3.input_q", "observe"
    with pytest.raises(SrqError, match=r"body\.3\.input_q: NaN"):
        q(torch.tensor([0.0, float("nan")]))
    with pytest.raises(SrqError, match=r"body\.3\.input_q: inf"):
        q(torch.tensor([0.0, float("inf")]))
    with pytest.raises(SrqError, match="body.3.input_q"):
        q.set_bounds(torch.tensor(float("nan")), torch.tensor(1.0))


def _ort_qdq(x: np.ndarray, scale: np.ndarray, zp: np.ndarray, fmt: QuantFormat, axis: int | None) -> np.ndarray:
    """Run QuantizeLinear -> Clip (b < 8 or narrow) -> DequantizeLinear in ONNX Runtime."""
    zdtype = np.int8 if fmt.symmetric else np.uint8
    inits = [numpy_helper.from_array(scale.astype(np.float32), "s"), numpy_helper.from_array(zp.astype(zdtype), "z")]
    kw = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **kw)]
    last = "q"
    if fmt.bits < 8 or fmt.narrow:
        inits += [numpy_helper.from_array(np.array(fmt.qmin, zdtype), "lo"),
                  numpy_helper.from_array(np.array(fmt.qmax, zdtype), "hi")]
        nodes.append(helper.make_node("Clip", ["q", "lo", "hi"], ["qc"]))
        last = "qc"
    nodes.append(helper.make_node("DequantizeLinear", [last, "s", "z"], ["y"], **kw))
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("bits,symmetric,narrow", [(2, False, False), (4, False, False), (8, False, False),
                                                   (3, True, False), (4, True, True), (8, True, False)])
def test_bit_exact_with_onnxruntime_qdq(bits, symmetric, narrow):
    fmt = QuantFormat(bits, symmetric, narrow)
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(4, 3, 8, 8, generator=g) * 1.5 + 0.3
    lb = torch.tensor([-1.3, -0.2, -2.9])
    ub = torch.tensor([2.1, 0.9, 1.7])
    scale, zp = qparams(lb, ub, fmt)
    x[0, :, 0, :3] = torch.tensor([0.5, 1.5, -2.5]).reshape(1, 3) * scale.reshape(3, 1)  # exact ties
    for axis, s, z in [(None, scale[:1].reshape(()), zp[:1].reshape(())), (1, scale, zp)]:
        shape = (1, -1, 1, 1) if axis == 1 else ()
        ours = fake_quant(x, s.reshape(shape), z.reshape(shape), fmt.qmin, fmt.qmax).numpy()
        ref = _ort_qdq(x.numpy(), s.numpy(), z.numpy(), fmt, axis)
        np.testing.assert_array_equal(ours, ref)


def _bounds(lb, ub, requires_grad=True, dtype=torch.float64):
    return (torch.tensor(lb, dtype=dtype, requires_grad=requires_grad),
            torch.tensor(ub, dtype=dtype, requires_grad=requires_grad))


def test_gradients_match_2dquant_eq2_on_a_snapped_grid():
    # lb = -1, ub = 2, 4 bit: s = 0.2, -lb/s = 5 exactly, so the snapped grid is 2DQuant's grid.
    fmt = QuantFormat(4)
    x = torch.tensor([-1.7, -0.93, -0.31, 0.0, 0.47, 1.26, 1.99, 2.6], dtype=torch.float64, requires_grad=True)
    lb, ub = _bounds(-1.0, 2.0)
    s, zp = qparams(lb, ub, fmt)
    y = fake_quant(x, s, zp, fmt.qmin, fmt.qmax)
    for i in range(len(x)):
        gx, glb, gub = torch.autograd.grad(y[i], (x, lb, ub), retain_graph=True)
        v = float(x[i].detach())
        vc = min(max(v, -1.0), 2.0)
        vr = round((vc + 1.0) / 0.2)  # integer level from the lower bound (no ties in these values)
        eq2_u = (v > 2.0) + vr / 15 - (vc + 1.0) / 3.0
        eq2_l = (v < -1.0) - vr / 15 + (vc + 1.0) / 3.0
        assert float(gub) == pytest.approx(eq2_u, abs=1e-9), v
        assert float(glb) == pytest.approx(eq2_l, abs=1e-9), v
        assert float(gx[i]) == (1.0 if -1.0 <= v <= 2.0 else 0.0)


def test_bound_gradients_agree_with_finite_differences_where_the_output_is_smooth():
    # lb = 0.5 widens to 0 (no gradient); clipped elements give y = qmax * s = ub, smooth in ub.
    fmt = QuantFormat(3)
    x = torch.tensor([5.0, 7.0, 9.0], dtype=torch.float64)

    def f(lb, ub):
        s, zp = qparams(lb, ub, fmt)
        return fake_quant(x, s, zp, fmt.qmin, fmt.qmax).sum()

    lb, ub = _bounds(0.5, 2.0)
    assert torch.autograd.gradcheck(f, (lb, ub), eps=1e-6, atol=1e-8)
    # Symmetric: clipped elements give y = +-amax; the gradient goes to the larger bound.
    sym = QuantFormat(4, symmetric=True)

    def g(lb, ub):
        s, zp = qparams(lb, ub, sym)
        return fake_quant(torch.tensor([-9.0, 9.0, 10.0], dtype=torch.float64), s, zp, sym.qmin, sym.qmax).sum()

    lb, ub = _bounds(-0.3, 2.0)
    assert torch.autograd.gradcheck(g, (lb, ub), eps=1e-6, atol=1e-8)
    gl, gu = torch.autograd.grad(g(lb, ub), (lb, ub))
    # y = s * (-8 + 7 + 7) with s = ub / 7: dy/dub = 6 / 7, and |lb| < ub gets nothing
    assert float(gl) == 0.0 and float(gu) == pytest.approx(6 / 7)


def test_bias_correction_shift_and_its_gradient():
    q = FakeQuantizer("activation", QuantFormat(4), op="linear", bias_correction=True)
    q.set_bounds(torch.tensor(-1.0), torch.tensor(2.0), beta=torch.tensor(0.25))
    q.mode = "quant"
    x = torch.tensor([-3.0, 0.31, 1.05, 4.0])
    y = q(x)
    np.testing.assert_allclose(y.detach().numpy(), (fq(x - 0.25, -1.0, 2.0, QuantFormat(4)) + 0.25).numpy())
    (gbeta,) = torch.autograd.grad(y.sum(), (q.beta,))
    assert float(gbeta) == 2.0  # dQ_beta/dbeta = 1 outside [lb, ub] (two clipped elements), 0 inside
