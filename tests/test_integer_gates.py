"""Integer gates (``PlacementConfig.integer_gates``): the sigmoid gate requantized by its own site and the
gated product read as ONNX Runtime's QLinearMul, checked against real ORT kernels and the real PAN x4."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from srq.calib.api import CalibConfig, calibrate
from srq.calib.layers import GRID_TAG, QuantGate, TableSigmoid, gate_product, tagged
from srq.calib.quantizer import fake_quant, qlinear_mul_levels, table_levels
from srq.calib.recipe import ModelInfo, Recipe
from srq.calib.sites import PlacementConfig, place_at
from srq.errors import SrqError
from srq.export.ort_fusion import optimized_op_counts, qlinear_sigmoid_levels
from srq.export.qdq_export import export_quantized
from srq.export.qdq_nodes import sigmoid_as_gate
from srq.pipeline.cli import main
from srq.zoo import Gate
from srq.zoo.loader import load_model


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


GATE_SCALE = 1 / 255  # a gate grid spanning [0, 1]


def _qdq_mul(n: int, s_a: float, zp_a: int, s_c: float, zp_c: int) -> onnx.ModelProto:
    """``Q(DQ(a) * DQ(gate))`` on uint8 vectors, gate on a [0, 1] grid: ORT fuses it into QLinearMul."""
    def const(name, value, dtype):
        return helper.make_tensor(name, dtype, [], [value])

    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["a", "s_a", "zp_a"], ["fa"]),
         helper.make_node("DequantizeLinear", ["g", "s_g", "zp_g"], ["fg"]),
         helper.make_node("Mul", ["fa", "fg"], ["p"]), helper.make_node("QuantizeLinear", ["p", "s_c", "zp_c"], ["c"])],
        "qdq_mul", [helper.make_tensor_value_info(k, TensorProto.UINT8, [n]) for k in ("a", "g")],
        [helper.make_tensor_value_info("c", TensorProto.UINT8, [n])],
        [const("s_a", s_a, TensorProto.FLOAT), const("zp_a", zp_a, TensorProto.UINT8),
         const("s_g", GATE_SCALE, TensorProto.FLOAT), const("zp_g", 0, TensorProto.UINT8),
         const("s_c", s_c, TensorProto.FLOAT), const("zp_c", zp_c, TensorProto.UINT8)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_qlinear_mul_levels_are_what_ort_qlinear_mul_computes():
    """Every output level of ORT's fused QLinearMul, over 10^6 random products on 20 random grids; the
    plain fake quantization of the float product differs from it on some of them (why calib emulates)."""
    rng = np.random.default_rng(0)
    n, plain_off = 50_000, 0
    for _ in range(20):
        s_a, s_c = (float(np.float32(rng.uniform(0.005, 0.05))) for _ in range(2))
        zp_a, zp_c = (int(rng.integers(0, 256)) for _ in range(2))
        a, g = rng.integers(0, 256, (2, n)).astype(np.uint8)
        model = _qdq_mul(n, s_a, zp_a, s_c, zp_c)
        assert optimized_op_counts(model) == {"QLinearMul": 1}
        engine = _session(model).run(None, {"a": a, "g": g})[0]
        t = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
        level_a, level_g = torch.from_numpy(a.astype(np.float32)) - zp_a, torch.from_numpy(g.astype(np.float32))
        ours = qlinear_mul_levels(level_a, level_g, t(s_a), t(GATE_SCALE), t(s_c), t(zp_c), 0, 255) + zp_c
        np.testing.assert_array_equal(ours.numpy().astype(np.uint8), engine)
        plain = fake_quant((level_a * t(s_a)) * (level_g * t(GATE_SCALE)), t(s_c), t(zp_c), 0, 255) / t(s_c) + zp_c
        plain_off += int((torch.round(plain).numpy() != engine).sum())
    assert plain_off > 0


def _gate_levels(scale, zp, qmin, qmax, out_scale, out_zp) -> np.ndarray:
    t = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    return table_levels(torch.sigmoid, scale, zp, qmin, qmax, t(out_scale), t(out_zp), 0, 255).numpy()


@pytest.mark.parametrize("seed", range(3))
def test_table_levels_of_a_sigmoid_are_what_ort_qlinear_sigmoid_computes(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        scale, zp = float(np.float32(rng.uniform(0.002, 0.3))), int(rng.integers(0, 16 if seed == 0 else 256))
        qmin, qmax = (0, 15) if seed == 0 else (0, 255)
        out_scale = float(np.float32(rng.uniform(0.0002, 1 / 255)))
        ours = _gate_levels(scale, zp, qmin, qmax, out_scale, 0)
        assert ours.shape == (qmax - qmin + 1,) and 0 <= ours.min() and ours.max() <= 255
        np.testing.assert_array_equal(ours.astype(np.uint8),
                                      qlinear_sigmoid_levels(scale, zp, qmin, qmax, out_scale, 0))


class GatedConvs(nn.Module):
    """PAN's PAConv pattern: ``k4(k3(x) * sigmoid(k2(x)))``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.k2, self.k3, self.k4 = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.sigmoid, self.gate = nn.Sigmoid(), Gate()

    def forward(self, x):
        return self.k4(self.gate(self.k3(x), self.sigmoid(self.k2(x))))


def _gated(**placement) -> tuple[GatedConvs, dict]:
    model = GatedConvs()
    sites = place_at(model, PlacementConfig(w_bits=8, a_bits=8, **placement), ["k2", "k3", "k4"], gates=("sigmoid",))
    for q in sites.values():
        one = torch.ones(()) if q.axis is None else torch.ones(q.lb.shape)
        q.set_bounds(-2.5 * one, 3.0 * one)
        q.mode = "quant"
    return model, sites


def test_integer_gate_is_requantized_by_its_site_and_the_product_is_read_as_qlinear_mul():
    model, sites = _gated(integer_gates=True)
    assert isinstance(model.sigmoid, TableSigmoid) and isinstance(model.gate, QuantGate)
    gate_q = sites["sigmoid.output"]
    assert (gate_q.kind, gate_q.op, gate_q.fmt.bits) == ("activation", "sigmoid", 8)
    gate_q.set_bounds(torch.tensor(0.0), torch.tensor(0.3))
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        y2, y3 = model.k2(x), model.k3(x)
        gate = model.sigmoid(y2)
        s, zp = sites["k2.output"].qparams()
        s_g, zp_g = gate_q.qparams()
        levels = table_levels(torch.sigmoid, s, zp, 0, 255, s_g, zp_g, 0, 255)
        assert torch.equal(gate, (levels - zp_g)[(torch.round(y2 / s) + zp).long()] * s_g)
        assert tagged(gate, GRID_TAG) == (gate_q,)
        product = model.gate(y3, gate)
        assert gate_product(product) is not None and gate_product(product.clone()) is None
        # what k4's input quantizer feeds the integer conv: ORT's QLinearMul of the two grids
        s3, _ = sites["k3.output"].qparams()
        s_c, zp_c = sites["k4.input_q"].qparams()
        expected = qlinear_mul_levels(torch.round(y3 / s3), torch.round(gate / s_g), s3, s_g, s_c, zp_c, 0, 255) * s_c
        assert torch.equal(model.k4._qlinear_mul(y3, sites["k3.output"], gate, gate_q), expected)
        assert torch.equal(model(x), model.k4(product))
        y3.add_(0.0)  # an operand modified in place after the product: plain quantization from then on
        assert gate_product(product) is None
    # gradients: sigmoid's straight through the table into the input, and the gate site's bounds train
    y2 = model.k2(x.clone().requires_grad_())
    y2.retain_grad()
    model.sigmoid(y2).sum().backward()
    assert y2.grad.abs().sum() > 0 and gate_q.ub.grad is not None and gate_q.ub.grad != 0
    # an input that is not a requantized conv output: plain sigmoid, the site unused
    plain = torch.randn(3)
    assert torch.equal(model.sigmoid(plain), torch.sigmoid(plain))


def test_integer_gates_need_tables_and_an_asymmetric_placement():
    with pytest.raises(SrqError, match="integer gates"):
        PlacementConfig(integer_gates=True, symmetric=True)
    with pytest.raises(SrqError, match="integer gates"):
        PlacementConfig(integer_gates=True, sigmoid_tables=False)
    model, sites = _gated()
    assert type(model.gate) is Gate and model.sigmoid.output is None and "sigmoid.output" not in sites


def _sigmoid_graph(scale: float, zp: int) -> tuple[gs.Graph, gs.Node]:
    """uint8 levels -> DQ -> Sigmoid -> output (the gate a following Mul reads)."""
    q = gs.Variable("q", np.uint8, (256,))
    x, y = gs.Variable("x", np.float32, (256,)), gs.Variable("y", np.float32, (256,))
    dq = gs.Node("DequantizeLinear", "dq", inputs=[q, gs.Constant("s", np.array(scale, np.float32)),
                                                   gs.Constant("zp", np.array(zp, np.uint8))], outputs=[x])
    sig = gs.Node("Sigmoid", "sig", inputs=[x], outputs=[y])
    return gs.Graph(nodes=[dq, sig], inputs=[q], outputs=[y], opset=13), sig


@pytest.mark.parametrize("kernel_agrees", [True, False])
def test_sigmoid_as_gate_uses_qlinear_sigmoid_where_the_kernel_agrees_else_a_uint8_lookup(kernel_agrees):
    scale, zp, out_scale = 0.04, 120, 0.3 / 255
    graph, sig = _sigmoid_graph(scale, zp)
    levels = lambda *grid: _gate_levels(*grid, out_scale, 0)  # noqa: E731
    kernel = ((lambda *grid: qlinear_sigmoid_levels(*grid, out_scale, 0)) if kernel_agrees
              else (lambda *grid: np.zeros(256, np.uint8)))
    assert sigmoid_as_gate(graph, sig, out_scale, 0, levels, kernel, "g") == ("qlinear" if kernel_agrees else "gather")
    model = gs.export_onnx(graph.cleanup().toposort())
    onnx.checker.check_model(model)
    counts = optimized_op_counts(model)
    assert counts["QLinearSigmoid" if kernel_agrees else "Gather"] == 1 and "Sigmoid" not in counts
    out = _session(model).run(None, {"q": np.arange(256, dtype=np.uint8)})[0]
    expected = _gate_levels(scale, zp, 0, 255, out_scale, 0) * np.float32(out_scale)
    np.testing.assert_array_equal(out, expected.astype(np.float32))


@pytest.mark.shared_data
def test_pan_integer_gates_engine_is_exact_and_fully_fused(shared_data, tmp_path, set5_lr,
                                                           assert_engine_equals_fake_quant):
    """PAN x4 W8A8, policy all, integer first conv and gates, phase 1 on two 24x24 Set5 crops: ORT runs
    the gates as QLinearSigmoid or uint8 lookups (no Sigmoid), the 16 PAConv products and the two HR
    attention products (requantized by their own sites) as QLinearMul, and the engine equals the fake-quant
    model level for level on Set5 tiles; the recipe keeps the flag, its 18 gate and 2 product sites."""
    weights = shared_data / "weights/PAN/PANx4_DF2K.pth"
    model = load_model(weights)
    images = set5_lr(model.scale)
    cfg = CalibConfig(PlacementConfig(policy="all", w_bits=8, a_bits=8, first_conv_bits=8, integer_gates=True),
                      data="Set5 LR 24x24")
    recipe = calibrate(model.module, cfg, [im[:, :, :24, :24].contiguous() for im in images[:2]], ModelInfo.of(model))
    recipe.save(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["placement"]["integer_gates"] is True
    loaded = Recipe.load(tmp_path / "r.json")
    assert loaded.placement.integer_gates and len([g for g in loaded.sites if g.op == "sigmoid"]) == 18
    assert sorted(s.name for s in loaded.sites if s.op == "mul") == ["att1.gate.output", "att2.gate.output"]
    path = export_quantized(load_model(weights), recipe, "ort", (32, 32), tmp_path / "m.onnx")
    counts = optimized_op_counts(path)
    # a gate whose table ORT's own sigmoid does not reproduce level for level is a uint8 Gather instead
    assert counts["QLinearSigmoid"] + counts["Gather"] == 18 and counts["QLinearSigmoid"] > counts["Gather"], counts
    assert counts["QLinearMul"] == 18 and "Sigmoid" not in counts, counts  # 16 PAConv, 2 HR attention products
    assert counts["QLinearConcat"] == 16 and "Concat" not in counts, counts  # requantize_concat_inputs
    assert_engine_equals_fake_quant(weights, recipe, path, [im[:, :, 4:36, 4:36].contiguous() for im in images[2:4]])


@pytest.mark.shared_data
def test_cli_integer_gates_flag_reaches_the_recipe(shared_data, tmp_path):
    out = tmp_path / "r.json"
    assert main(["calibrate", str(shared_data / "weights/FSRCNN/fsrcnn_x2.pth"), "--bits", "w8a8", "--crops", "2",
                 "--crop-size", "16", "--integer-gates", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["placement"]["integer_gates"] is True
    assert main(["calibrate", str(shared_data / "weights/FSRCNN/fsrcnn_x2.pth"), "--symmetric", "--integer-gates",
                 "--out", str(tmp_path / "bad.json")]) == 2  # SrqError
    assert not (tmp_path / "bad.json").exists()


@pytest.mark.shared_data
@pytest.mark.parametrize("weights, policy, gates", [("PAN/PANx4_DF2K.pth", "body", 16),
                                                    ("PAN/PANx4_DF2K.pth", "all", 18),
                                                    ("IMDN/IMDN_x2.pth", "body", 0), ("RFDN/RFDN_AIM.pth", "body", 4)])
def test_gate_sites_go_where_a_gate_saves_work(shared_data, weights, policy, gates):
    """Gate sites on sigmoids right after a requantized conv on a spatial map: PAN's PAConv gates (and its HR
    attention gates once policy all quantizes those convs), RFDN's ESA; none for IMDN's per-channel CCA."""
    from srq.calib.sites import place_quantizers

    model = load_model(shared_data / "weights" / weights)
    sites = place_quantizers(model.module, PlacementConfig(policy=policy, integer_gates=True, first_conv_bits=8),
                             torch.rand(1, 3, 24, 24))
    found = [name for name, q in sites.items() if q.op == "sigmoid"]
    assert len(found) == gates and all(name.endswith("sigmoid.output") for name in found), found


@pytest.mark.shared_data
@pytest.mark.parametrize("gate_products, products", [(True, ["att1.gate.output", "att2.gate.output"]), (False, [])])
def test_gate_product_sites_go_on_pan_hr_attention_unless_turned_off(shared_data, gate_products, products):
    """PAN's HR pixel-attention products (a LeakyReLU reads them) get their own site with integer gates under
    policy all (``--no-gate-products``: none); the PAConv products, read by k4 alone, never do."""
    from srq.calib.sites import place_quantizers

    model = load_model(shared_data / "weights/PAN/PANx4_DF2K.pth")
    sites = place_quantizers(model.module, PlacementConfig(policy="all", integer_gates=True, first_conv_bits=8,
                                                           gate_products=gate_products), torch.rand(1, 3, 24, 24))
    assert sorted(name for name, q in sites.items() if q.op == "mul") == products
