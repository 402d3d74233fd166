"""QDQ export of the real IMDN x2 checkpoint: ORT parity with the fake-quant model, fusion, lint, refusals.

Recipes come from ``srq.calib.api.calibrate`` (phase 1, policy body, 32x32 crops of Set5 LR);
parity runs on 48x48 tiles of other Set5 images in ONNX Runtime (ORT_ENABLE_ALL,
``session.x64quantprecision=1``) against ``apply_recipe`` on a fresh load.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from srq.calib.api import CalibConfig, calibrate
from srq.calib.recipe import ModelInfo, apply_recipe
from srq.calib.sites import PlacementConfig
from srq.errors import SrqError
from srq.export.lint import lint_model
from srq.export.ort_fusion import optimized_op_counts
from srq.export.qdq_export import export_quantized
from srq.imaging.datasets import open_folder
from srq.pipeline.cli import main
from srq.zoo.loader import load_model

pytestmark = pytest.mark.shared_data
TILE = (48, 48)


def _weights(shared_data):
    return shared_data / "weights/IMDN/IMDN_x2.pth"


@pytest.fixture(scope="module")
def lr_images(shared_data) -> list[torch.Tensor]:
    """Set5 LR images as (1, 3, h, w) float32 in [0, 1]."""
    ds = open_folder(shared_data / "benchmarks/Set5", 2)
    return [torch.from_numpy(s.lr.astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous() for s in ds]


@pytest.fixture(scope="module")
def recipes(shared_data, lr_images):
    """bits -> recipe calibrated on 32x32 crops of the first two Set5 images."""
    model = load_model(_weights(shared_data))
    crops = [im[:, :, :32, :32] for im in lr_images[:2]]
    made = {}

    def get(bits: int):
        if bits not in made:
            cfg = CalibConfig(PlacementConfig(policy="body", w_bits=bits, a_bits=bits), data="Set5 LR 32x32")
            made[bits] = calibrate(model.module, cfg, crops, ModelInfo.of(model))
        return made[bits]
    return get


def _ort_session(path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.x64quantprecision", "1")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _tiles(lr_images) -> list[torch.Tensor]:
    """48x48 tiles of Set5 images 3-5 (not used for calibration)."""
    return [im[:, :, 40:40 + TILE[0], 40:40 + TILE[1]].contiguous() for im in lr_images[2:]]


def _parity(shared_data, recipe, path, tiles) -> tuple[float, float]:
    """(PSNR dB of engine vs fake-quant, fraction of pixels differing by > 1/255), outputs clipped to [0, 1]."""
    fake = load_model(_weights(shared_data))
    apply_recipe(fake.module, recipe)
    sess = _ort_session(path)
    diffs = []
    for x in tiles:
        with torch.no_grad():
            ref = fake.module(x).clamp(0, 1).numpy()
        out = np.clip(sess.run(None, {"lr": x.numpy()})[0], 0, 1)
        diffs.append((out - ref).ravel())
    d = np.concatenate(diffs).astype(np.float64)
    mse = float(np.mean(d**2))
    return (float("inf") if mse == 0 else 10 * np.log10(1 / mse)), float(np.mean(np.abs(d) > 1 / 255))


def _first_conv_lsb(shared_data, recipe, path, x) -> tuple[float, float]:
    """IMDB1.c1's output (Q -> DQ): (max |engine - fake-quant| in LSB, fraction of differing values)."""
    site = recipe.site("IMDB1.c1.output")
    model = onnx.load(path)
    model.graph.output.append(onnx.helper.make_tensor_value_info(f"{site.name}_dq", onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the DQ tensor
    (out,) = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(
        [f"{site.name}_dq"], {"lr": x.numpy()})
    fake = load_model(_weights(shared_data))
    seen: list[np.ndarray] = []

    def keep(_module, _args, y) -> None:  # copy: IMDN's LeakyReLU runs in place on this tensor
        seen.append(y.numpy().copy())

    apply_recipe(fake.module, recipe)[site.name].register_forward_hook(keep)
    with torch.no_grad():
        fake.module(x)
    return float(np.abs(out - seen[0]).max() / site.scale), float(np.mean(out != seen[0]))


@pytest.mark.parametrize("bits", [4, pytest.param(8, marks=pytest.mark.slow)])
def test_first_conv_matches_fake_quant(shared_data, lr_images, recipes, bits, tmp_path):
    """Scales, zero points, integer weights, int32 bias, input Q/Clip and output Q of one real conv
    reproduce the calibrated model: equal except float ties (torch vs ORT summation order), at most
    1 LSB on <= 1e-4 of the values. Deeper layers inherit those ties (see test_output_parity)."""
    recipe = recipes(bits)
    path = export_quantized(load_model(_weights(shared_data)), recipe, "ort", TILE, tmp_path / "m.onnx")
    for x in _tiles(lr_images):
        lsb, frac = _first_conv_lsb(shared_data, recipe, path, x)
        assert lsb <= 1.0001 and frac <= 1e-4, (lsb, frac)


def test_fusion_and_metadata(shared_data, recipes, tmp_path):
    recipe = recipes(4)
    model = load_model(_weights(shared_data))
    path = export_quantized(model, recipe, "ort", TILE, tmp_path / "imdn_w4a4.onnx")
    convs = {s.name.rsplit(".", 1)[0] for s in recipe.sites if s.name.endswith(".output")}
    assert convs, "calibration placed no conv output sites"
    counts = optimized_op_counts(path)
    assert counts["QLinearConv"] == len(convs), counts
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert meta["srq.target"] == "ort"
    assert json.loads(meta["srq.site_bits"]) == {s.name: s.bits for s in recipe.sites}
    assert len(meta["srq.recipe_sha256"]) == 64 and meta["srq.fingerprint"] == model.fingerprint


_TIES = ("1-LSB float ties (torch vs ORT conv accumulation order) cross low-bit input grids and grow through "
         "the 6 IMDB blocks; calib must emulate QLinearConv's integer accumulation + requantization")


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=_TIES)
@pytest.mark.parametrize("bits", [4, 8])
def test_output_parity(shared_data, lr_images, recipes, bits, tmp_path):
    recipe = recipes(bits)
    path = export_quantized(load_model(_weights(shared_data)), recipe, "ort", TILE, tmp_path / "m.onnx")
    psnr, frac = _parity(shared_data, recipe, path, _tiles(lr_images))
    assert psnr >= 55 and frac <= 1e-3, (psnr, frac)


def test_packed_weights_same_output_smaller_file(shared_data, lr_images, recipes, tmp_path):
    recipe = recipes(4)
    model = load_model(_weights(shared_data))
    int8 = export_quantized(model, recipe, "ort", TILE, tmp_path / "int8.onnx")
    packed = export_quantized(model, recipe, "ort", TILE, tmp_path / "packed.onnx", weights="packed")
    assert packed.stat().st_size < 0.7 * int8.stat().st_size
    types = {t.data_type for t in onnx.load(packed).graph.initializer}
    assert onnx.TensorProto.UINT4 in types
    x = _tiles(lr_images)[0].numpy()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # same float kernels for both
    a, b = (ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]).run(None, {"lr": x})[0]
            for p in (int8, packed))
    assert np.array_equal(a, b)


def test_trt_export_is_symmetric_and_ort_export_is_not(shared_data, recipes, tmp_path):
    recipe = recipes(4)
    model = load_model(_weights(shared_data))
    ort_path = export_quantized(model, recipe, "ort", TILE, tmp_path / "ort.onnx")
    trt_path = export_quantized(model, recipe, "trt", TILE, tmp_path / "trt.onnx")
    ort_rules = {v.rule for v in lint_model(onnx.load(ort_path), "trt")}
    assert {"trt-zero-point", "trt-type"} <= ort_rules
    trt_rules = {v.rule for v in lint_model(onnx.load(trt_path), "trt")}
    assert not trt_rules & {"trt-zero-point", "trt-type", "scale-positive", "qdq-both-inputs", "weight-axis"}
    lost = json.loads((tmp_path / "trt.bits_lost.json").read_text())
    assert set(lost) == {s.name for s in recipe.sites}
    assert all(lost[s.name] == 0 for s in recipe.sites if s.bits < 8)  # exact shift below 8 bits
    eight = [lost[s.name] for s in recipe.sites if s.bits == 8]  # conv outputs: widened, <= log2(255/127)
    assert eight and max(eight) > 0.5 and all(0 <= v <= np.log2(255 / 127) + 1e-6 for v in eight)


@pytest.mark.xfail(strict=True, reason="IMDN's distillation Concat mixes FP channels with the quantized c4 output "
                                       "(lint rule trt-concat-scales); needs a placement or rule decision")
def test_lint_trt_passes_on_trt_export(shared_data, recipes, tmp_path, capsys):
    recipe = recipes(4)
    recipe.save(tmp_path / "r.json")
    assert main(["export", str(_weights(shared_data)), "--recipe", str(tmp_path / "r.json"), "--target", "trt",
                 "--tile", "48x48", "--out", str(tmp_path / "trt.onnx")]) == 0
    assert main(["lint", str(tmp_path / "trt.onnx"), "--target", "trt"]) == 0


def test_cli_refusals_leave_nothing(shared_data, recipes, tmp_path, capsys):
    recipe = recipes(4)
    recipe.save(tmp_path / "r.json")
    pan = shared_data / "weights/PAN/PANx2_DF2K.pth"
    out = tmp_path / "out" / "m.onnx"
    args = ["--recipe", str(tmp_path / "r.json"), "--target", "ort", "--out", str(out)]
    assert main(["export", str(pan), "--tile", "48x48", *args]) == 2
    assert "recipe is for IMDN x2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["export", str(_weights(shared_data)), "--tile", "48x0", *args])
    assert exc.value.code == 2 and "sizes must be positive" in capsys.readouterr().err
    (tmp_path / "r.json").write_text('{"schema": "srq.recipe", "schema_version": 99}')
    assert main(["export", str(_weights(shared_data)), "--tile", "48x48", *args]) == 2
    assert "schema version 99" in capsys.readouterr().err
    assert not out.exists() and (not out.parent.exists() or not any(out.parent.iterdir()))


def test_unmatched_sites_are_listed_not_skipped(shared_data, recipes, tmp_path):
    recipe = recipes(4)
    bad = tuple(dataclasses.replace(s, name=s.name.replace("IMDB1.c1.", "IMDB1.c9.")) for s in recipe.sites)
    with pytest.raises(SrqError, match=r"no matching node .*IMDB1\.c9\.weight_q.*IMDB1\.c9\.input_q"):
        export_quantized(load_model(_weights(shared_data)), dataclasses.replace(recipe, sites=bad), "ort", TILE,
                         tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
    shifted = tuple(dataclasses.replace(s, beta=np.zeros_like(s.lb)) if s.name == "IMDB1.c1.input_q" else s
                    for s in recipe.sites)
    with pytest.raises(SrqError, match=r"IMDB1\.c1\.input_q: bias-corrected"):
        export_quantized(load_model(_weights(shared_data)), dataclasses.replace(recipe, sites=shifted), "ort", TILE,
                         tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
