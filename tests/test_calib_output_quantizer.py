"""Conv output quantizer (``<conv>.output``): placement, where it sits, phase-1 bounds, recipe round trip."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from srq.calib import CalibConfig, ModelInfo, PlacementConfig, Recipe, SearchConfig, apply_recipe, calibrate
from srq.calib.layers import QuantConv2d, QuantLinear
from srq.calib.sites import place_at
from srq.errors import SrqError

INFO = ModelInfo("Tiny", 1, "ab" * 32)


class ConvReluLinear(nn.Module):
    """conv -> ReLU -> conv -> (B, HW, C) Linear: a Conv output followed by an activation, and a Linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        y = self.b(torch.relu(self.a(x)))
        return self.fc(y.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(x.shape)


def test_quantized_convs_get_an_8_bit_output_site_and_linears_none():
    model = ConvReluLinear()
    sites = place_at(model, PlacementConfig(w_bits=4, a_bits=4), ["a", "b", "fc"])
    assert set(sites) == {"a.weight_q", "a.input_q", "a.output", "b.weight_q", "b.input_q", "b.output",
                          "fc.weight_q", "fc.input_q"}
    out = sites["a.output"]
    assert (out.kind, out.op, out.axis, out.fmt.bits, out.fmt.symmetric, out.fmt.qmin, out.fmt.qmax) == (
        "activation", "conv2d", None, 8, False, 0, 255)
    assert isinstance(model.a, QuantConv2d) and isinstance(model.fc, QuantLinear) and model.fc.output is None
    sym = place_at(ConvReluLinear(), PlacementConfig(symmetric=True, conv_output_bits=6), ["a"])["a.output"]
    assert (sym.fmt.bits, sym.fmt.qmin, sym.fmt.qmax) == (6, -32, 31)
    assert "a.output" not in place_at(ConvReluLinear(), PlacementConfig(conv_output_bits=None), ["a"])
    with pytest.raises(SrqError, match="bits=9"):
        PlacementConfig(conv_output_bits=9)


def test_bias_correction_never_shifts_an_output_site():
    sites = place_at(ConvReluLinear(), PlacementConfig(bias_correction=True), ["a"])
    assert sites["a.input_q"].beta is not None and sites["a.output"].beta is None


def test_output_is_requantized_after_the_bias_and_before_the_activation():
    model = ConvReluLinear().eval()
    fp = copy.deepcopy(model)
    x = torch.rand(2, 3, 10, 12, generator=torch.Generator().manual_seed(1))
    cfg = CalibConfig(placement=PlacementConfig(w_bits=8, a_bits=8, include=("a",), exclude=("b", "fc")),
                      search=SearchConfig(method="minmax"))
    recipe = calibrate(model, cfg, [x], INFO)
    site = recipe.site("a.output")
    with torch.no_grad():
        fp_out = fp.a(x)  # conv + bias, before the ReLU
    assert float(site.lb) == pytest.approx(float(fp_out.min()), abs=float(site.scale))  # minmax of the FP output
    assert float(site.ub) == pytest.approx(float(fp_out.max()), abs=float(site.scale))
    q = copy.deepcopy(fp)
    apply_recipe(q, recipe)
    seen = {}
    q.a.register_forward_hook(lambda m, a, out: seen.setdefault("y", out))
    with torch.no_grad():
        q(x)
    levels = seen["y"] / float(site.scale) + int(site.zero_point)
    assert torch.allclose(levels, levels.round(), atol=1e-3)  # on the uint8 output grid, negatives included
    assert float(seen["y"].min()) < 0  # the ReLU comes after the quantizer, not before
    assert len(levels.round().unique()) > 50


def test_recipe_round_trip_keeps_output_sites_and_conv_output_bits(tmp_path):
    model = ConvReluLinear().eval()
    x = torch.rand(2, 3, 10, 12, generator=torch.Generator().manual_seed(2))
    cfg = CalibConfig(placement=PlacementConfig(policy="all", conv_output_bits=5), search=SearchConfig())
    recipe = calibrate(model, cfg, [x], INFO)
    assert recipe.site("b.output").bits == 5 and "a.output" not in [s.name for s in recipe.sites]  # a is first: FP
    recipe.save(tmp_path / "r.json")
    loaded = Recipe.load(tmp_path / "r.json")
    assert loaded.placement.conv_output_bits == 5 and loaded.site("b.output").qmax == 31
    outs = []
    for r in (recipe, loaded):
        m = copy.deepcopy(model)
        apply_recipe(m, r)
        with torch.no_grad():
            outs.append(m(x))
    assert torch.equal(*outs)
    m = copy.deepcopy(model)
    sites = apply_recipe(m, loaded)
    sites["b.output"].mode = "fp"
    with torch.no_grad():
        assert not torch.equal(m(x), outs[0])  # the output quantizer is part of the computation


class ConvSigmoidGate(nn.Module):
    """x * sigmoid(conv(x)) through an nn.Sigmoid module (IMDN's CCA / PAN's attention pattern)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(4, 4, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        return x * self.gate(self.conv(x))


def _quantized_gate(**placement) -> tuple[nn.Module, dict]:
    model = ConvSigmoidGate()
    sites = place_at(model, PlacementConfig(w_bits=8, a_bits=8, **placement), ["conv"])
    for q in sites.values():
        q.set_bounds(torch.tensor(-2.0) if q.axis is None else torch.full(q.lb.shape, -1.0),
                     torch.tensor(2.0) if q.axis is None else torch.full(q.lb.shape, 1.0))
        q.mode = "quant"
    return model, sites


def test_sigmoid_on_a_requantized_conv_output_is_a_table_of_its_levels():
    from srq.calib.layers import TableSigmoid
    from srq.calib.quantizer import level_table

    model, sites = _quantized_gate()
    assert isinstance(model.gate, TableSigmoid)
    x = torch.randn(2, 4, 5, 5)
    out_q = sites["conv.output"]
    s, zp = out_q.qparams()
    with torch.no_grad():
        y = model.conv(x)
        gated = model.gate(y)
    table = level_table(torch.sigmoid, s, zp, out_q.fmt.qmin, out_q.fmt.qmax)
    levels = (torch.round(y / s) + zp).long()
    assert torch.equal(gated, table[levels])  # exactly the table entries (what the export's Gather reads)
    torch.testing.assert_close(gated, torch.sigmoid(y), rtol=0, atol=2e-7)
    assert torch.equal(model.gate(y.clone().add_(0.01)), torch.sigmoid(y.clone().add_(0.01)))  # untagged: plain
    y.mul_(0.5)  # in place: off the grid now, the tag no longer applies
    assert torch.equal(model.gate(y), torch.sigmoid(y))
    # gradient: sigmoid's, at the (quantized) input
    y = model.conv(x.clone().requires_grad_())
    y.retain_grad()
    model.gate(y).sum().backward()
    sig = torch.sigmoid(y.detach())
    torch.testing.assert_close(y.grad, sig * (1 - sig))


def test_sigmoid_tables_off_keeps_nn_sigmoid():
    model, _ = _quantized_gate(sigmoid_tables=False)
    assert type(model.gate) is nn.Sigmoid
