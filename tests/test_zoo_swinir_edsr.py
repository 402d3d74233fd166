"""SwinIR-light (random init via spandrel, official config) and EDSR built from our own architecture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from spandrel.architectures.SwinIR import SwinIR

from srq.zoo import load_model, upscale_image
from srq.zoo.archs.edsr import EDSR
from srq.zoo.archs.swinir import swinir_light

BUFFERS = ("attn_mask", "relative_position_index")


def swinir_light_x2() -> SwinIR:
    torch.manual_seed(0)
    return swinir_light(2).eval()


def swinir_tiny_x2() -> SwinIR:
    """Same block structure (shifted windows, masks at 64x64), small enough for fast forward passes."""
    torch.manual_seed(0)
    return SwinIR(upscale=2, in_chans=3, img_size=64, window_size=8, img_range=1.0, depths=[2, 2],
                  embed_dim=12, num_heads=[2, 2], mlp_ratio=2, upsampler="pixelshuffledirect",
                  resi_connection="1conv").eval()


@pytest.fixture(scope="module")
def swinir_files(tmp_path_factory):
    sd = {k: v.contiguous() for k, v in swinir_tiny_x2().state_dict().items()}
    folder = tmp_path_factory.mktemp("swinir")
    save_file(sd, folder / "swinir_light_x2.safetensors")
    torch.save({"params": {k: v for k, v in sd.items() if not k.endswith(BUFFERS)}}, folder / "no_buffers.pth")
    return folder / "swinir_light_x2.safetensors", folder / "no_buffers.pth"


def test_swinir_light_loads_with_window_multiple(tmp_path):
    save_file({k: v.contiguous() for k, v in swinir_light_x2().state_dict().items()}, tmp_path / "light.safetensors")
    model = load_model(tmp_path / "light.safetensors")
    assert (model.arch, model.scale, model.in_channels, model.size_multiple) == ("SwinIR", 2, 3, 8)
    assert sum(p.numel() for p in model.module.parameters()) == 910_152


def test_swinir_without_buffers_loads_identically(swinir_files):
    full, stripped = load_model(swinir_files[0]), load_model(swinir_files[1])
    assert full.fingerprint == stripped.fingerprint
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(full.module(x), stripped.module(x))


def test_upscale_pads_to_the_window_and_crops_back(swinir_files):
    model = load_model(swinir_files[0])
    lr = np.random.default_rng(0).random((20, 27, 3), dtype=np.float32)
    sr = upscale_image(model, lr)
    assert sr.shape == (40, 54, 3)
    padded = np.pad(lr, ((0, 4), (0, 5), (0, 0)), mode="reflect")
    with torch.no_grad():
        ref = model.module(torch.from_numpy(padded).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    assert np.abs(sr - np.clip(ref[:40, :54], 0, 1)).max() < 1e-6


@pytest.mark.parametrize(("blocks", "feats", "scale"), [(16, 64, 2), (16, 64, 3), (16, 64, 4), (2, 256, 2)])
def test_edsr_state_dict_round_trip(tmp_path, blocks, feats, scale):
    net = EDSR(n_resblocks=blocks, n_feats=feats, scale=scale, res_scale=0.1 if feats == 256 else 1.0)
    sd = net.state_dict()
    assert {"sub_mean.weight", "sub_mean.bias", "add_mean.weight", "head.0.weight", "body.0.body.2.weight",
            f"body.{blocks}.weight", "tail.0.0.weight", "tail.1.weight"} <= set(sd)
    torch.save(sd, tmp_path / "edsr.pt")
    model = load_model(tmp_path / "edsr.pt")
    assert (model.arch, model.scale, model.in_channels) == ("EDSR", scale, 3)
    assert model.module.rgb_range == 255.0 and model.module.body[0].res_scale == net.body[0].res_scale
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        assert torch.allclose(model.module(x), net.eval()(x))
