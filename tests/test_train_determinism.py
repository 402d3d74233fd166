"""benchmarks/train_default_model.py: seeded runs repeat exactly, a resumed run continues exactly, export layout."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from srq.imaging.builtin import open_builtin

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_default_model.py"


@pytest.fixture(scope="module")
def tdm():
    spec = importlib.util.spec_from_file_location("train_default_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture(scope="module")
def train_images():
    calib = open_builtin("calib", 2)
    return [calib[i] for i in range(3)]


@pytest.fixture(autouse=True)
def deterministic_cpu():
    threads, was = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(was)


def tiny_config(tdm):
    return tdm.TrainConfig(steps=6, batch=2, lr_patch=16, lr=1e-3, warmup_steps=2, seed=3)


def test_fresh_runs_match_and_resume_continues_exactly(tdm, train_images, tmp_path):
    cfg = tiny_config(tdm)
    full = tdm.Trainer(cfg, train_images)
    for _ in range(6):
        full.train_step()

    first = tdm.Trainer(cfg, train_images)
    for _ in range(3):
        first.train_step()
    assert first.losses == full.losses[:3]  # a second fresh run repeats bit for bit
    tdm.save_checkpoint(first, tmp_path)

    resumed = tdm.Trainer(cfg, train_images)
    assert tdm.load_checkpoint(resumed, tmp_path)
    assert resumed.step == 3
    for _ in range(3):
        resumed.train_step()
    assert resumed.losses == full.losses
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name

    other_seed = tdm.Trainer(tdm.TrainConfig(**{**cfg.__dict__, "seed": 4}), train_images)
    other_seed.train_step()
    assert other_seed.losses[0] != full.losses[0]


def test_checkpoint_of_another_config_is_refused(tdm, train_images, tmp_path):
    from srq.errors import SrqError

    trainer = tdm.Trainer(tiny_config(tdm), train_images)
    tdm.save_checkpoint(trainer, tmp_path)
    other = tdm.Trainer(tdm.TrainConfig(steps=6, batch=2, lr_patch=16, lr=2e-3, warmup_steps=2, seed=3), train_images)
    with pytest.raises(SrqError, match="use another --work-dir"):
        tdm.load_checkpoint(other, tmp_path)


def test_export_is_fp16_parameters_with_official_swinir_keys(tdm, train_images, tmp_path):
    trainer = tdm.Trainer(tiny_config(tdm), train_images)
    trainer.train_step()
    tdm.save_checkpoint(trainer, tmp_path)
    out = tmp_path / "swinir-light-x2.safetensors"
    tdm.export(tmp_path, out)
    assert out.stat().st_size < 4e6
    with safe_open(out, "pt") as f:
        keys = set(f.keys())
        assert all(f.get_tensor(k).dtype == torch.float16 for k in keys)
    assert keys == {k for k, _ in trainer.model.named_parameters()}
    assert "layers.0.residual_group.blocks.0.attn.relative_position_bias_table" in keys
    assert not any(k.endswith(("attn_mask", "relative_position_index")) for k in keys)

    from srq.zoo import load_model

    model = load_model(out)
    assert (model.arch, model.scale, model.in_channels) == ("SwinIR", 2, 3)
    net = model.module  # detected as SwinIR-light: embed 60, window 8, 4x6 blocks, pixelshuffledirect
    assert (net.embed_dim, net.window_size, net.upsampler) == (60, 8, "pixelshuffledirect")
    assert [len(layer.residual_group.blocks) for layer in net.layers] == [6, 6, 6, 6]
    sd = model.module.state_dict()
    for k, v in trainer.model.named_parameters():
        assert torch.equal(sd[k], v.detach().half().float()), k
