"""Shared input quantizers (``PlacementConfig.shared_inputs``): layers that read one tensor share one grid,
and the export quantizes that tensor once (``merge_twin_quantizers``), checked on real PAN / IMDN and ORT."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
import torch

from srq.calib.api import CalibConfig, calibrate
from srq.calib.recipe import ModelInfo, Recipe
from srq.calib.sites import PlacementConfig, place_quantizers
from srq.export.ort_fusion import optimized_op_counts
from srq.export.qdq_export import export_quantized
from srq.export.qdq_nodes import IntGrid, merge_twin_quantizers, quantize_activation_input
from srq.pipeline.cli import main
from srq.zoo.loader import load_model


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _two_readers(scales: tuple[float, float], shift: float | None = None) -> gs.Graph:
    """``x -> Relu -> {Conv a, Conv b}`` with a Q/DQ chain of its own on each Conv input."""
    x = gs.Variable("x", np.float32, (1, 2, 4, 4))
    r = gs.Variable("r", np.float32, (1, 2, 4, 4))
    outs = [gs.Variable(n, np.float32, (1, 2, 4, 4)) for n in ("ya", "yb")]
    w = gs.Constant("w", np.ones((2, 2, 1, 1), np.float32))
    convs = [gs.Node("Conv", f"conv_{n}", inputs=[r, w], outputs=[o]) for n, o in zip("ab", outs)]
    graph = gs.Graph([gs.Node("Relu", "relu", inputs=[x], outputs=[r]), *convs], [x], outs, opset=17)
    for conv, s in zip(convs, scales):
        grid = IntGrid(np.asarray(s, np.float32), np.asarray(3, np.uint8), 0, 255, "uint8")
        quantize_activation_input(graph, conv, 0, grid, f"{conv.name}_in", shift)
    return graph


@pytest.mark.parametrize("shift", [None, 0.25])
def test_equal_chains_on_one_tensor_merge_and_compute_the_same(shift):
    x = np.random.default_rng(0).normal(size=(1, 2, 4, 4)).astype(np.float32)
    graph = _two_readers((0.02, 0.02), shift)
    before = _session(gs.export_onnx(graph.cleanup().toposort())).run(None, {"x": x})
    assert merge_twin_quantizers(graph) == (3 if shift is not None else 2)  # [Sub,] Q, DQ
    graph.cleanup()
    assert sum(n.op == "QuantizeLinear" for n in graph.nodes) == 1
    after = _session(gs.export_onnx(graph.toposort())).run(None, {"x": x})
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_chains_with_other_grids_stay_apart():
    graph = _two_readers((0.02, 0.0201))
    assert merge_twin_quantizers(graph) == 0
    assert sum(n.op == "QuantizeLinear" for n in graph.cleanup().nodes) == 2


@pytest.mark.shared_data
@pytest.mark.parametrize("weights, policy, pairs", [("PAN/PANx4_DF2K.pth", "all", 32), ("IMDN/IMDN_x2.pth", "body", 0)])
def test_layers_reading_one_tensor_share_their_input_quantizer(shared_data, weights, policy, pairs):
    """PAN: each SCPA block's conv1_a / conv1_b (the block input) and PAConv k2 / k3 (16 blocks x 2); IMDN
    has no two layers reading one tensor. The shared quantizer is one module under both site names."""
    model = load_model(shared_data / "weights" / weights)
    sites = place_quantizers(model.module, PlacementConfig(policy=policy, first_conv_bits=8, shared_inputs=True),
                             torch.rand(1, 3, 24, 24))
    names: dict[int, list[str]] = {}
    for name, q in sites.items():
        names.setdefault(id(q), []).append(name)
    shared = sorted(tuple(v) for v in names.values() if len(v) > 1)
    assert len(shared) == pairs and all(len(v) == 2 and v[0].endswith(".input_q") for v in shared), shared
    if pairs:
        assert ("SCPA_trunk.0.conv1_a.input_q", "SCPA_trunk.0.conv1_b.input_q") in shared
        assert ("SCPA_trunk.0.PAConv.k2.input_q", "SCPA_trunk.0.PAConv.k3.input_q") in shared


@pytest.mark.shared_data
def test_pan_shared_inputs_engine_quantizes_each_tensor_once_and_stays_exact(shared_data, tmp_path, set5_lr,
                                                                            assert_engine_equals_fake_quant):
    """PAN x4 W8A8, policy all, integer gates, shared inputs, phase 1 and 6 DQC steps on Set5 crops: the
    recipe lists both names of each shared quantizer with equal values (DQC trained them as one), the
    engine has one QuantizeLinear per block input and runs every LeakyReLU as QLinearLeakyRelu, and it
    equals the fake-quant model (the recipe loaded back) on Set5 tiles."""
    from srq.calib.dqc import DQCConfig

    weights = shared_data / "weights/PAN/PANx4_DF2K.pth"
    model = load_model(weights)
    images = set5_lr(model.scale)
    crops = [im[:, :, :24, :24].contiguous() for im in images[:3]]
    placement = PlacementConfig(policy="all", w_bits=8, a_bits=8, first_conv_bits=8, integer_gates=True,
                                shared_inputs=True)
    cfg = CalibConfig(placement, dqc=DQCConfig(iterations=6, batch_size=2, patch=16), data="Set5 LR 24x24")
    recipe = calibrate(model.module, cfg, [torch.cat(crops)], ModelInfo.of(model))
    recipe.save(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["placement"]["shared_inputs"] is True
    by_name = {s.name: s for s in Recipe.load(tmp_path / "r.json").sites}
    for block in range(16):
        for a, b in (("conv1_a", "conv1_b"), ("PAConv.k3", "PAConv.k2")):
            sa, sb = (by_name[f"SCPA_trunk.{block}.{n}.input_q"] for n in (a, b))
            assert (sa.lb, sa.ub, sa.scale, sa.zero_point) == (sb.lb, sb.ub, sb.scale, sb.zero_point)
    path = export_quantized(load_model(weights), recipe, "ort", (32, 32), tmp_path / "m.onnx")
    counts = optimized_op_counts(path)
    # 64 in the trunk, HRconv1 before its Resize, the LeakyReLUs of the two requantized HR attention products
    assert counts["QLinearLeakyRelu"] == 67 and counts["QLinearConv"] == 119, counts
    assert_engine_equals_fake_quant(weights, Recipe.load(tmp_path / "r.json"), path,
                                    [im[:, :, 4:36, 4:36].contiguous() for im in images[3:5]])


@pytest.mark.shared_data
def test_cli_shared_inputs_flag_reaches_the_recipe(shared_data, tmp_path):
    out = tmp_path / "r.json"
    assert main(["calibrate", str(shared_data / "weights/PAN/PANx4_DF2K.pth"), "--bits", "w8a8", "--crops", "2",
                 "--crop-size", "16", "--shared-inputs", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["placement"]["shared_inputs"] is True
    sites = {s["name"]: s for s in doc["sites"]}
    assert sites["SCPA_trunk.3.conv1_a.input_q"]["lb"] == sites["SCPA_trunk.3.conv1_b.input_q"]["lb"]
