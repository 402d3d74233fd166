"""Integer residuals (``PlacementConfig.integer_residuals``): an arch's ``Residual`` sum requantized by its own
site and computed as ONNX Runtime's QLinearAdd, checked against the real kernel and on real PAN / IMDN engines."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from srq.calib.api import CalibConfig, calibrate
from srq.calib.quantizer import fake_quant, qlinear_add_levels
from srq.calib.recipe import ModelInfo, Recipe
from srq.calib.sites import PlacementConfig, place_quantizers
from srq.errors import SrqError
from srq.export.ort_fusion import optimized_op_counts
from srq.export.qdq_export import export_quantized
from srq.pipeline.cli import main
from srq.zoo.loader import load_model


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _qdq_add(n: int, grids: list[tuple[float, int]]) -> onnx.ModelProto:
    """``Q(DQ(a) + DQ(b))`` on uint8 vectors, which ORT fuses into QLinearAdd."""
    inits = []
    for name, (s, zp) in zip("abc", grids):
        inits += [numpy_helper.from_array(np.asarray(s, np.float32), f"s_{name}"),
                  numpy_helper.from_array(np.asarray(zp, np.uint8), f"zp_{name}")]
    nodes = [helper.make_node("DequantizeLinear", ["a", "s_a", "zp_a"], ["fa"]),
             helper.make_node("DequantizeLinear", ["b", "s_b", "zp_b"], ["fb"]),
             helper.make_node("Add", ["fa", "fb"], ["sum"]),
             helper.make_node("QuantizeLinear", ["sum", "s_c", "zp_c"], ["c"])]
    io = [helper.make_tensor_value_info(x, TensorProto.UINT8, [n]) for x in "abc"]
    graph = helper.make_graph(nodes, "qdq_add", io[:2], io[2:], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_qlinear_add_levels_are_what_ort_qlinear_add_computes():
    """60 random grid triples x 2^16 random uint8 pairs; plain fake quantization of the float sum differs
    from the kernel on some of them (the reason for the emulation), the emulation on none."""
    rng = np.random.default_rng(0)
    n, fake_off = 1 << 16, 0
    for _ in range(60):
        grids = [(float(np.float32(10 ** rng.uniform(-3, -0.5))), int(rng.integers(0, 256))) for _ in range(3)]
        model = _qdq_add(n, grids)
        a, b = (rng.integers(0, 256, n, dtype=np.uint8) for _ in range(2))
        got = _session(model).run(None, {"a": a, "b": b})[0].astype(np.float32)
        (s_a, zp_a), (s_b, zp_b), (s_c, zp_c) = ((torch.tensor(s, dtype=torch.float32), torch.tensor(float(z)))
                                                 for s, z in grids)
        la, lb = torch.from_numpy(a.astype(np.float32)) - zp_a, torch.from_numpy(b.astype(np.float32)) - zp_b
        levels = qlinear_add_levels(la, lb, s_a, zp_a, s_b, zp_b, s_c, zp_c, 0, 255)
        np.testing.assert_array_equal((levels + zp_c).numpy(), got)
        fake = fake_quant(la * s_a + lb * s_b, s_c, zp_c, 0, 255) / s_c + zp_c
        fake_off += int((torch.round(fake).numpy() != got).sum())
    assert "QLinearAdd" in [node.op_type for node in _optimized(model).graph.node]
    assert fake_off > 0


def _optimized(model: onnx.ModelProto) -> onnx.ModelProto:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = f"{tmp}/m.onnx"
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return onnx.load(f"{tmp}/m.onnx")


def test_integer_residuals_need_an_asymmetric_placement():
    with pytest.raises(SrqError, match="integer residuals"):
        PlacementConfig(integer_residuals=True, symmetric=True)


@pytest.mark.shared_data
@pytest.mark.parametrize("weights, residuals, readers", [("PAN/PANx4_DF2K.pth", 17, 31), ("IMDN/IMDN_x2.pth", 6, 5)])
def test_residual_sites_and_the_layers_that_read_them(shared_data, weights, residuals, readers):
    """One ``<residual>.output`` site per block (PAN: and its trunk's); each later block's first convs (PAN:
    conv1_a and conv1_b, and trunk_conv after the last block; IMDN: c1) read the sum on that site's grid: one
    quantizer, two names (policy body: PAN's upconv1 after the trunk's sum is FP)."""
    model = load_model(shared_data / "weights" / weights)
    sites = place_quantizers(model.module, PlacementConfig(policy="body", w_bits=8, a_bits=8, first_conv_bits=8,
                                                           integer_residuals=True), torch.rand(1, 3, 24, 24))
    found = [name for name, q in sites.items() if name.endswith("residual.output")]
    assert len(set(map(id, (sites[n] for n in found)))) == residuals
    assert len(found) == residuals and all(sites[n].op == "add" for n in found)
    assert sum(1 for name, q in sites.items() if name.endswith(".input_q") and q.site in found) == readers


@pytest.mark.shared_data
def test_w4a4_layers_keep_their_own_input_grid(shared_data):
    model = load_model(shared_data / "weights/IMDN/IMDN_x2.pth")
    sites = place_quantizers(model.module, PlacementConfig(policy="body", first_conv_bits=8, integer_residuals=True),
                             torch.rand(1, 3, 24, 24))
    assert sites["IMDB2.c1.input_q"] is not sites["IMDB1.residual.output"]
    assert sites["IMDB2.c1.input_q"].fmt.bits == 4 and sites["IMDB1.residual.output"].fmt.bits == 8


@pytest.mark.shared_data
@pytest.mark.parametrize("weights, adds", [("PAN/PANx4_DF2K.pth", 17), ("IMDN/IMDN_x2.pth", 6)])
def test_integer_residual_engine_is_exact_and_runs_qlinear_add(shared_data, tmp_path, set5_lr,
                                                                assert_engine_equals_fake_quant, weights, adds):
    """W8A8, policy all (PAN with integer gates and shared inputs), phase 1 and 4 DQC steps on Set5 crops:
    every residual whose skip is on a grid runs as QLinearAdd (the first block's skip is the float first
    conv output), and the engine equals the fake-quant model (the recipe loaded back) on Set5 tiles."""
    from srq.calib.dqc import DQCConfig

    model = load_model(shared_data / "weights" / weights)
    images = set5_lr(model.scale)
    crops = torch.cat([im[:, :, :24, :24] for im in images[:3]])
    placement = PlacementConfig(policy="all", w_bits=8, a_bits=8, first_conv_bits=8, integer_residuals=True,
                                integer_gates=True, shared_inputs=True)
    cfg = CalibConfig(placement, dqc=DQCConfig(iterations=4, batch_size=2, patch=16), data="Set5 LR 24x24")
    recipe = calibrate(model.module, cfg, [crops], ModelInfo.of(model))
    recipe.save(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["placement"]["integer_residuals"] is True
    loaded = Recipe.load(tmp_path / "r.json")
    path = export_quantized(load_model(shared_data / "weights" / weights), loaded, "ort", (32, 32),
                            tmp_path / "m.onnx")
    counts = optimized_op_counts(path)
    assert counts["QLinearAdd"] == adds, counts
    assert_engine_equals_fake_quant(shared_data / "weights" / weights, loaded, path,
                                    [im[:, :, 4:36, 4:36].contiguous() for im in images[3:5]])


@pytest.mark.shared_data
def test_cli_integer_residuals_flag_reaches_the_recipe(shared_data, tmp_path):
    out = tmp_path / "r.json"
    weights = str(shared_data / "weights/IMDN/IMDN_x2.pth")
    assert main(["calibrate", weights, "--bits", "w8a8", "--crops", "2", "--crop-size", "16", "--integer-residuals",
                 "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["placement"]["integer_residuals"] is True
    sites = {s["name"]: s for s in doc["sites"]}
    assert sites["IMDB1.residual.output"]["op"] == "add" and sites["IMDB2.c1.input_q"]["op"] == "conv2d"
    assert sites["IMDB1.residual.output"]["lb"] == sites["IMDB2.c1.input_q"]["lb"]
    assert main(["calibrate", weights, "--symmetric", "--integer-residuals", "--out", str(tmp_path / "bad.json")]) == 2
    assert not (tmp_path / "bad.json").exists()


@pytest.mark.shared_data
def test_a_tensorrt_export_of_an_integer_residual_recipe_is_refused(shared_data, tmp_path):
    """Residual sites are asymmetric ORT grids; TensorRT needs zero point 0: the export says so, writes nothing."""
    weights = str(shared_data / "weights/IMDN/IMDN_x2.pth")
    recipe, onnx_path = tmp_path / "r.json", tmp_path / "m.onnx"
    assert main(["calibrate", weights, "--bits", "w8a8", "--crops", "2", "--crop-size", "16", "--integer-residuals",
                 "--out", str(recipe)]) == 0
    assert main(["export", weights, "--recipe", str(recipe), "--target", "trt", "--tile", "32x32",
                 "--out", str(onnx_path)]) == 2
    assert not onnx_path.exists()
