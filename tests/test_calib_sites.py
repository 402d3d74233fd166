"""Quantizer placement on SwinIR-light (2dquant) and real CNN architectures (body / all), and the layers' math."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from spandrel.architectures.SwinIR.__arch.SwinIR import SwinIR
from torch import nn

from srq.calib.layers import QuantConv2d, QuantLinear, int32_bias
from srq.calib.quantizer import FakeQuantizer, QuantFormat
from srq.calib.sites import PlacementConfig, place_quantizers, set_mode
from srq.errors import SrqError
from srq.zoo.archs.imdn import IMDN
from srq.zoo.archs.pan import PAN


@pytest.fixture(scope="module")
def swinir_light() -> nn.Module:
    torch.manual_seed(0)
    return SwinIR(upscale=2, img_size=64, window_size=8, img_range=1.0, depths=[6, 6, 6, 6], embed_dim=60,
                  num_heads=[6, 6, 6, 6], mlp_ratio=2, upsampler="pixelshuffledirect", resi_connection="1conv").eval()


def test_2dquant_places_16_quantizers_per_block_and_keeps_the_rest_fp(swinir_light):
    model = copy.deepcopy(swinir_light)
    x = torch.rand(1, 3, 16, 16)
    sites = place_quantizers(model, PlacementConfig(policy="2dquant"), x)
    assert len(sites) == 24 * 16
    block = "layers.2.residual_group.blocks.5."
    expected = [f"attn.qkv.{p}.{r}" for p in "qkv" for r in ("weight_q", "input_q")] + [
        "attn.proj.weight_q", "attn.proj.input_q", "attn.matmul_qk.input_a", "attn.matmul_qk.input_b",
        "attn.matmul_av.input_a", "attn.matmul_av.input_b", "mlp.fc1.weight_q", "mlp.fc1.input_q",
        "mlp.fc2.weight_q", "mlp.fc2.input_q"]
    assert [n[len(block):] for n in sites if n.startswith(block)] == expected
    for name in ("conv_first", "patch_embed.norm", "layers.0.conv", "layers.3.conv", "norm", "conv_after_body",
                 "upsample.0", "layers.1.residual_group.blocks.0.norm1"):
        assert not any(isinstance(m, FakeQuantizer) for m in model.get_submodule(name).modules()), name
    assert isinstance(model.get_submodule("conv_first"), nn.Conv2d)
    one_dir = sorted(n.split(".", 5)[-1] for n, q in sites.items() if q.one_direction and n.startswith(block[:-1]))
    assert one_dir == ["attn.matmul_av.input_a", "mlp.fc2.input_q"]
    weights = [q for q in sites.values() if q.kind == "weight"]
    assert len(weights) == 24 * 6 and all(q.axis == 0 and q.lb.shape == (60 if "fc1" not in q.site else 120,)
                                          for q in weights)


def test_quantized_swinir_in_fp_and_observe_modes_computes_the_original_model(swinir_light):
    model = copy.deepcopy(swinir_light)
    x = torch.rand(1, 3, 24, 16)  # not a multiple of the window: exercises padding and the shifted mask
    with torch.no_grad():
        ref = swinir_light(x)
        sites = place_quantizers(model, PlacementConfig(policy="2dquant", one_direction=False), x)
        assert not any(q.one_direction for q in sites.values())
        torch.testing.assert_close(model(x), ref, rtol=0, atol=1e-5)
        set_mode(sites, "observe")
        torch.testing.assert_close(model(x), ref, rtol=0, atol=1e-5)


def test_body_policy_on_imdn_keeps_first_conv_and_upsampler_fp_unless_first_conv_bits():
    torch.manual_seed(0)
    model = IMDN(nf=16, num_modules=2, scale=2).eval()
    sites = place_quantizers(model, PlacementConfig(policy="body", first_conv_bits=8), torch.rand(1, 3, 12, 12))
    layers = sorted({n.rsplit(".", 1)[0] for n in sites})
    blocks = [f"IMDB{i}.{c}" for i in (1, 2) for c in ("c1", "c2", "c3", "c4", "c5", "cca.conv_du.0", "cca.conv_du.2")]
    assert layers == sorted(blocks + ["fea_conv", "c.0", "LR_conv"])
    assert isinstance(model.upsampler[0], nn.Conv2d) and isinstance(model.IMDB1.c1, QuantConv2d)
    assert {q.fmt.bits for n, q in sites.items() if n.startswith("fea_conv.")} == {8}
    assert "fea_conv.output" not in sites and sites["fea_conv.weight_q"].fmt.symmetric  # ConvInteger, float out
    assert model.fea_conv.integer_float_output() and not model.IMDB1.c1.integer_float_output()
    assert sites["IMDB1.c1.weight_q"].fmt.bits == 4 and sites["IMDB1.c1.input_q"].fmt.bits == 4
    model = IMDN(nf=16, num_modules=2, scale=2).eval()
    sites = place_quantizers(model, PlacementConfig(policy="body"), torch.rand(1, 3, 12, 12))
    assert sorted({n.rsplit(".", 1)[0] for n in sites}) == sorted(blocks + ["c.0", "LR_conv"])
    assert isinstance(model.fea_conv, nn.Conv2d)


@pytest.mark.parametrize(("bits", "symmetric_weights"), [(8, True), (4, False)])
def test_float_output_convs_lose_their_output_quantizer_and_stay_integer(bits, symmetric_weights):
    """``float_output`` globs: no ``.output`` site; 8-bit asymmetric weight levels would not fit
    ConvInteger's int8, so they turn symmetric; 4-bit asymmetric ones fit and stay as they are."""
    model = IMDN(nf=16, num_modules=2, scale=2).eval()
    cfg = PlacementConfig(policy="body", w_bits=bits, a_bits=bits, float_output=("LR_conv", "*.c5"))
    sites = place_quantizers(model, cfg, torch.rand(1, 3, 12, 12))
    floats = ["LR_conv", "IMDB1.c5", "IMDB2.c5"]
    assert all(f"{p}.output" not in sites and f"{p}.input_q" in sites for p in floats)
    assert all(sites[f"{p}.weight_q"].fmt.symmetric == symmetric_weights for p in floats)
    assert all(model.get_submodule(p).integer_float_output() for p in floats)
    assert "IMDB1.c4.output" in sites and not sites["IMDB1.c4.weight_q"].fmt.symmetric
    assert not model.IMDB1.c4.integer_float_output()


def test_body_policy_on_pan_keeps_the_hr_side_fp():
    torch.manual_seed(0)
    model = PAN(nf=8, unf=8, nb=2, scale=4).eval()
    sites = place_quantizers(model, PlacementConfig(policy="body"), torch.rand(1, 3, 8, 8))
    layers = {n.rsplit(".", 1)[0] for n in sites}
    assert "trunk_conv" in layers and "SCPA_trunk.1.conv1_a" in layers
    assert not layers & {"conv_first", "upconv1", "att1.sa_conv", "HRconv1", "upconv2", "HRconv2", "conv_last"}


def test_all_policy_and_glob_overrides():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 12, 12)
    model = IMDN(nf=16, num_modules=2, scale=2).eval()
    sites = place_quantizers(model, PlacementConfig(policy="all"), x)
    layers = {n.rsplit(".", 1)[0] for n in sites}
    assert "fea_conv" not in layers and "upsampler.0" not in layers and "LR_conv" in layers
    model = IMDN(nf=16, num_modules=2, scale=2).eval()
    cfg = PlacementConfig(policy="body", exclude=("IMDB1.*",), include=("fea_conv",))
    layers = {n.rsplit(".", 1)[0] for n in place_quantizers(model, cfg, x)}
    assert "fea_conv" in layers and not any(p.startswith("IMDB1.") for p in layers) and "IMDB2.c1" in layers
    with pytest.raises(SrqError, match="already holds quantizers"):
        place_quantizers(model, cfg, x)
    with pytest.raises(SrqError, match="2dquant"):
        place_quantizers(IMDN(nf=16, num_modules=1, scale=2), PlacementConfig(policy="2dquant"), x)


def _quant(kind, bits, lb, ub, beta=None, channels=None, op="linear"):
    q = FakeQuantizer(kind, QuantFormat(bits), op=op, channels=channels, axis=None if channels is None else 0,
                      bias_correction=beta is not None)
    q.set_bounds(torch.as_tensor(lb), torch.as_tensor(ub), None if beta is None else torch.tensor(beta))
    q.mode = "quant"
    return q


def test_int32_bias_rounds_to_the_accumulator_grid():
    # s_x * s_w = 0.1 * 0.02 = 0.002: 0.0031 -> 2 steps (1.55 -> 2), 0.003 -> 2 (1.5, half to even), -0.0071 -> -4
    b = int32_bias(torch.tensor([0.0031, 0.003, -0.0071]), torch.tensor(0.1), torch.tensor(0.02))
    torch.testing.assert_close(b, torch.tensor([0.004, 0.004, -0.008]))


def test_bias_correction_fold_is_exact_for_linear_and_padded_conv():
    # a padded conv pads first, so its border is shifted and quantized too (as the export's Pad -> Sub -> Q)
    torch.manual_seed(0)
    lin = nn.Linear(6, 4)
    ql = QuantLinear(lin, _quant("weight", 4, -0.5 * torch.ones(4), 0.5 * torch.ones(4), channels=4),
                     _quant("activation", 3, -1.0, 1.0, beta=0.4), simulate_int32_bias=False)
    x = torch.randn(5, 6) + 0.4
    ref = F.linear(ql.input_q(x), ql.weight_q(lin.weight), lin.bias)  # Q(x - beta) + beta, then the FP Linear
    torch.testing.assert_close(ql(x), ref, rtol=0, atol=1e-5)
    for padding in (0, 1):
        conv = nn.Conv2d(3, 4, 3, padding=padding)
        qc = QuantConv2d(conv, _quant("weight", 4, -0.3 * torch.ones(4), 0.3 * torch.ones(4), channels=4),
                         _quant("activation", 3, -1.0, 1.0, beta=-0.7, op="conv2d"), simulate_int32_bias=False)
        x = torch.randn(2, 3, 7, 9) - 0.7
        padded = F.pad(x, (padding,) * 4)
        ref = F.conv2d(qc.input_q(padded), qc.weight_q(conv.weight), conv.bias)
        torch.testing.assert_close(qc(x), ref, rtol=0, atol=1e-5)


def test_int32_bias_simulation_is_on_by_default_and_only_when_both_sides_quantize():
    torch.manual_seed(1)
    lin = nn.Linear(6, 4)
    with torch.no_grad():
        lin.bias.copy_(torch.tensor([0.0123, -0.0456, 0.0789, 0.1]))
    wq = _quant("weight", 4, -0.5 * torch.ones(4), 0.5 * torch.ones(4), channels=4)
    xq = _quant("activation", 3, -1.0, 1.0)
    ql = QuantLinear(lin, wq, xq)
    x = torch.randn(3, 6)
    step = xq.qparams()[0] * wq.qparams()[0]  # 2/7 * 1/15 per output channel
    expect = F.linear(xq(x), wq(lin.weight), torch.round(lin.bias / step) * step)
    torch.testing.assert_close(ql(x), expect, rtol=0, atol=1e-6)
    wq.mode = "fp"
    torch.testing.assert_close(ql(x), F.linear(xq(x), lin.weight, lin.bias), rtol=0, atol=1e-6)


def test_float_output_glob_that_matches_no_quantized_conv_is_refused():
    model = IMDN(nf=16, num_modules=2, scale=2).eval()
    with pytest.raises(SrqError, match="LRconv: matches no quantized Conv2d"):
        place_quantizers(model, PlacementConfig(policy="body", float_output=("LRconv",)), torch.rand(1, 3, 12, 12))


def test_fused_qkv_places_12_quantizers_per_block_and_matches_split_at_phase_1(swinir_light):
    """``qkv="fused"``: one qkv Linear with one input quantizer. Phase 1 sees the same data as the split
    layout (no subsampling at this size), so it finds the split layout's bounds: the input bounds of each
    of q / k / v, and the three per-channel weight bounds end to end; the models compute the same."""
    from srq.calib.api import CalibConfig, calibrate
    from srq.calib.recipe import ModelInfo

    torch.manual_seed(1)
    batches = [torch.rand(2, 3, 16, 16)]
    info = ModelInfo("SwinIR", 2, "test")
    models, recipes = {}, {}
    for layout in ("split", "fused"):
        models[layout] = copy.deepcopy(swinir_light)
        cfg = CalibConfig(PlacementConfig(policy="2dquant", qkv=layout), data="rand")
        recipes[layout] = {s.name: s for s in calibrate(models[layout], cfg, batches, info).sites}
    assert len(recipes["split"]) == 24 * 16 and len(recipes["fused"]) == 24 * 12
    qkv = "layers.1.residual_group.blocks.3.attn.qkv"
    assert f"{qkv}.input_q" in recipes["fused"] and f"{qkv}.q.input_q" not in recipes["fused"]
    split, fused = recipes["split"], recipes["fused"]
    for field in ("lb", "ub", "scale", "zero_point"):
        for p in "qkv":
            assert getattr(split[f"{qkv}.{p}.input_q"], field) == getattr(fused[f"{qkv}.input_q"], field), field
        joined = np.concatenate([getattr(split[f"{qkv}.{p}.weight_q"], field) for p in "qkv"])
        np.testing.assert_array_equal(getattr(fused[f"{qkv}.weight_q"], field), joined)
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        torch.testing.assert_close(models["fused"](x), models["split"](x), rtol=0, atol=1e-5)
    with pytest.raises(SrqError, match="qkv layout"):
        PlacementConfig(qkv="merged")


def test_layer_bits_rules_set_weight_and_input_bits_of_matching_layers(swinir_light):
    """Mixed precision: the last matching ``GLOB=wNaM`` rule wins; conv outputs keep ``conv_output_bits``;
    with ``float_output`` the 8-bit asymmetric weights of a matched conv turn symmetric (ConvInteger)."""
    model = IMDN(nf=16, num_modules=2, scale=2).eval()
    cfg = PlacementConfig(policy="body", layer_bits=("IMDB*.c5=w8a8", "IMDB2.c5=w6a8", "LR_conv=w8a8"),
                          float_output=("LR_conv",))
    sites = place_quantizers(model, cfg, torch.rand(1, 3, 12, 12))
    bits = {n: q.fmt.bits for n, q in sites.items()}
    assert (bits["IMDB1.c5.weight_q"], bits["IMDB1.c5.input_q"]) == (8, 8)
    assert (bits["IMDB2.c5.weight_q"], bits["IMDB2.c5.input_q"]) == (6, 8)
    assert (bits["IMDB1.c4.weight_q"], bits["IMDB1.c4.input_q"], bits["IMDB1.c4.output"]) == (4, 4, 8)
    assert bits["IMDB1.c5.output"] == 8 and not sites["IMDB1.c5.weight_q"].fmt.symmetric
    assert bits["LR_conv.weight_q"] == 8 and sites["LR_conv.weight_q"].fmt.symmetric and "LR_conv.output" not in sites
    assert model.LR_conv.integer_float_output()
    swin = copy.deepcopy(swinir_light)
    sites = place_quantizers(swin, PlacementConfig(policy="2dquant", qkv="fused", layer_bits=("layers.0.*=w8a8",)),
                             torch.rand(1, 3, 16, 16))
    first, later = "layers.0.residual_group.blocks.0", "layers.1.residual_group.blocks.0"
    assert {sites[f"{first}.{s}"].fmt.bits for s in ("attn.qkv.weight_q", "attn.matmul_qk.input_a", "mlp.fc2.input_q")} == {8}
    assert {sites[f"{later}.{s}"].fmt.bits for s in ("attn.qkv.weight_q", "attn.matmul_qk.input_a", "mlp.fc2.input_q")} == {4}


def test_symmetric_8bit_weights_apply_to_the_8bit_layers_only():
    model = IMDN(nf=16, num_modules=2, scale=2).eval()
    cfg = PlacementConfig(policy="body", layer_bits=("*.c5=w8a8",), weight_symmetric_8bit=True)
    sites = place_quantizers(model, cfg, torch.rand(1, 3, 12, 12))
    fmt = sites["IMDB1.c5.weight_q"].fmt
    assert (fmt.bits, fmt.symmetric, fmt.qmin, fmt.qmax) == (8, True, -127, 127)
    assert not sites["IMDB1.c4.weight_q"].fmt.symmetric and sites["IMDB1.c4.weight_q"].fmt.bits == 4
    assert not sites["IMDB1.c5.input_q"].fmt.symmetric  # activations keep their asymmetric grid


@pytest.mark.parametrize(("rule", "message"), [("LR_conv=w9a8", "expected GLOB=wNaM"), ("LR_conv", "expected GLOB=wNaM"),
                                               ("LRconv=w8a8", "LRconv=w8a8: matches no quantized layer")])
def test_bad_or_unmatched_layer_bits_rules_are_refused(rule, message):
    model = IMDN(nf=16, num_modules=2, scale=2).eval()
    with pytest.raises(SrqError, match=message):
        place_quantizers(model, PlacementConfig(policy="body", layer_bits=(rule,)), torch.rand(1, 3, 12, 12))


@pytest.mark.parametrize("beta_sites", ["all", "layers"])
def test_beta_sites_layers_keeps_the_shift_off_the_attention_matmul_inputs(swinir_light, beta_sites):
    """``beta_sites="layers"``: beta on the qkv / proj / fc1 inputs only (fc2's input is one-direction in
    both); ``"all"`` (2DQuant+) also shifts Q, K and V, never the post-softmax map."""
    model = copy.deepcopy(swinir_light)
    cfg = PlacementConfig(policy="2dquant", qkv="fused", bias_correction=True, beta_sites=beta_sites)
    shifted = {n for n, q in place_quantizers(model, cfg, torch.rand(1, 3, 16, 16)).items() if q.beta is not None}
    blk = "layers.0.residual_group.blocks.0"
    layers = {f"{blk}.attn.qkv.input_q", f"{blk}.attn.proj.input_q", f"{blk}.mlp.fc1.input_q"}
    matmuls = {f"{blk}.attn.matmul_qk.input_a", f"{blk}.attn.matmul_qk.input_b", f"{blk}.attn.matmul_av.input_b"}
    assert {n for n in shifted if n.startswith(blk + ".")} == (layers | matmuls if beta_sites == "all" else layers)
    assert len(shifted) == 24 * (6 if beta_sites == "all" else 3)
    with pytest.raises(SrqError, match="beta sites 'some'"):
        PlacementConfig(beta_sites="some")
