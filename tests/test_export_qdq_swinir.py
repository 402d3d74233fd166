"""QDQ export of SwinIR-light x2 (spandrel's official light config, seeded random init): qkv split or
fused, attention MatMuls and MLP Linears as integer kernels, ORT parity with the fake-quant model on Set5 tiles."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file

from srq.calib.api import CalibConfig, calibrate
from srq.calib.recipe import ModelInfo, apply_recipe
from srq.calib.sites import PlacementConfig
from srq.export.qdq_export import export_quantized
from srq.imaging.datasets import open_folder
from srq.zoo.archs.swinir import swinir_light
from srq.zoo.loader import load_model

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]
TILE = (16, 16)  # two 8x8 windows per side: shifted-window masks are exercised


@pytest.mark.parametrize(("bits", "qkv"), [(4, "split"), (4, "fused")])
def test_swinir_light_parity_and_integer_kernels(shared_data, tmp_path, bits, qkv, assert_swinir_integer_kernels):
    torch.manual_seed(0)
    ckpt = tmp_path / "light.safetensors"
    save_file({k: v.contiguous() for k, v in swinir_light(2).state_dict().items()}, ckpt)
    model = load_model(ckpt)
    lrs = [torch.from_numpy(s.lr.astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous()
           for s in open_folder(shared_data / "benchmarks/Set5", 2)]
    cfg = CalibConfig(PlacementConfig(policy="2dquant", w_bits=bits, a_bits=bits, qkv=qkv), data="Set5 LR 16x16")
    recipe = calibrate(model.module, cfg, [im[:, :, :16, :16] for im in lrs[:2]], ModelInfo.of(model))
    path = export_quantized(model, recipe, "ort", TILE, tmp_path / "swinir.onnx")

    fake = load_model(ckpt)
    apply_recipe(fake.module, recipe)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.x64quantprecision", "1")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    diffs = []
    for im in lrs[2:]:
        x = im[:, :, 40:40 + TILE[0], 40:40 + TILE[1]].contiguous()
        with torch.no_grad():
            ref = fake.module(x).clamp(0, 1).numpy()
        diffs.append((np.clip(sess.run(None, {"lr": x.numpy()})[0], 0, 1) - ref).ravel().astype(np.float64))
    d = np.concatenate(diffs)
    mse = float(np.mean(d**2))
    psnr = float("inf") if mse == 0 else 10 * np.log10(1 / mse)
    assert psnr >= 55 and np.mean(np.abs(d) > 1 / 255) <= 1e-3, psnr

    assert_swinir_integer_kernels(recipe, path)
