"""Integer activations (``PlacementConfig.integer_activations``): a LeakyReLU whose output quantized layers read
(IMDN: through a Split) gets an output site on their grid, so that ONNX Runtime runs QLinearLeakyRelu and splits
uint8 tensors; checked on real IMDN engines at W8A8 and W4A4 (4-bit grids: a Clip the export must not repeat)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from srq.calib.api import CalibConfig, calibrate
from srq.calib.recipe import ModelInfo, Recipe
from srq.calib.sites import PlacementConfig, place_quantizers
from srq.errors import SrqError
from srq.export.ort_fusion import optimized_model
from srq.export.qdq_export import export_quantized
from srq.zoo.loader import load_model

IMDN = "weights/IMDN/IMDN_x2.pth"


def _placement(bits: int, **extra) -> PlacementConfig:
    return PlacementConfig(policy="body", w_bits=bits, a_bits=bits, first_conv_bits=8, integer_gates=True,
                           shared_inputs=True, integer_residuals=True, integer_concats=True, **extra)


@pytest.mark.shared_data
def test_each_leaky_relu_gets_its_readers_grid(shared_data):
    """IMDN: the three LeakyReLUs of each block (read through their Split by c2 / c3 / c4) and the tail's (read by
    LR_conv) get a site at the readers' input format, which those readers share; none with bias correction."""
    model = load_model(shared_data / IMDN)
    sites = place_quantizers(model.module, _placement(4, integer_activations=True), torch.rand(1, 3, 24, 24))
    acts = [n for n in sites if n.endswith(".output") and sites[n].op == "leaky_relu"]
    assert len(acts) == 19 and "c.1.output" in acts
    for i in range(1, 7):
        for k in (1, 2, 3):
            assert sites[f"IMDB{i}.c{k + 1}.input_q"] is sites[f"IMDB{i}.act{k}.output"]
    assert sites["LR_conv.input_q"] is sites["c.1.output"] and sites["c.1.output"].fmt.bits == 4
    model = load_model(shared_data / IMDN)
    sites = place_quantizers(model.module, _placement(4, integer_activations=True, bias_correction=True),
                             torch.rand(1, 3, 24, 24))
    assert not any(q.op == "leaky_relu" for q in sites.values())


def test_integer_activations_need_an_asymmetric_placement():
    with pytest.raises(SrqError, match="integer activations"):
        PlacementConfig(integer_activations=True, symmetric=True)


@pytest.mark.shared_data
@pytest.mark.parametrize("bits", [8, 4])
def test_integer_activation_engine_is_exact_and_splits_integers(shared_data, tmp_path, set5_lr,
                                                                 assert_engine_equals_fake_quant, bits):
    """Phase 1 and 4 DQC steps on Set5 crops: every LeakyReLU runs as QLinearLeakyRelu, every Split on uint8 (no
    DequantizeLinear in front of one), no part is quantized again on its reader's grid (no Q or Clip of c2 / c3 /
    c4's input site left), and the engine equals the fake-quant model (the recipe loaded back) on Set5 tiles."""
    from srq.calib.dqc import DQCConfig

    model = load_model(shared_data / IMDN)
    images = set5_lr(model.scale)
    crops = torch.cat([im[:, :, :24, :24] for im in images[:3]])
    cfg = CalibConfig(_placement(bits, integer_activations=True, weight_symmetric=bits == 8),
                      dqc=DQCConfig(iterations=4, batch_size=2, patch=16), data="Set5 LR 24x24")
    recipe = calibrate(model.module, cfg, [crops], ModelInfo.of(model))
    recipe.save(tmp_path / "r.json")
    loaded = Recipe.load(tmp_path / "r.json")
    path = export_quantized(load_model(shared_data / IMDN), loaded, "ort", (32, 32), tmp_path / "m.onnx")
    graph = optimized_model(path).graph
    counts = Counter(n.op_type for n in graph.node)
    assert counts["QLinearLeakyRelu"] == 19 and counts["LeakyRelu"] == 0 and counts["Split"] == 18, counts
    made = {o: n.op_type for n in graph.node for o in n.output}
    assert all(made.get(n.input[0]) != "DequantizeLinear" for n in graph.node if n.op_type == "Split")
    again = [n.name for n in graph.node if any(f".c{k}.input_q" in n.name for k in (2, 3, 4))
             and n.op_type in ("QuantizeLinear", "Clip", "DequantizeLinear")]
    assert not again, again
    assert_engine_equals_fake_quant(shared_data / IMDN, loaded, path,
                                    [im[:, :, 4:36, 4:36].contiguous() for im in images[3:5]])
