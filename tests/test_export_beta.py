"""QDQ export of bias-corrected (2DQuant+ beta) recipes in real ONNX Runtime sessions.

IMDN x2 (real checkpoint, W4A4 sorted + beta, phase 1, policy body, 32x32 crops of Set5 LR 1-2)
and a seeded random-init SwinIR-light x2 (2dquant policy, beta on the Linear and MatMul inputs);
tiles of Set5 images 3-5. Parity is measured as in ``tests/test_export_qdq_imdn.py`` (engine at
``ORT_ENABLE_ALL`` + ``session.x64quantprecision=1`` vs ``apply_recipe`` on a fresh load, outputs
clipped to [0, 1]) and judged against the same recipe with every beta removed (same bounds),
exported the same way.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file

from srq.calib.api import CalibConfig, calibrate
from srq.calib.recipe import ModelInfo, apply_recipe
from srq.calib.sites import PlacementConfig
from srq.errors import SrqError
from srq.export.lint import lint_model
from srq.export.ort_fusion import optimized_op_counts
from srq.export.qdq_export import export_quantized
from srq.zoo.archs.swinir import swinir_light
from srq.zoo.loader import load_model

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]
TILE = (48, 48)


def _imdn(shared_data):
    return load_model(shared_data / "weights/IMDN/IMDN_x2.pth")


@pytest.fixture(scope="module")
def imdn_recipe(shared_data, lr_images):
    """IMDN x2 W4A4 sorted + bias correction, phase 1."""
    model = _imdn(shared_data)
    cfg = CalibConfig(PlacementConfig(policy="body", w_bits=4, a_bits=4, bias_correction=True), data="Set5 LR 32x32")
    return calibrate(model.module, cfg, [im[:, :, :32, :32] for im in lr_images[:2]], ModelInfo.of(model))


def _drop_beta(recipe, where=lambda layer: True):
    """``recipe`` with beta removed from the sites of the layers ``where`` selects (bounds unchanged)."""
    return dataclasses.replace(recipe, sites=tuple(
        dataclasses.replace(s, beta=None) if where(s.name.rsplit(".", 1)[0]) else s for s in recipe.sites))


def _session(model) -> ort.InferenceSession:
    """ORT session over a model path or serialized bytes."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.x64quantprecision", "1")
    opts.log_severity_level = 3
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts,
                                providers=["CPUExecutionProvider"])


def _parity(fake: torch.nn.Module, path, tiles) -> tuple[float, float]:
    """(PSNR dB of engine vs fake-quant, capped at 100; fraction of values differing by > 1/255)."""
    sess = _session(path)
    diffs = []
    for x in tiles:
        with torch.no_grad():
            ref = fake(x).clamp(0, 1).numpy()
        diffs.append((np.clip(sess.run(None, {"lr": x.numpy()})[0], 0, 1) - ref).ravel().astype(np.float64))
    d = np.concatenate(diffs)
    return min(100.0, 10 * np.log10(1 / max(float(np.mean(d**2)), 1e-10))), float(np.mean(np.abs(d) > 1 / 255))


def _imdn_parity(shared_data, recipe, path, tiles) -> tuple[float, float]:
    fake = _imdn(shared_data)
    apply_recipe(fake.module, recipe)
    return _parity(fake.module, path, tiles)


def _tiles(lr_images, size: int) -> list[torch.Tensor]:
    return [im[:, :, 40:40 + size, 40:40 + size].contiguous() for im in lr_images[2:]]


def _padded_convs(model) -> set[str]:
    return {n for n, m in model.module.named_modules() if isinstance(m, torch.nn.Conv2d) and any(m.padding)}


def test_imdn_beta_keeps_every_conv_integer(shared_data, imdn_recipe, tmp_path):
    recipe = imdn_recipe
    model = _imdn(shared_data)
    inputs = [s for s in recipe.sites if s.name.endswith(".input_q")]
    assert inputs and all(s.beta is not None for s in inputs)
    path = export_quantized(model, recipe, "ort", TILE, tmp_path / "beta.onnx")
    counts = optimized_op_counts(path)
    convs = {s.name.rsplit(".", 1)[0] for s in recipe.sites if s.name.endswith(".output")}
    assert counts["QLinearConv"] == len(convs), counts
    padded = {s.name.rsplit(".", 1)[0] for s in inputs} & _padded_convs(model)
    assert padded and counts["Pad"] == len(padded), counts  # the padding moved in front of Sub(beta)
    assert counts["Sub"] >= len(inputs), counts


def test_imdn_beta_on_unpadded_convs_adds_no_difference(shared_data, lr_images, imdn_recipe, tmp_path):
    """1x1 convs: ``W_q @ beta`` folds into the int32 bias exactly, so parity equals the no-beta export's."""
    model = _imdn(shared_data)
    padded = _padded_convs(model)
    unpadded_only = _drop_beta(imdn_recipe, lambda layer: layer in padded)
    assert sum(s.beta is not None for s in unpadded_only.sites) >= 12  # c5 and both CCA convs of 6 blocks
    tiles = _tiles(lr_images, TILE[0])
    no_beta = _drop_beta(imdn_recipe)
    base = _imdn_parity(shared_data, no_beta, export_quantized(model, no_beta, "ort", TILE, tmp_path / "base.onnx"),
                        tiles)
    with_beta = _imdn_parity(shared_data, unpadded_only,
                             export_quantized(model, unpadded_only, "ort", TILE, tmp_path / "beta.onnx"), tiles)
    assert with_beta[0] >= base[0] - 1.0 and with_beta[1] <= base[1] + 1e-4, (base, with_beta)


def test_imdn_padded_conv_matches_inside_bounded_on_border(shared_data, lr_images, imdn_recipe, tmp_path):
    """IMDB1.c1 (3x3, zero padding 1, beta on its input), engine vs calib's current border-map form.

    Away from the border they differ only by where ``W_q @ beta`` is rounded (export: into the int32 bias;
    calib's map: added in float after it), at most 1 output LSB. On the border rows / columns the engine sees
    ``Q(0 - beta)`` where calib adds ``conv2d(beta * 1, W_q)``: at most
    ``|DQ(Q(-beta)) + beta| * sum |W_q border taps| / s_y`` + 1 LSB. (Both are 0 once calib pads first.)"""
    recipe = imdn_recipe
    path = export_quantized(_imdn(shared_data), recipe, "ort", TILE, tmp_path / "beta.onnx")
    out_site, in_site = recipe.site("IMDB1.c1.output"), recipe.site("IMDB1.c1.input_q")
    model = onnx.load(path)
    model.graph.output.append(onnx.helper.make_tensor_value_info(f"{out_site.name}_dq", onnx.TensorProto.FLOAT, None))
    sess = _session(model.SerializeToString())
    fake = _imdn(shared_data)
    apply_recipe(fake.module, recipe)
    conv = fake.module.get_submodule("IMDB1.c1")
    seen: list[np.ndarray] = []
    conv.register_forward_hook(lambda _m, _a, y: seen.append(y.numpy().copy()))  # copy: in-place LeakyReLU follows
    s_x, zp_x = float(in_site.scale), int(in_site.zero_point)
    beta = float(in_site.beta)
    border_level = np.clip(np.round(np.float32(-beta) / np.float32(s_x)) + zp_x, in_site.qmin, in_site.qmax)
    w = conv.weight_q(conv.weight).detach().numpy()
    taps = np.abs(w).sum(axis=1)  # (O, 3, 3)
    worst_border = max(taps.sum(axis=(1, 2)) - taps[:, 1, 1])  # all taps but the centre can fall outside
    bound = abs((border_level - zp_x) * s_x + beta) * worst_border / float(out_site.scale) + 1.0001
    for x in _tiles(lr_images, TILE[0]):
        seen.clear()
        with torch.no_grad():
            fake.module(x)
        engine = sess.run([f"{out_site.name}_dq"], {"lr": x.numpy()})[0]
        lsb = np.abs(engine - seen[0]) / float(out_site.scale)
        assert lsb[..., 1:-1, 1:-1].max() <= 1.0001, lsb[..., 1:-1, 1:-1].max()
        assert lsb.max() <= bound, (lsb.max(), bound)


def test_beta_on_an_output_site_is_refused(shared_data, imdn_recipe, tmp_path):
    recipe = _drop_beta(imdn_recipe)
    bad = tuple(dataclasses.replace(s, beta=np.zeros_like(s.lb)) if s.name == "IMDB1.c1.output" else s
                for s in recipe.sites)
    with pytest.raises(SrqError, match=r"IMDB1\.c1\.output: beta is exported on per-tensor layer inputs only"):
        export_quantized(_imdn(shared_data), dataclasses.replace(recipe, sites=bad), "ort", TILE, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_swinir_light_beta_on_linear_and_matmul_inputs(shared_data, lr_images, tmp_path, assert_swinir_integer_kernels):
    """Linear inputs fold ``W_q @ beta`` into the int32 bias (QGemm stays); attention MatMuls keep their
    integer kernel with the shift terms added after it; parity as good as the no-beta export's."""
    torch.manual_seed(0)
    ckpt = tmp_path / "light.safetensors"
    save_file({k: v.contiguous() for k, v in swinir_light(2).state_dict().items()}, ckpt)
    model = load_model(ckpt)
    crops = [im[:, :, :16, :16] for im in lr_images[:2]]
    tiles = _tiles(lr_images, 16)
    cfg = CalibConfig(PlacementConfig(policy="2dquant", w_bits=4, a_bits=4, bias_correction=True), data="Set5 LR 16x16")
    recipe = calibrate(model.module, cfg, crops, ModelInfo.of(model))
    results = {}
    for beta, r in ((False, _drop_beta(recipe)), (True, recipe)):
        path = export_quantized(model, r, "ort", (16, 16), tmp_path / f"swinir_{beta}.onnx")
        fake = load_model(ckpt)
        apply_recipe(fake.module, r)
        results[beta] = _parity(fake.module, path, tiles)
    shifted = {s.name for s in recipe.sites if s.beta is not None}
    assert any(n.endswith(".qkv.q.input_q") for n in shifted) and any(n.endswith(".matmul_qk.input_a") for n in shifted)
    assert results[True][0] >= results[False][0] - 1.0 and results[True][1] <= results[False][1] + 1e-4, results
    assert_swinir_integer_kernels(recipe, path)
    trt = export_quantized(model, recipe, "trt", (16, 16), tmp_path / "swinir_trt.onnx")
    assert lint_model(onnx.load(trt), "trt") == []  # the shift terms and symmetric grids pass TensorRT's rules


def test_swinir_beta_on_layer_inputs_only_adds_one_sub_per_shifted_input(shared_data, lr_images, tmp_path):
    """``beta_sites="layers"`` (``srq run``'s default): the optimized engine is the no-beta engine plus one
    ``Sub`` per shifted Linear input (the fold ``W @ beta`` lives in the int32 bias), with no attention shift
    terms. The one other change: ``A @ V`` feeds proj's shifted input, so its output is float
    (``MatMulIntegerToFloat``) and requantized after the ``Sub`` instead of inside ``QLinearMatMul``. It
    reproduces its calibrated model as closely as the no-beta export does."""
    torch.manual_seed(0)
    ckpt = tmp_path / "light.safetensors"
    save_file({k: v.contiguous() for k, v in swinir_light(2).state_dict().items()}, ckpt)
    model = load_model(ckpt)
    cfg = CalibConfig(PlacementConfig(policy="2dquant", w_bits=4, a_bits=4, qkv="fused", bias_correction=True,
                                      beta_sites="layers"), data="Set5 LR 16x16")
    recipe = calibrate(model.module, cfg, [im[:, :, :16, :16] for im in lr_images[:2]], ModelInfo.of(model))
    shifted = [s.name for s in recipe.sites if s.beta is not None]
    assert shifted and all(s.op == "linear" for s in recipe.sites if s.beta is not None)
    tiles = _tiles(lr_images, 16)
    counts, results = {}, {}
    for beta, r in ((False, _drop_beta(recipe)), (True, recipe)):
        path = export_quantized(model, r, "ort", (16, 16), tmp_path / f"swinir_{beta}.onnx")
        counts[beta] = optimized_op_counts(path)
        fake = load_model(ckpt)
        apply_recipe(fake.module, r)
        results[beta] = _parity(fake.module, path, tiles)
    extra, missing = counts[True] - counts[False], counts[False] - counts[True]
    proj = sum(n.endswith(".attn.proj.input_q") for n in shifted)
    assert proj == 24 and extra == {"Sub": len(shifted), "MatMulIntegerToFloat": proj, "QuantizeLinear": proj}, extra
    assert missing == {"QLinearMatMul": proj}, missing
    assert results[True][0] >= results[False][0] - 1.0 and results[True][1] <= results[False][1] + 1e-4, results
