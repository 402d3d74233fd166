"""Integer concats (``PlacementConfig.integer_concats``): an arch's ``Concat`` requantized by its own site, and
IMDN's channel attention run on those 8-bit levels (exact statistics, QLinearMul gating), checked against
ONNX Runtime on a synthetic graph and on real IMDN engines."""

from __future__ import annotations

import json

import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
import torch

from srq.calib.api import CalibConfig, calibrate
from srq.calib.layers import level_contrast
from srq.calib.recipe import ModelInfo, Recipe
from srq.calib.sites import PlacementConfig, place_quantizers
from srq.errors import SrqError
from srq.export.channel_statistics import contrast_from_levels
from srq.export.ort_fusion import optimized_op_counts
from srq.export.qdq_export import export_quantized
from srq.pipeline.cli import main
from srq.zoo.loader import load_model

IMDN = "weights/IMDN/IMDN_x2.pth"
INTEGER = dict(policy="body", w_bits=8, a_bits=8, weight_symmetric=True, first_conv_bits=8, integer_gates=True,
               shared_inputs=True, integer_residuals=True)


def _contrast_graph(shape: tuple[int, ...], scale: float, zero_point: int, opset: int) -> bytes:
    """uint8 ``q`` -> DQ -> a stand-in contrast node (scope ``c``) -> Identity: what the export sees."""
    q = gs.Variable("q", np.uint8, shape)
    x = gs.Variable("x", np.float32, shape)
    stand_in, y = gs.Variable("stand_in", np.float32), gs.Variable("y", np.float32)
    dq = gs.Node("DequantizeLinear", "dq", {}, [q, gs.Constant("s", np.asarray(scale, np.float32)),
                                                 gs.Constant("zp", np.asarray(zero_point, np.uint8))], [x])
    node = gs.Node("ReduceMean", "/c/ReduceMean", {"axes": [2, 3]}, [x], [stand_in])
    graph = gs.Graph([dq, node, gs.Node("Identity", "out", {}, [stand_in], [y])], [q], [y], opset=opset)
    assert contrast_from_levels(graph, {"c": [node]}, ["c"]) == 1
    assert all(n.op != "ReduceMean" for n in graph.nodes)
    return gs.export_onnx(graph).SerializeToString()


@pytest.mark.parametrize("shape, opset", [((1, 64, 32, 32), 17), ((2, 16, 31, 37), 17), ((1, 8, 128, 128), 17),
                                          ((1, 64, 32, 32), 21)])
def test_integer_statistics_in_ort_equal_calibrations_level_contrast(shape, opset):
    """Random levels (with constant channels) on random grids: ORT's integer sums and float64 tail give calib's
    ``level_contrast`` bit for bit, including odd sizes (31x37: chunks of 37), a 128x128 tile and opset 21
    (packed weights: reduction axes as inputs)."""
    rng = np.random.default_rng(len(shape) + shape[-1])
    for _ in range(5):
        scale, zero_point = float(np.float32(10 ** rng.uniform(-3, -0.5))), int(rng.integers(0, 256))
        q = rng.integers(0, 256, shape, dtype=np.uint8)
        q[:, 0] = rng.integers(0, 256)  # a constant channel: variance exactly 0
        q[:, 1] = rng.integers(0, 2, shape[2:]) * 255  # the widest spread
        graph = _contrast_graph(shape, scale, zero_point, opset)
        got = ort.InferenceSession(graph, providers=["CPUExecutionProvider"]).run(None, {"q": q})[0]
        want = level_contrast(torch.from_numpy(q.astype(np.float32)), torch.tensor(scale),
                              torch.tensor(float(zero_point)))
        np.testing.assert_array_equal(got, want.numpy())
        assert np.all(got[:, 0] == np.float32((q[0, 0, 0, 0] - np.float64(zero_point)) * np.float64(np.float32(scale))))


@pytest.mark.shared_data
def test_imdn_concat_sites_and_per_channel_gates(shared_data):
    """Each IMDN block's Concat gets an 8-bit output site, and its attention sigmoid a gate site only then (a
    per-channel gate on float features would save nothing)."""
    for concats, found in ((True, 6), (False, 0)):
        model = load_model(shared_data / IMDN)
        sites = place_quantizers(model.module, PlacementConfig(**INTEGER, integer_concats=concats),
                                 torch.rand(1, 3, 24, 24))
        names = set(sites)
        assert sum(n.endswith(".concat.output") for n in names) == found
        assert sum(n.endswith(".cca.conv_du.3.output") for n in names) == found
        assert all(sites[f"IMDB{i}.concat.output"].op == "concat" for i in range(1, found + 1))


def test_integer_concats_need_an_asymmetric_placement():
    with pytest.raises(SrqError, match="integer concats"):
        PlacementConfig(integer_concats=True, symmetric=True)


@pytest.mark.shared_data
def test_integer_concat_engine_is_exact_and_runs_the_attention_in_integers(shared_data, tmp_path, set5_lr,
                                                                            assert_engine_equals_fake_quant):
    """W8A8 IMDN with integer concats, phase 1 and 4 DQC steps on Set5 crops: ORT runs every block's Concat as
    QLinearConcat, its attention statistics as integer sums (two exact float32 MatMuls of levels per block, no
    Pow / ReduceMean left) and the gating as QLinearMul, and the engine equals the fake-quant model (the recipe
    loaded back) on Set5 tiles."""
    from srq.calib.dqc import DQCConfig

    model = load_model(shared_data / IMDN)
    images = set5_lr(model.scale)
    crops = torch.cat([im[:, :, :24, :24] for im in images[:3]])
    cfg = CalibConfig(PlacementConfig(**INTEGER, integer_concats=True),
                      dqc=DQCConfig(iterations=4, batch_size=2, patch=16), data="Set5 LR 24x24")
    recipe = calibrate(model.module, cfg, [crops], ModelInfo.of(model))
    recipe.save(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["placement"]["integer_concats"] is True
    loaded = Recipe.load(tmp_path / "r.json")
    path = export_quantized(load_model(shared_data / IMDN), loaded, "ort", (32, 32), tmp_path / "m.onnx")
    counts = optimized_op_counts(path)
    assert counts["QLinearConcat"] == 7 and counts["QLinearMul"] == 6 and counts["MatMul"] == 12, counts
    assert counts["Pow"] == 0 and counts["ReduceMean"] == 0, counts
    assert_engine_equals_fake_quant(shared_data / IMDN, loaded, path,
                                    [im[:, :, 4:36, 4:36].contiguous() for im in images[3:5]])


@pytest.mark.shared_data
def test_cli_integer_concats_flag_reaches_the_recipe_and_tensorrt_is_refused(shared_data, tmp_path):
    weights, out = str(shared_data / IMDN), tmp_path / "r.json"
    assert main(["calibrate", weights, "--bits", "w8a8", "--crops", "2", "--crop-size", "16", "--integer-concats",
                 "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["placement"]["integer_concats"] is True
    assert {s["name"]: s["op"] for s in doc["sites"]}["IMDB1.concat.output"] == "concat"
    assert main(["export", weights, "--recipe", str(out), "--target", "trt", "--tile", "32x32",
                 "--out", str(tmp_path / "m.onnx")]) == 2
    assert not (tmp_path / "m.onnx").exists()
    assert main(["calibrate", weights, "--symmetric", "--integer-concats", "--out", str(tmp_path / "bad.json")]) == 2
    assert not (tmp_path / "bad.json").exists()
