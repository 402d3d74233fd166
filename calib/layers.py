"""Quantized drop-in layers: Linear, Conv2d, batched MatMul, and SwinIR's window attention.

Each quantized layer owns its quantizers as child modules named by role (``weight_q``,
``input_q``; ``input_a``/``input_b`` for a MatMul), so a site's name is its module path.

Bias handling follows ONNX Runtime's integer kernels: when input and weight are both
quantized, the float bias is quantized to int32 at scale ``s_x * s_w`` (float32 product,
zero point 0, round half to even, saturated to int32), per output channel with per-channel
weights (``simulate_int32_bias``, on by default).

Bias correction on an input (``Q_beta(x) = Q(x - beta) + beta``): the kernel consumes
``Q(x - beta)`` and the ``W @ beta`` term, a per-output-channel constant, joins the bias before the
int32 rounding (exact fold). A zero-padded Conv2d pads first (explicit zeros; the shift and the
quantizer see the padded tensor; then an unpadded conv), so its border also reads
``Q(0 - beta) + beta`` and the fold stays per channel: the export writes the same
``Pad -> Sub(beta) -> Q -> DQ -> Conv(pads 0)``, which ONNX Runtime still fuses into QLinearConv.

Conv output quantizer (``QuantConv2d.output``, optional): ONNX Runtime runs a quantized Conv as
an integer ``QLinearConv`` only when its output carries a QuantizeLinear, and that kernel
requantizes its int32 accumulator at the output scale (``docs/export-ort-fusion.md``). The
quantizer is applied to ``conv(x) + bias`` before any following activation, in every
mode (so the observation pass sees the conv's FP output). Linear layers need none: export keeps
their bias as DQ(int32) and ORT's QGemm then has a float output, which ``simulate_int32_bias``
already matches.

Integer-exact QLinearConv (``requantize``): when input, weight and output quantizers all quantize
and the bias is simulated as int32, the forward value is what ORT's
QLinearConv computes (onnxruntime ``qlinearconv.cc`` + MLAS ``MlasRequantizeOutput``, CPU):

* the accumulator ``sum (q_x - zp_x)(q_w - zp_w)`` exactly (integer; zero padding is the input
  zero point, i.e. level 0) plus the int32 bias -- computed here as a conv of the integer levels,
  in float32 on CPU when ``max|x level| * max_c sum|w level|`` is below 2^24 (every partial sum is
  then an exact float32 integer, whatever the summation order), in float64 otherwise (exact below
  2^53), rounded to integers either way;
* converted to float32 (round to nearest even, as ``cvtdq2ps``), multiplied by the float32
  ``(s_x * s_w[c]) / s_y`` (ORT's ``ComputeOutputScale``, that evaluation order), clamped to
  ``[qmin - zp_y, qmax - zp_y]``, rounded half to even; then dequantized ``(q - zp_y) * s_y``.

Integer conv with a float output (``integer_float_output``): a quantized Conv2d without output
quantizer whose weight levels fit int8 (the first conv under ``first_conv_bits``) runs in ONNX
Runtime as ``ConvInteger`` (exact int32 accumulator) ``-> Add(int32 bias) -> Cast -> Mul(s_x * s_w)``,
and here as the same accumulator converted to float32 and multiplied by the same float32
``s_x * s_w``: two IEEE roundings in both, so the float output is bit-identical too.

A float32 conv of dequantized values instead differs by a few ulp of the accumulator, which
crosses an output rounding boundary on ~1e-4 of the values per conv; those 1-LSB flips cascade
through deep CNNs (IMDN: 54 dB engine parity at W8A8 before, see ``docs/export-parity.md``).
Gradients are unchanged: the exact value is the forward, the float path's straight-through
gradients the backward (``exact.detach() + (y - y.detach())``); without autograd only the
exact path runs. The fused integer ops ORT builds around the conv use the same float32
arithmetic as the fake quantizers (QLinearLeakyRelu's 256-entry table is
``Q(leaky(DQ(q)))``, QuantizeLinear divides by the scale), so they need no emulation; the one
exception is ``QLinearMul`` (integer gates: an arch's ``Gate`` product of a conv output and a
requantized sigmoid gate, read by one layer), which rescales by ``s_a s_b / s_c`` in one step and is
reproduced by ``WeightedQuantLayer._qlinear_mul`` (``srq.calib.quantizer.qlinear_mul_levels``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srq.calib.quantizer import (FakeQuantizer, integer_conv_with_float_output, level_table, qlinear_add_levels,
                                 qlinear_mul_levels)
from srq.zoo.archs.common import contrast

_INT32_MAX = 2**31 - 1
GRID_TAG = "srq_grid"  # attribute naming the output quantizer on a requantized conv (or gate) output tensor
PRODUCT_TAG = "srq_product"  # attribute holding the operands of a QuantGate product of two grids
_FLOAT32_EXACT = 2.0**24  # integers up to this are exact in float32


def int32_bias_levels(bias: Tensor, scale_x: Tensor, scale_w: Tensor) -> Tensor:
    """``round_half_even(bias / (scale_x * scale_w))`` saturated to int32 (integer-valued float32, no grad)."""
    step = (scale_x * scale_w).detach()
    return torch.clamp(torch.round(bias.detach() / step), -_INT32_MAX - 1, _INT32_MAX)


def int32_bias(bias: Tensor, scale_x: Tensor, scale_w: Tensor) -> Tensor:
    """``bias`` rounded to the int32 grid of step ``scale_x * scale_w`` (straight-through to ``bias``)."""
    q = int32_bias_levels(bias, scale_x, scale_w) * (scale_x * scale_w).detach()
    return q + (bias - bias.detach())


def requantize(acc: Tensor, multiplier: Tensor, qmin_level: Tensor, qmax_level: Tensor) -> Tensor:
    """MLAS requantization of an int32 accumulator (bias included) to output levels ``q - zp``.

    ``acc``: integer-valued float64; ``multiplier``: float32 ``(s_x * s_w) / s_y`` broadcast against
    ``acc``; ``qmin_level`` / ``qmax_level``: ``qmin - zp``, ``qmax - zp``. Returns float32
    ``round_half_even(clamp(float32(acc) * multiplier))``.
    """
    return acc.to(torch.float32).mul_(multiplier).clamp_(qmin_level, qmax_level).round_()


class WeightedQuantLayer(nn.Module):
    """Shared logic of quantized Linear / Conv2d: weight and input quantizers and the bias rule."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def __init__(self, weight_q: FakeQuantizer, input_q: FakeQuantizer, simulate_int32_bias: bool) -> None:
        super().__init__()
        self.weight_q = weight_q
        self.input_q = input_q
        self.simulate_int32_bias = simulate_int32_bias
        self.output: FakeQuantizer | None = None  # conv output quantizer (QuantConv2d only)

    def _output(self, y: Tensor) -> Tensor:
        return y if self.output is None else self.output(y)

    def _apply_op(self, x: Tensor, w: Tensor, b: Tensor | None, padded: bool = False) -> Tensor:
        """The layer's op; ``padded``: ``x`` already carries the layer's zero padding."""
        raise NotImplementedError

    def _pad(self, x: Tensor) -> Tensor:
        """``x`` with the layer's zero padding applied explicitly (identity for unpadded layers)."""
        return x

    def _beta_fold(self, w: Tensor) -> Tensor:
        """``W @ beta`` per output channel (the shift's contribution, folded into the bias)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        y = self._forward(x)  # on the output grid when requantized: TableSigmoid may look it up
        return y if self.output is None else _on_grid(self.output, y)

    def _forward(self, x: Tensor) -> Tensor:
        w = self.weight_q(self.weight)
        if not self.input_q.quantizing:
            return self._output(self._apply_op(self.input_q(x), w, self.bias))
        shifted = self.input_q.beta is not None
        if shifted:
            x = self._pad(x)
        xq = self.input_q.quantize_shifted(x)
        product = None if shifted else gate_product(x)
        if product is not None:  # ORT fuses Mul -> QuantizeLinear into QLinearMul: its arithmetic, exactly
            exact_x = self._qlinear_mul(*product)
            xq = exact_x if not torch.is_grad_enabled() else exact_x + (xq - xq.detach())
        bias = self.bias
        if shifted:
            fold = self._beta_fold(w)
            bias = fold if bias is None else bias + fold
        exact = None
        if ((self._requantized() or self.integer_float_output()) and self.weight_q.quantizing
                and (bias is None or self.simulate_int32_bias)):
            exact = self._integer_output(xq, w, bias, shifted)
            if not torch.is_grad_enabled():
                return exact
        if bias is not None and self.simulate_int32_bias and self.weight_q.quantizing:
            bias = int32_bias(bias, self.input_q.qparams()[0], self.weight_q.qparams()[0])
        y = self._output(self._apply_op(xq, w, bias, shifted))
        return y if exact is None else exact + (y - y.detach())

    def _requantized(self) -> bool:
        return self.output is not None and self.output.quantizing

    def _qlinear_mul(self, a: Tensor, grid_a: FakeQuantizer, b: Tensor, grid_b: FakeQuantizer) -> Tensor:
        """This layer's quantized input when it is ``a * b`` read through ORT's ``QLinearMul`` (``a``, ``b``
        on the per-tensor grids of their output quantizers); dequantized float32, no gradient."""
        with torch.no_grad(), torch.autocast(a.device.type, enabled=False):
            s_a, _ = grid_a.qparams()
            s_b, _ = grid_b.qparams()
            s_c, zp_c = self.input_q.qparams()
            fmt = self.input_q.fmt
            levels = qlinear_mul_levels(torch.round(a / s_a), torch.round(b / s_b), s_a, s_b, s_c, zp_c,
                                        fmt.qmin, fmt.qmax)
            return levels.mul_(s_c)

    def integer_float_output(self) -> bool:
        """Does the engine run this layer as an integer kernel with a float output that
        ``_integer_output`` reproduces? (``QuantConv2d`` only.)"""
        return False

    def _integer_output(self, xq: Tensor, w: Tensor, bias: Tensor | None, padded: bool) -> Tensor:
        """What ONNX Runtime's QLinearConv outputs (dequantized), or without output quantizer what
        ``ConvInteger -> Add(int32 bias) -> Cast -> Mul(s_x * s_w)`` outputs, from the fake-quantized
        ``xq`` and ``w``; ``bias`` before int32 rounding (see the module docstring). No gradient."""
        with torch.no_grad(), torch.autocast(xq.device.type, enabled=False):
            s_x, zp_x = self.input_q.qparams()
            s_w, _ = self.weight_q.qparams()
            channel = [-1] + [1] * (xq.ndim - 2)  # per-channel values broadcast along the output channels
            x_levels = torch.round(xq / s_x)  # q - zp, exact for |level| < 2^22
            w_levels = torch.round(w / (s_w.reshape(-1, *([1] * (w.ndim - 1))) if s_w.ndim else s_w))
            fmt_x = self.input_q.fmt
            x_max = max(float(zp_x) - fmt_x.qmin, fmt_x.qmax - float(zp_x))
            # float32 is exact when every partial sum is an integer below 2^24 (CPU: no TF32); else float64
            if xq.device.type != "cpu" or x_max * float(w_levels.abs().flatten(1).sum(1).max()) >= _FLOAT32_EXACT:
                x_levels, w_levels = x_levels.double(), w_levels.double()
            acc = self._apply_op(x_levels, w_levels, None, padded).round_()
            if bias is not None:  # float32: one rounding of the exact int sum, as ORT's int32 add + cvtdq2ps
                acc += int32_bias_levels(bias, s_x, s_w).to(acc.dtype).reshape(channel)
            if self.output is None:  # Cast (round to nearest even), then one float32 multiply
                step = s_x * s_w
                return acc.to(torch.float32).mul_(step.reshape(channel) if step.ndim else step)
            s_y, zp_y = self.output.qparams()
            mult = (s_x * s_w) / s_y
            fmt = self.output.fmt
            return requantize(acc, mult.reshape(channel) if mult.ndim else mult, fmt.qmin - zp_y,
                              fmt.qmax - zp_y).mul_(s_y)


class QuantLinear(WeightedQuantLayer):
    """``nn.Linear`` with per-output-channel weight quantizer (axis 0) and per-tensor input quantizer."""

    def __init__(self, linear: nn.Linear, weight_q: FakeQuantizer, input_q: FakeQuantizer,
                 simulate_int32_bias: bool = True) -> None:
        super().__init__(weight_q, input_q, simulate_int32_bias)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias

    def _apply_op(self, x: Tensor, w: Tensor, b: Tensor | None, padded: bool = False) -> Tensor:
        return F.linear(x, w, b)

    def _beta_fold(self, w: Tensor) -> Tensor:
        return w @ self.input_q.beta.expand(w.shape[1])


class QuantConv2d(WeightedQuantLayer):
    """``nn.Conv2d`` (same stride/padding/dilation/groups) with weight, input and optional output quantizers."""

    def __init__(self, conv: nn.Conv2d, weight_q: FakeQuantizer, input_q: FakeQuantizer,
                 simulate_int32_bias: bool = True, output: FakeQuantizer | None = None) -> None:
        super().__init__(weight_q, input_q, simulate_int32_bias)
        self.output = output
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"QuantConv2d supports explicit zero padding only, got {conv.padding_mode}/{conv.padding}")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.weight = conv.weight
        self.bias = conv.bias

    def _apply_op(self, x: Tensor, w: Tensor, b: Tensor | None, padded: bool = False) -> Tensor:
        return F.conv2d(x, w, b, self.stride, 0 if padded else self.padding, self.dilation, self.groups)

    def _pad(self, x: Tensor) -> Tensor:
        ph, pw = self.padding
        return F.pad(x, (pw, pw, ph, ph)) if ph or pw else x

    def integer_float_output(self) -> bool:
        """Does the engine run this layer as ``ConvInteger`` with a float output
        (``srq.calib.quantizer.integer_conv_with_float_output``)?"""
        return integer_conv_with_float_output(self.weight_q.fmt, self.input_q.fmt,
                                              None if self.output is None else self.output.fmt)

    def _beta_fold(self, w: Tensor) -> Tensor:
        return w.sum(dim=(2, 3)) @ self.input_q.beta.expand(w.shape[1])


def tagged(x: Tensor, tag: str):
    """The value of ``tag`` on ``x`` if set since ``x``'s last in-place change, else None."""
    value = getattr(x, tag, None)
    return None if value is None or value[-1] != x._version else value[:-1]


def _on_grid(output: FakeQuantizer, y: Tensor) -> Tensor:
    """``y``, a value of ``output``'s grid, tagged with it (``GRID_TAG``) while ``output`` quantizes."""
    if output.quantizing:
        setattr(y, GRID_TAG, (output, y._version))  # an in-place op later bumps _version
    return y


class TableSigmoid(nn.Module):
    """``nn.Sigmoid`` that reads a requantized conv output through a table of its levels.

    On a tensor tagged by ``QuantConv2d`` (its output quantizer quantizing, not modified in
    place since), the forward is ``level_table(sigmoid)[q - qmin]``, which the export writes as
    ``Gather`` on the integer output of the conv's QuantizeLinear: the engine then uses these
    very float32 values instead of its own sigmoid (MLAS's rational approximation differs from
    PyTorch's by an ulp, and the product with the gated features feeds a quantizer, where an ulp
    can flip a level). The gradient is sigmoid's. Any other input: plain sigmoid.

    ``output`` (integer gates): the gate's own quantizer (site ``<path>.output``, searched and
    trained like any activation site). On a tagged input the table is then quantized by it (the
    dequantized ``srq.calib.quantizer.table_levels``), and the output is tagged in turn (``GRID_TAG``); the
    export writes ``DQ -> Sigmoid -> Q -> DQ`` (ORT's ``QLinearSigmoid``, checked against this table)
    or a uint8 ``Gather``. On any other input the quantizer stays unused (it only observes), as the
    export leaves such a sigmoid float.
    """

    def __init__(self, output: FakeQuantizer | None = None) -> None:
        super().__init__()
        self.output = output

    def forward(self, x: Tensor) -> Tensor:
        grid = tagged(x, GRID_TAG)
        if grid is None or not grid[0].quantizing:
            y = torch.sigmoid(x)
            return y if self.output is None or self.output.quantizing else self.output(y)
        gate = self.output is not None and self.output.quantizing
        with torch.no_grad():
            s, zp = grid[0].qparams()
            fmt = grid[0].fmt
            index = (torch.round(x / s) + zp - fmt.qmin).long()
            table = level_table(torch.sigmoid, s, zp, fmt.qmin, fmt.qmax)
            exact = (self.output.quantize_shifted(table) if gate else table)[index]
        if torch.is_grad_enabled():
            y = torch.sigmoid(x)
            if gate:
                y = self.output(y)
            exact = exact + (y - y.detach())
        return _on_grid(self.output, exact) if gate else exact


class QuantGate(nn.Module):
    """``x * gate`` (``srq.zoo.archs.common.Gate``) of two requantized tensors (a conv output and an integer
    gate), as ONNX Runtime's ``QLinearMul`` computes it.

    Without ``output``: tags the product with its operands (``PRODUCT_TAG``), so that the one quantized
    layer reading it computes the kernel onto its input grid (``WeightedQuantLayer._qlinear_mul``); the
    arch's ``Gate`` promises that one layer, and nothing else, reads the product. With ``output`` (a
    ``Gate(requantized=True)``, site ``<gate path>.output``, op ``"mul"``): the product is requantized by
    it, as the kernel does (``srq.calib.quantizer.qlinear_mul_levels``; straight-through gradient of the
    fake-quantized product), and tagged with it (``GRID_TAG``). Any other operands: a float product (and
    the output quantizer)."""

    def __init__(self, output: FakeQuantizer | None = None) -> None:
        super().__init__()
        self.output = output

    def forward(self, x: Tensor, gate: Tensor) -> Tensor:
        y = x * gate
        if self.output is not None:
            return _requantized(self.output, y, x, gate, _mul_levels)
        grid_x, grid_gate = tagged(x, GRID_TAG), tagged(gate, GRID_TAG)
        if grid_x is not None and grid_gate is not None and grid_x[0].quantizing and grid_gate[0].quantizing:
            setattr(y, PRODUCT_TAG, (x, grid_x[0], gate, grid_gate[0], x._version, gate._version, y._version))
        return y


def _mul_levels(a, b, s_a, _zp_a, s_b, _zp_b, s_c, zp_c, qmin, qmax) -> Tensor:
    """``qlinear_mul_levels`` in ``_requantized``'s argument order (QLinearMul ignores the input zero points)."""
    return qlinear_mul_levels(a, b, s_a, s_b, s_c, zp_c, qmin, qmax)


def _requantized(output: FakeQuantizer, y: Tensor, a: Tensor, b: Tensor, levels) -> Tensor:
    """``output(y)`` for ``y`` a binary op of ``a`` and ``b``, tagged with ``output`` (``GRID_TAG``).

    When both operands are on grids (tagged, quantizing), ONNX Runtime fuses ``DQ, DQ -> op -> Q`` into
    one kernel whose float32 arithmetic differs from dequantize-op-quantize in the last bit; the value is
    then that kernel's: ``levels(l_a, l_b, s_a, zp_a, s_b, zp_b, s_y, zp_y, qmin, qmax) * s_y`` with
    ``l = round(x / s) = q - zp`` (``srq.calib.quantizer.qlinear_add_levels``, or ``_mul_levels``), with the
    fake-quantized result's straight-through gradient."""
    yq = output(y)
    if not output.quantizing:
        return yq
    grid_a, grid_b = tagged(a, GRID_TAG), tagged(b, GRID_TAG)
    if grid_a is not None and grid_b is not None and grid_a[0].quantizing and grid_b[0].quantizing:
        with torch.no_grad(), torch.autocast(a.device.type, enabled=False):
            (s_a, zp_a), (s_b, zp_b) = grid_a[0].qparams(), grid_b[0].qparams()
            s_y, zp_y = output.qparams()
            exact = levels(torch.round(a / s_a), torch.round(b / s_b), s_a, zp_a, s_b, zp_b, s_y, zp_y,
                           output.fmt.qmin, output.fmt.qmax).mul_(s_y)
        yq = exact if not torch.is_grad_enabled() else exact + (yq - yq.detach())
    return _on_grid(output, yq)


class QuantResidual(nn.Module):
    """``body + skip`` (``srq.zoo.archs.common.Residual``) requantized by its own site ``output``
    (``<residual path>.output``, op ``"add"``), and tagged with it (``GRID_TAG``).

    When both inputs are on grids (tagged: ``body`` a requantized conv output, ``skip`` the previous
    residual's output), ONNX Runtime fuses ``DQ, DQ -> Add -> Q`` into ``QLinearAdd``, whose arithmetic
    differs from dequantize-add-quantize in the last float32 bit; the forward is then that kernel's
    output (``srq.calib.quantizer.qlinear_add_levels``) with the fake-quantized sum's straight-through
    gradient. Otherwise (``skip`` a float tensor, e.g. the first conv's output) the engine adds in float
    and quantizes, which is the fake quantizer itself.
    """

    def __init__(self, output: FakeQuantizer) -> None:
        super().__init__()
        self.output = output

    def forward(self, body: Tensor, skip: Tensor) -> Tensor:
        return _requantized(self.output, body + skip, body, skip, qlinear_add_levels)


class QuantConcat(nn.Module):
    """``torch.cat(parts, dim=1)`` (``srq.zoo.archs.common.Concat``) requantized by its own site ``output``
    (``<concat path>.output``, op ``"concat"``) and tagged with it (``GRID_TAG``).

    No emulation is needed: ONNX Runtime's ``QLinearConcat`` maps a part on another grid through the table
    ``Q(DQ(q))`` (the same float32 arithmetic as this fake quantizer on the dequantized part), and the export
    quantizes a float part on the output grid before the Concat (``srq.export.qdq_nodes.requantize_concat_inputs``),
    which gives the levels of quantizing the concatenation once."""

    def __init__(self, output: FakeQuantizer) -> None:
        super().__init__()
        self.output = output

    def forward(self, *parts: Tensor) -> Tensor:
        return _on_grid(self.output, self.output(torch.cat(parts, dim=1)))


def level_contrast(levels: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
    """Per-channel ``std + mean`` of a tensor on a per-tensor grid, from its stored levels, as the engine computes
    it (``srq.export.channel_statistics``): ``(N, C, H, W)`` integer-valued levels ``q`` (zero point included)
    -> ``(N, C, 1, 1)`` float32.

    Sums ``S1 = sum q``, ``S2 = sum q^2`` over ``n = H W`` are exact in float64 (in any order); then, in float64,
    ``m = S1 / n``, ``v = S2 / n - m m``, ``mean = float32((m - zp) s)``, ``var = float32(v (s s))``; then
    ``srq.zoo.archs.common.contrast(mean, var, exact=True)`` (the correctly rounded float32 root). The float
    path sums the dequantized values instead, which float32 has rounded, so the two differ in the last bit
    now and then."""
    q = levels.double().flatten(2)
    n = q.shape[2]
    m = q.sum(2) / n
    v = (q * q).sum(2) / n - m * m
    s, zp = scale.double(), zero_point.double()
    mean, var = ((m - zp) * s).float(), (v * (s * s)).float()
    return contrast(mean[..., None, None], var[..., None, None], exact=True)


class QuantActivation(nn.Module):
    """An activation module (``nn.LeakyReLU``) whose output is requantized by its own site ``output``
    (``<activation path>.output``, op ``"leaky_relu"``) and tagged with it (``GRID_TAG``); the layers that read
    that output (or a channel slice of it, e.g. after IMDN's Split) share the quantizer as their input site.

    No emulation is needed: ONNX Runtime fuses ``DQ -> LeakyRelu -> Q`` into ``QLinearLeakyRelu``, whose
    256-entry table is ``Q(leaky(DQ(q)))`` in the float32 arithmetic of this fake quantizer, and on a float input
    the engine quantizes the float activation, as here."""

    def __init__(self, act: nn.Module, output: FakeQuantizer) -> None:
        super().__init__()
        self.act = act
        self.output = output

    def forward(self, x: Tensor) -> Tensor:
        return _on_grid(self.output, self.output(self.act(x)))


class GridContrast(nn.Module):
    """``srq.zoo.archs.common.ChannelContrast`` that sums integer levels when its input is on a grid.

    On a tensor tagged ``GRID_TAG`` (its quantizer quantizing; e.g. a ``QuantConcat`` output) the forward is
    ``level_contrast`` of its levels, which is what the exported engine computes from the
    uint8 tensor (``srq.export.channel_statistics``), with the float statistics' gradient; any other input:
    the wrapped module (float64 statistics in a quantized model)."""

    def __init__(self, contrast: nn.Module) -> None:
        super().__init__()
        self.contrast = contrast

    def forward(self, x: Tensor) -> Tensor:
        grid = tagged(x, GRID_TAG)
        if grid is None or not grid[0].quantizing:
            return self.contrast(x)
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            s, zp = grid[0].qparams()
            exact = level_contrast(torch.round(x / s) + zp, s, zp)
        if not torch.is_grad_enabled():
            return exact
        y = self.contrast(x)
        return exact + (y - y.detach())


def gate_product(x: Tensor) -> tuple[Tensor, FakeQuantizer, Tensor, FakeQuantizer] | None:
    """``(a, grid_a, b, grid_b)`` when ``x`` is an unchanged ``QuantGate`` product of unchanged operands, else None."""
    product = tagged(x, PRODUCT_TAG)
    if product is None:
        return None
    a, grid_a, b, grid_b, version_a, version_b = product
    return (a, grid_a, b, grid_b) if (a._version, b._version) == (version_a, version_b) else None


class QuantMatMul(nn.Module):
    """Batched ``a @ b`` with per-tensor input quantizers ``input_a`` and ``input_b`` (no bias)."""

    def __init__(self, input_a: FakeQuantizer, input_b: FakeQuantizer) -> None:
        super().__init__()
        self.input_a = input_a
        self.input_b = input_b

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.input_a(a) @ self.input_b(b)


class QuantQKV(nn.Module):
    """SwinIR's fused ``qkv`` Linear split into three ``QuantLinear`` (2DQuant's qkv_separation).

    ``q``, ``k``, ``v`` hold rows ``[0:C]``, ``[C:2C]``, ``[2C:3C]`` of the fused weight (views of
    the original parameter, so the FP model is untouched) and their own input quantizers.
    """

    def __init__(self, q: QuantLinear, k: QuantLinear, v: QuantLinear) -> None:
        super().__init__()
        self.q, self.k, self.v = q, k, v

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.q(x), self.k(x), self.v(x)


class QuantWindowAttention(nn.Module):
    """SwinIR ``WindowAttention`` with quantized qkv (a ``QuantQKV``, or one ``QuantLinear`` whose
    ``(B_, N, 3C)`` output is chunked into Q, K, V), proj, ``Q @ K^T`` and ``A @ V``.

    Same computation as spandrel's ``WindowAttention.forward``; takes over the original's
    relative-position table, index buffer and scale. ``matmul_qk.input_a`` sees Q after the
    ``head_dim^-0.5`` scaling, ``matmul_qk.input_b`` K (before the transpose),
    ``matmul_av.input_a`` the post-softmax attention map A, ``matmul_av.input_b`` V.
    """

    def __init__(self, attn: nn.Module, qkv: QuantQKV | QuantLinear, proj: QuantLinear, matmul_qk: QuantMatMul,
                 matmul_av: QuantMatMul) -> None:
        super().__init__()
        self.dim, self.window_size, self.num_heads, self.scale = attn.dim, attn.window_size, attn.num_heads, attn.scale
        self.relative_position_bias_table = attn.relative_position_bias_table
        self.register_buffer("relative_position_index", attn.relative_position_index)
        self.qkv, self.proj = qkv, proj
        self.matmul_qk, self.matmul_av = matmul_qk, matmul_av
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b_, n, c = x.shape
        heads = self.num_heads

        def split(t: Tensor) -> Tensor:  # (B_, N, C) -> (B_, heads, N, C / heads)
            return t.reshape(b_, n, heads, c // heads).permute(0, 2, 1, 3)

        qkv = self.qkv(x)
        q, k, v = (split(t) for t in (qkv if isinstance(qkv, tuple) else qkv.chunk(3, dim=-1)))
        attn = self.matmul_qk(q * self.scale, k.transpose(-2, -1))
        area = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(area, area, -1)
        attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b_ // nw, nw, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, heads, n, n)
        attn = self.softmax(attn)
        x = self.matmul_av(attn, v).transpose(1, 2).reshape(b_, n, c)
        return self.proj(x)
