"""Phase 2 (DQC): the held-out PSNR rises, only bounds / beta move, seeded runs repeat, Ctrl-C keeps the best state."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from srq.calib import CalibConfig, DQCConfig, FakeQuantizer, ModelInfo, PlacementConfig, SearchConfig, apply_recipe
from srq.calib import calibrate, distill
from srq.calib.dqc import feature_layers, feature_loss
from srq.zoo.archs.imdn import IMDN

INFO = ModelInfo("IMDN", 2, "0f" * 32)
DQC = DQCConfig(iterations=4, batch_size=2, patch=8, val_every=2)


@pytest.fixture(scope="module")
def fp_model() -> nn.Module:
    torch.manual_seed(0)
    return IMDN(nf=16, num_modules=1, scale=2).eval()


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    return torch.rand(6, 3, 12, 12, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def phase1(fp_model, crops):
    cfg = CalibConfig(placement=PlacementConfig(w_bits=3, a_bits=3, bias_correction=True),
                      search=SearchConfig(method="minmax"), seed=5)
    return calibrate(fp_model, cfg, [crops], INFO)


def _student(fp_model, recipe) -> nn.Module:
    student = copy.deepcopy(fp_model)
    apply_recipe(student, recipe)
    return student


def _quant_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_feature_layers_are_the_quantized_top_level_blocks(fp_model, phase1):
    assert feature_layers(_student(fp_model, phase1)) == ["IMDB1", "c.0", "LR_conv"]
    assert feature_layers(_student(fp_model, phase1), torch.rand(1, 3, 8, 8)) == ["IMDB1", "c.0", "LR_conv"]


@pytest.mark.shared_data
def test_feature_layers_leave_out_the_hr_stage(shared_data):
    """PAN x4 under policy all: the body blocks and the trunk are features, the HR reconstruction stage is not."""
    from srq.calib.sites import place_quantizers
    from srq.zoo.loader import load_model

    model = load_model(shared_data / "weights/PAN/PANx4_DF2K.pth").module
    place_quantizers(model, PlacementConfig(policy="all", first_conv_bits=8), torch.rand(1, 3, 16, 16))
    everything = feature_layers(model)
    assert {"upconv1", "att1", "HRconv1", "att2", "HRconv2"} <= set(everything)
    lr_only = feature_layers(model, torch.rand(1, 3, 16, 16))
    assert lr_only == [p for p in everything if p.startswith(("conv_first", "SCPA_trunk.", "trunk_conv"))]
    assert "SCPA_trunk.15" in lr_only and "trunk_conv" in lr_only


def test_feature_loss_is_per_sample_normalised():
    a = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    scaled = a * torch.tensor([2.0, 7.0]).reshape(2, 1, 1, 1)  # each sample scaled: normalised features equal
    assert float(feature_loss({"f": a}, {"f": scaled})) == pytest.approx(0.0, abs=1e-12)
    b = a.clone()
    b[1] = 0.0
    b[1, 0, 0, 0] = 1.0
    na = a[1].flatten() / a[1].norm()
    expected = float(((na - torch.nn.functional.one_hot(torch.tensor(0), 48).float()) ** 2).sum()) / 96
    assert float(feature_loss({"f": a}, {"f": b})) == pytest.approx(expected, rel=1e-5)


def test_dqc_raises_validation_psnr_and_moves_only_bounds_and_beta(fp_model, crops, phase1):
    fp_state = _quant_state(fp_model)
    student = _student(fp_model, phase1)
    before = _quant_state(student)
    result = distill(student, fp_model, crops, DQCConfig(iterations=20, batch_size=2, patch=8, val_every=5), seed=0)
    curve = result.loss_curve
    # the training loss of 2-crop batches is too noisy to compare here; the held-out PSNR is what DQC keeps
    assert len(curve) == 20 and all(v > 0 for v in curve)
    assert result.best_psnr > result.val_psnr[0][1] + 0.5 and result.best_iteration > 0
    after = _quant_state(student)
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.rsplit(".", 1)[1] in ("lb", "ub", "beta") for k in moved)
    assert any(k.endswith(".beta") for k in moved) and any(k.endswith(".output.ub") for k in moved)
    assert all(torch.equal(v, _quant_state(fp_model)[k]) for k, v in fp_state.items())  # teacher untouched
    assert not any(p.requires_grad is False for p in fp_model.parameters())  # flags restored


def test_calibrate_with_dqc_is_deterministic_for_a_seed(fp_model, crops):
    cfg = CalibConfig(placement=PlacementConfig(w_bits=3, a_bits=3), search=SearchConfig(method="sorted"),
                      dqc=DQC, seed=2)
    r1, r2 = (calibrate(fp_model, cfg, [crops], INFO) for _ in range(2))
    assert r1.calibration.loss_curve == r2.calibration.loss_curve and r1.calibration.iterations == 4
    assert all(torch.equal(torch.from_numpy(a.lb), torch.from_numpy(b.lb)) and
               torch.equal(torch.from_numpy(a.ub), torch.from_numpy(b.ub)) for a, b in zip(r1.sites, r2.sites))
    other = calibrate(fp_model, CalibConfig(placement=cfg.placement, dqc=DQC, seed=3), [crops], INFO)
    assert other.calibration.loss_curve != r1.calibration.loss_curve
    assert r1.calibration.settings["dqc_result"]["best_psnr_db"] >= r1.calibration.settings["dqc_result"]["val_psnr_db"][0][1]


def test_ctrl_c_stops_training_and_restores_the_best_state(fp_model, crops, phase1):
    student = _student(fp_model, phase1)
    calls = {"n": 0}

    def interrupt(*_):
        calls["n"] += 1
        if calls["n"] == 6:  # 1 validation chunk of teacher outputs, then training batches
            raise KeyboardInterrupt

    handle = fp_model.register_forward_pre_hook(interrupt)
    try:
        result = distill(student, fp_model, crops, DQCConfig(iterations=50, batch_size=2, patch=8, val_every=2))
    finally:
        handle.remove()
    assert result.interrupted and result.iterations_done == 4
    best_it = result.best_iteration
    assert best_it in (0, 2, 4) and result.best_psnr == max(p for _, p in result.val_psnr)
    # the student holds the best state: its validation PSNR is the recorded best
    again = distill(student, fp_model, crops, DQCConfig(iterations=0, batch_size=2, patch=8))
    assert again.best_psnr == pytest.approx(result.best_psnr, abs=1e-9)
    assert all(isinstance(q, FakeQuantizer) and q.mode == "quant" for q in student.modules() if isinstance(q, FakeQuantizer))


def test_a_nan_gradient_skips_the_step_instead_of_corrupting_the_bounds(fp_model, crops, phase1):
    student = _student(fp_model, phase1)
    before = _quant_state(student)
    calls = {"n": 0}

    def poison(grad):  # the first backward pass through the upsampler input yields NaN
        calls["n"] += 1
        return grad * float("nan") if calls["n"] == 1 else grad

    handle = student.LR_conv.register_full_backward_pre_hook(lambda _m, g: (poison(g[0]),))
    result = distill(student, fp_model, crops, DQCConfig(iterations=3, batch_size=2, patch=8, val_every=3), seed=0)
    handle.remove()
    assert result.skipped_steps == 1
    after = _quant_state(student)
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the other steps still trained


def test_imdn_cca_std_is_bit_identical_and_has_a_finite_gradient_on_a_constant_channel():
    from srq.zoo.archs.imdn import ContrastChannelAttention

    torch.manual_seed(0)
    cca = ContrastChannelAttention(16, reduction=4)
    x = torch.rand(2, 16, 6, 6)
    x[0, 3] = 0.25  # a constant channel: std 0
    mean = x.mean(dim=(2, 3), keepdim=True)
    reference = x * cca.conv_du((x - mean).pow(2).mean(dim=(2, 3), keepdim=True).pow(0.5) + mean)
    x.requires_grad_(True)
    y = cca(x)
    assert torch.equal(y.detach(), reference)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
