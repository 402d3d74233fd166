"""calibrate() -> Recipe: round trip, apply_recipe, refusal of a wrong model / schema / sidecar / values."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from torch import nn

from srq.calib import CalibConfig, FakeQuantizer, ModelInfo, PlacementConfig, Recipe, SearchConfig, apply_recipe, calibrate
from srq.errors import SrqError
from srq.zoo.archs.imdn import IMDN

INFO = ModelInfo("IMDN", 2, "0f" * 32)


@pytest.fixture(scope="module")
def fp_model() -> nn.Module:
    torch.manual_seed(0)
    return IMDN(nf=16, num_modules=2, scale=2).eval()


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def recipe(fp_model, batch) -> Recipe:
    cfg = CalibConfig(placement=PlacementConfig(policy="body", w_bits=4, a_bits=4, bias_correction=True),
                      search=SearchConfig(method="sorted"), data="random 16x16 crops", seed=3)
    return calibrate(fp_model, cfg, [batch], INFO)


def _outputs(fp_model, recipe, x):
    model = copy.deepcopy(fp_model)
    apply_recipe(model, recipe)
    with torch.no_grad():
        return model(x)


def test_calibrate_leaves_the_fp_model_alone_and_describes_every_site(fp_model, recipe):
    assert not any(isinstance(m, FakeQuantizer) for m in fp_model.modules())
    # 7 convs per IMDB (c1-c5, 2 in CCA) + c.0 + LR_conv; weight, input and output quantizer each
    assert len(recipe.sites) == 3 * (2 * 7 + 2)
    c1w = recipe.site("IMDB1.c1.weight_q")
    assert (c1w.kind, c1w.granularity, c1w.axis, c1w.lb.shape, c1w.qmax, c1w.beta) == ("weight", "channel", 0, (16,), 15, None)
    c1x = recipe.site("IMDB1.c1.input_q")
    assert (c1x.granularity, c1x.lb.shape, c1x.op) == ("tensor", (), "conv2d") and c1x.beta is not None
    assert recipe.calibration.method == "sorted" and recipe.calibration.seed == 3
    assert recipe.model == INFO and recipe.placement.bias_correction


def test_bias_correction_starts_at_the_mean_of_the_site_input(fp_model, batch, recipe):
    seen = {}
    handle = fp_model.IMDB2.c5.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0].clone()))
    with torch.no_grad():
        fp_model(batch)
    handle.remove()
    assert float(recipe.site("IMDB2.c5.input_q").beta) == pytest.approx(float(seen["x"].double().mean()), rel=1e-5)


def test_round_trip_keeps_every_value_and_the_quantized_output(tmp_path, fp_model, batch, recipe):
    path = tmp_path / "r" / "recipe.json"
    recipe.save(path)
    assert path.is_file() and path.with_suffix(".safetensors").is_file()
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    loaded = Recipe.load(path)
    assert [s.name for s in loaded.sites] == [s.name for s in recipe.sites]
    for a, b in zip(recipe.sites, loaded.sites):
        for k in ("lb", "ub", "scale", "zero_point", "beta"):
            va, vb = getattr(a, k), getattr(b, k)
            assert (va is None and vb is None) or (np.array_equal(va, vb) and va.dtype == vb.dtype), (a.name, k)
    assert loaded.placement == recipe.placement and loaded.model == recipe.model
    assert loaded.calibration == recipe.calibration
    x = torch.rand(1, 3, 20, 12, generator=torch.Generator().manual_seed(2))
    out = _outputs(fp_model, loaded, x)
    assert torch.equal(out, _outputs(fp_model, recipe, x))
    with torch.no_grad():
        assert not torch.allclose(out, fp_model(x), atol=1e-4)  # it is quantized


def test_check_matches_refuses_another_model(recipe):
    recipe.check_matches(INFO)
    with pytest.raises(SrqError, match="recipe is for IMDN x2, not for this PAN x2"):
        recipe.check_matches(ModelInfo("PAN", 2, INFO.fingerprint))
    with pytest.raises(SrqError, match="other IMDN weights"):
        recipe.check_matches(ModelInfo("IMDN", 2, "ab" * 32))


def test_apply_recipe_refuses_a_model_without_those_layers(recipe):
    with pytest.raises(SrqError, match="IMDB2"):
        apply_recipe(IMDN(nf=16, num_modules=1, scale=2), recipe)


def _saved(tmp_path, recipe):
    path = tmp_path / "recipe.json"
    recipe.save(path)
    return path, json.loads(path.read_text())


def test_load_refuses_wrong_schema_version_and_missing_sidecar(tmp_path, recipe):
    path, doc = _saved(tmp_path, recipe)
    path.write_text(json.dumps({**doc, "schema_version": 99}))
    with pytest.raises(SrqError, match=r"recipe\.json: recipe schema version 99"):
        Recipe.load(path)
    path.write_text(json.dumps({**doc, "schema": "something.else"}))
    with pytest.raises(SrqError, match="not an srq recipe"):
        Recipe.load(path)
    path.write_text(json.dumps(doc))
    path.with_suffix(".safetensors").unlink()
    with pytest.raises(SrqError, match=r"sidecar recipe\.safetensors is missing"):
        Recipe.load(path)
    path.write_text("{not json")
    with pytest.raises(SrqError, match="cannot read recipe"):
        Recipe.load(path)


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.update(scale=-0.5), "scale must be positive"),
    (lambda s: s.update(lb=float("nan")), "lb is not finite"),
    (lambda s: s.update(zero_point=300), "zero_point out of range"),
    (lambda s: s.update(qmax=7), "qmin/qmax"),
    (lambda s: s.update(granularity="channel"), "granularity"),
])
def test_load_refuses_bad_per_tensor_values(tmp_path, recipe, edit, message):
    path, doc = _saved(tmp_path, recipe)
    site = next(s for s in doc["sites"] if s["name"] == "IMDB1.c2.input_q")
    edit(site)
    path.write_text(json.dumps(doc))
    with pytest.raises(SrqError, match=rf"recipe\.json: site IMDB1\.c2\.input_q: {message}"):
        Recipe.load(path)


def test_load_refuses_a_sidecar_array_of_the_wrong_shape_or_missing(tmp_path, recipe):
    path, _ = _saved(tmp_path, recipe)
    sidecar = path.with_suffix(".safetensors")
    arrays = load_file(str(sidecar))
    arrays["IMDB1.c1.weight_q.ub"] = arrays["IMDB1.c1.weight_q.ub"][:3].copy()
    save_file(arrays, str(sidecar))
    with pytest.raises(SrqError, match="IMDB1.c1.weight_q: arrays"):
        Recipe.load(path)
    del arrays["IMDB1.c1.weight_q.ub"]
    save_file(arrays, str(sidecar))
    with pytest.raises(SrqError, match="'IMDB1.c1.weight_q.ub' is not in the sidecar"):
        Recipe.load(path)


def test_apply_refuses_scales_that_do_not_follow_from_the_bounds(tmp_path, fp_model, recipe):
    path, doc = _saved(tmp_path, recipe)
    site = next(s for s in doc["sites"] if s["name"] == "IMDB1.c2.input_q")
    site["scale"] *= 1.5
    path.write_text(json.dumps(doc))
    with pytest.raises(SrqError, match="IMDB1.c2.input_q: scale/zero_point do not follow"):
        apply_recipe(copy.deepcopy(fp_model), Recipe.load(path))


def test_nan_in_calibration_data_names_the_first_quantized_site(fp_model, batch):
    bad = batch.clone()
    bad[0, 1, 3, 3] = float("nan")
    with pytest.raises(SrqError, match=r"quantizer site IMDB1\.c1\.input_q: NaN"):
        calibrate(fp_model, CalibConfig(), [bad], INFO)
