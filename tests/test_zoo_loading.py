"""Every shared pretrained checkpoint is detected and loaded through spandrel; outputs match published numbers."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from srq.imaging.datasets import modcrop
from srq.imaging.io import read_image, to_uint8
from srq.imaging.metrics import psnr_y
from srq.imaging.resize import imresize
from srq.zoo import load_model, upscale_image
from srq.zoo.catalog import arch_info

pytestmark = pytest.mark.shared_data

# file, requested scale, arch, scale, in_channels, parameter count (README of shared data)
CHECKPOINTS = [
    ("IMDN/IMDN_x2.pth", None, "IMDN", 2, 3, 694_404),
    ("IMDN/IMDN_x3.pth", None, "IMDN", 3, 3, 703_059),
    ("IMDN/IMDN_x4.pth", None, "IMDN", 4, 3, 715_176),
    ("PAN/PANx2_DF2K.pth", None, "PAN", 2, 3, 261_403),
    ("PAN/PANx3_DF2K.pth", None, "PAN", 3, 3, 261_403),
    ("PAN/PANx4_DF2K.pth", None, "PAN", 4, 3, 272_419),
    ("RFDN/RFDN_AIM.pth", None, "RFDN", 4, 3, 433_448),
    ("CARN/carn_m.pth", 2, "CARN-M", 2, 3, 414_811),
    ("CARN/carn_m.pth", 3, "CARN-M", 3, 3, 414_811),
    ("CARN/carn_m.pth", 4, "CARN-M", 4, 3, 414_811),
    ("FSRCNN/fsrcnn_x2.pth", None, "FSRCNN", 2, 1, 12_809),
    ("FSRCNN/fsrcnn_x3.pth", None, "FSRCNN", 3, 1, 12_809),
    ("FSRCNN/fsrcnn_x4.pth", None, "FSRCNN", 4, 1, 12_809),
]


def _lr_crop(shared_data, scale: int, size: int = 24) -> np.ndarray:
    lr = read_image(shared_data / f"benchmarks/Set14/LR_bicubic/X{scale}/baboonx{scale}.png").rgb()
    return lr[:size, :size]


@pytest.mark.parametrize(("rel", "scale", "arch", "want_scale", "channels", "params"), CHECKPOINTS,
                         ids=[f"{c[0]}-x{c[3]}" for c in CHECKPOINTS])
def test_checkpoint_loads(shared_data, rel, scale, arch, want_scale, channels, params):
    model = load_model(shared_data / "weights" / rel, scale)
    assert (model.arch, model.scale, model.in_channels, model.size_multiple) == (arch, want_scale, channels, 1)
    assert sum(p.numel() for p in model.module.parameters()) == params
    assert not model.module.training and all(p.dtype == torch.float32 for p in model.module.parameters())
    assert re.fullmatch(r"[0-9a-f]{64}", model.fingerprint)
    info = arch_info(arch)
    assert want_scale in info.scales and info.in_channels == channels and info.size_multiple == 1
    sr = upscale_image(model, _lr_crop(shared_data, want_scale))
    assert sr.shape == (24 * want_scale, 24 * want_scale, 3) and sr.dtype == np.float32
    assert 0.0 <= sr.min() and sr.max() <= 1.0


def test_fingerprint_is_stable_and_distinguishes_weights(shared_data):
    a = load_model(shared_data / "weights/IMDN/IMDN_x2.pth")
    b = load_model(shared_data / "weights/IMDN/IMDN_x2.pth")
    c = load_model(shared_data / "weights/IMDN/IMDN_x3.pth")
    assert a.fingerprint == b.fingerprint != c.fingerprint


@pytest.mark.slow
def test_pan_x4_reproduces_the_authors_log_on_baby(shared_data):
    # PAN/reference_logs/test_PANx4_DF2Ktrain_200912-232209.log: baby PSNR_Y 33.776143 dB
    model = load_model(shared_data / "weights/PAN/PANx4_DF2K.pth")
    hr = modcrop(to_uint8(read_image(shared_data / "benchmarks/Set5/HR/baby.png").rgb()), 4)
    lr = read_image(shared_data / "benchmarks/Set5/LR_bicubic/X4/babyx4.png").rgb()
    assert psnr_y(to_uint8(upscale_image(model, lr)), hr, 4) == pytest.approx(33.776143, abs=0.01)


@pytest.mark.parametrize(("rel", "scale", "margin_db"), [("RFDN/RFDN_AIM.pth", 4, 1.5), ("FSRCNN/fsrcnn_x3.pth", 3, 1.0)])
def test_model_beats_bicubic_on_bird(shared_data, rel, scale, margin_db):
    """RFDN runs on [0, 255] pixels as released (on [0, 1] it scores below bicubic); FSRCNN's Y path."""
    model = load_model(shared_data / "weights" / rel)
    hr = modcrop(to_uint8(read_image(shared_data / "benchmarks/Set5/HR/bird.png").rgb()), scale)
    lr = read_image(shared_data / f"benchmarks/Set5/LR_bicubic/X{scale}/birdx{scale}.png").rgb()
    bicubic = psnr_y(to_uint8(np.clip(imresize(lr.astype(np.float64), scale), 0, 1)), hr, scale)
    assert psnr_y(to_uint8(upscale_image(model, lr)), hr, scale) > bicubic + margin_db


@pytest.mark.slow
def test_safetensors_fp16_and_containers_load_like_the_original(shared_data, tmp_path):
    original = load_model(shared_data / "weights/PAN/PANx4_DF2K.pth")
    sd = torch.load(shared_data / "weights/PAN/PANx4_DF2K.pth", map_location="cpu", weights_only=True)
    save_file({k: v.half().contiguous() for k, v in sd.items()}, tmp_path / "pan_x4.safetensors")
    torch.save({"params_ema": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "pan_x4_wrapped.pth")
    half = load_model(tmp_path / "pan_x4.safetensors")
    wrapped = load_model(tmp_path / "pan_x4_wrapped.pth")
    assert wrapped.fingerprint == original.fingerprint
    assert all(p.dtype == torch.float32 for p in half.module.parameters())
    lr = _lr_crop(shared_data, 4, 16)
    assert np.abs(upscale_image(half, lr) - upscale_image(original, lr)).max() < 5e-3


def test_imdn_channel_attention_does_not_depend_on_summation_order():
    """With ``set_exact_statistics`` (quantized models) IMDN's CCA statistics (std + mean per channel,
    the input of its first 1x1 conv) are float64 sums rounded once to float32, so any order of the
    pixels gives the same bits: an engine's ReduceMean sums in another order than PyTorch, and a
    float32 difference of a few ulp can move a statistic across a quantization tie
    (docs/export-parity.md)."""
    from srq.zoo import set_exact_statistics
    from srq.zoo.archs.imdn import ContrastChannelAttention

    torch.manual_seed(0)
    cca = ContrastChannelAttention(64).eval()
    assert set_exact_statistics(cca) == 1
    stats = []
    cca.conv_du[0].register_forward_pre_hook(lambda _m, args: stats.append(args[0].flatten()))
    x = torch.rand(1, 64, 64, 64) * 3
    with torch.no_grad():
        for perm in (torch.arange(64 * 64), torch.randperm(64 * 64), torch.arange(64 * 64).flip(0)):
            cca(x.flatten(2)[..., perm].reshape(x.shape))
    assert torch.equal(stats[0], stats[1]) and torch.equal(stats[0], stats[2])


def test_exact_channel_contrast_in_onnx_runtime_is_bit_identical(tmp_path):
    """The exact contrast (quantized models) exported as the FP export traces it runs bit-identically in ONNX
    Runtime, square root included (float32 roots of PyTorch and ORT differ in the last bit; the float64 root
    rounded does not), over 4096 channels of random spreads; the FP contrast is compared too, to show that
    the test can tell (its float32 statistics and root differ on some channels)."""
    import onnxruntime as ort

    from srq.export.fp_onnx import _trace_to_onnx
    from srq.zoo import ChannelContrast, set_exact_statistics

    x = (torch.rand(1, 4096, 16, 16) * torch.rand(1, 4096, 1, 1) * 4).contiguous()
    off = {}
    for exact in (True, False):
        module = ChannelContrast().eval()
        set_exact_statistics(module, exact)
        path = tmp_path / f"contrast_{exact}.onnx"
        _trace_to_onnx(module, x, path)  # the exporter and settings of the quantized export's FP graph
        got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"lr": x.numpy()})[0]
        with torch.no_grad():
            off[exact] = int((got != module(x).numpy()).sum())
    assert off[True] == 0 and off[False] > 0, off
