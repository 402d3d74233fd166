"""Fake quantizer that computes exactly what ONNX QuantizeLinear -> Clip -> DequantizeLinear computes.

Engine arithmetic reproduced (float32 throughout; ONNX Runtime CPU is the reference):

* ``q = clamp(round_half_even(x / s) + zp, qmin, qmax)`` -- QuantizeLinear divides by the
  scale, rounds half to even, adds the integer zero point and saturates to the container
  (uint8 asymmetric, int8 symmetric); for ``b < 8`` an integer ``Clip`` to ``[qmin, qmax]``
  follows (saturation and clip commute, so one clamp is exact).
* ``y = (q - zp) * s`` -- DequantizeLinear.

Integer ranges (``QuantFormat``):

* asymmetric (ORT): ``[0, 2^b - 1]`` in a uint8 container; the bounds first widen to include 0
  (``lb <- min(lb, 0)``, ``ub <- max(ub, 0)``, as ONNX Runtime's and PyTorch's observers do: 0
  must be a level for zero padding, and a single-signed range such as a channel of all-negative
  weights would otherwise lose its far end); ``s = (ub - lb) / (2^b - 1)``;
  ``zp = clamp(round_half_even(-lb / s), 0, 2^b - 1)``. The grid is anchored at the snapped
  lower bound ``-zp * s``.
* symmetric (TensorRT, ``zp = 0``, int8 container): ``s = max(|lb|, |ub|) / (2^(b-1) - 1)``;
  activations use the full range ``[-2^(b-1), 2^(b-1) - 1]`` and weights the narrow range
  ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` -- TensorRT's / ModelOpt's convention (amax / 127 at 8 bits).

Degenerate bounds (``ub - lb`` not above the smallest normal float32 times ``qmax - qmin``,
which includes ``lb == ub`` and constant tensors; or
``max(|lb|, |ub|) == 0`` when symmetric) fall back to ``s = max(|lb|, |ub|) / (2^b - 1)`` (asymmetric) or
``/ (2^(b-1) - 1)`` (symmetric), and to ``s = 1`` when that is 0 too: a constant tensor ``c``
then quantizes to ``c`` itself (up to one float32 rounding) and 0 stays 0.

Gradients (straight-through rounding; 2DQuant's Eq. 2 with the snapped grid). With
``t = x / s + zp`` (continuous) and ``in = [qmin <= t <= qmax]``:

* ``dy/dx = in``;
* ``dy/ds = in * (round(x/s) - x/s) + (1 - in) * (q - zp)`` (rounding residual inside,
  the clipped level outside);
* ``dy/dzp = -(1 - in) * s``;
* ``zp = clamp(round_ste(-lb / s), 0, 2^b - 1)`` passes ``d(-lb/s)`` straight through (zero
  where clamped), and ``s`` carries ``1/(2^b - 1)`` to ``ub`` and ``-1/(2^b - 1)`` to ``lb``
  (nothing to a bound on the wrong side of 0, which the widening replaced by 0).

Composed, inside the range ``dy/dub = (r - x/s)/(2^b - 1) = -dy/dlb`` and above / below it
``dy/dub ~= 1`` / ``dy/dlb ~= 1`` (exactly 1 when ``lb`` sits on the grid), i.e. Eq. 2 with
``l`` replaced by the snapped ``-zp * s``. Symmetric mode routes the scale gradient to the
bound with the larger magnitude. Bias correction (2DQuant+): ``Q_beta(v) = Q(v - beta) + beta``,
``dQ_beta/dbeta = 1 - in``.

Written here rather than taken from torch.ao's ``fake_quantize_per_*_affine``: those take a
float zero point in a non-ONNX form, snap nothing, and give no gradient to bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from srq.errors import SrqError

Kind = Literal["weight", "activation"]
Mode = Literal["fp", "observe", "quant"]
_TINY = torch.finfo(torch.float32).tiny


@dataclass(frozen=True)
class QuantFormat:
    """Integer format of one quantizer: ``bits`` in 2..8, asymmetric (uint8) or symmetric (int8, zp 0)."""

    bits: int
    symmetric: bool = False
    narrow: bool = False  # symmetric only: [-(2^(b-1)-1), 2^(b-1)-1] (TensorRT weights)

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise SrqError(f"bits={self.bits}: must be between 2 and 8")
        if self.narrow and not self.symmetric:
            raise SrqError("narrow range is only defined for symmetric quantization")

    @property
    def qmin(self) -> int:
        if not self.symmetric:
            return 0
        return -(2 ** (self.bits - 1)) + (1 if self.narrow else 0)

    @property
    def qmax(self) -> int:
        return 2**self.bits - 1 if not self.symmetric else 2 ** (self.bits - 1) - 1

    @property
    def levels(self) -> int:
        return self.qmax - self.qmin + 1


def round_ste(t: Tensor) -> Tensor:
    """Round half to even with an identity gradient; the forward value is exactly ``t.round()``."""
    return t.detach().round() + (t - t.detach())


def qparams(lb: Tensor, ub: Tensor, fmt: QuantFormat) -> tuple[Tensor, Tensor]:
    """Snapped ``(scale, zero_point)`` (same shape as the bounds; zero point integer-valued float)."""
    mag = torch.maximum(lb.abs(), ub.abs())
    if fmt.symmetric:
        scale = mag / fmt.qmax
        scale = torch.where(scale > _TINY, scale, torch.ones_like(scale))
        return scale, torch.zeros_like(scale)
    n = fmt.qmax  # 2^b - 1 steps between qmin = 0 and qmax
    lb, ub = torch.clamp(lb, max=0.0), torch.clamp(ub, min=0.0)  # the range includes 0
    width = ub - lb
    fallback = mag / n
    fallback = torch.where(fallback > _TINY, fallback, torch.ones_like(fallback))
    scale = torch.where(width > _TINY * n, width / n, fallback)
    zero_point = torch.clamp(round_ste(-lb / scale), 0, n)
    return scale, zero_point


def snapped_bounds(lb: Tensor, ub: Tensor, fmt: QuantFormat) -> tuple[Tensor, Tensor]:
    """The bounds the engine really applies: ``((qmin - zp) s, (qmax - zp) s)``.

    Same ``(scale, zero_point)`` as ``(lb, ub)`` (symmetric: ``+-qmax s``), so a search can report
    honest bounds: e.g. asymmetric ``[0.5, 2.0]`` at 4 bits is really ``[0, 2.0]`` (0 is always in range).
    """
    scale, zero_point = qparams(lb, ub, fmt)
    if fmt.symmetric:
        return -fmt.qmax * scale, fmt.qmax * scale
    return (fmt.qmin - zero_point) * scale, (fmt.qmax - zero_point) * scale


def fake_quant(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int) -> Tensor:
    """QuantizeLinear -> Clip -> DequantizeLinear of ``x``; scale/zero point broadcast against ``x``.

    Gradients as documented in the module docstring; without autograd it runs in place on one buffer
    (the bound search calls it on ``(K, C, M)`` candidate batches).
    """
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad or zero_point.requires_grad)
    if not needs_grad:
        buf = torch.div(x, scale)
        buf.round_().add_(zero_point).clamp_(qmin, qmax)
        return buf.sub_(zero_point).mul_(scale)
    return _FakeQuantSTE.apply(x, scale, zero_point, qmin, qmax)


class _FakeQuantSTE(torch.autograd.Function):
    """``fake_quant`` with the documented gradients in one fused node: the forward saves the in-range
    mask and the scale gradient ``e = (q - zp) - in * x / s``, so the backward is three masked products
    (autograd through the composed expression took ~3x the elementwise passes on IMDN's DQC step)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int) -> Tensor:
        t = x / scale
        tz = t + zero_point
        inside = (tz >= qmin) & (tz <= qmax)
        del tz
        level = torch.round(t).add_(zero_point).clamp_(qmin, qmax).sub_(zero_point)  # q - zp
        y = level * scale
        ctx.save_for_backward(inside, torch.where(inside, level - t, level) if scale.requires_grad else level,
                              scale)
        ctx.shapes = (x.shape, scale.shape, zero_point.shape)
        return y

    @staticmethod
    def backward(ctx, g: Tensor):
        inside, e, scale = ctx.saved_tensors
        x_shape, s_shape, z_shape = ctx.shapes
        gx = gs = gz = None
        if ctx.needs_input_grad[0]:
            gx = torch.where(inside, g, 0.0).sum_to_size(x_shape)
        if ctx.needs_input_grad[1]:
            gs = (g * e).sum_to_size(s_shape)
        if ctx.needs_input_grad[2]:
            gz = (torch.where(inside, 0.0, g).sum_to_size(z_shape) * -scale).sum_to_size(z_shape)
        return gx, gs, gz, None, None


def integer_conv_with_float_output(weight: QuantFormat, x: QuantFormat, output: QuantFormat | None) -> bool:
    """Does a quantized conv run in ONNX Runtime as ``ConvInteger`` with a float output?

    Yes without an output quantizer, with a uint8 (asymmetric) input and weight levels
    ``q - zp`` that fit int8 (symmetric weights, or <= 7 bits): ConvInteger takes one weight zero
    point, so the export stores the levels as uint8 ``q - zp + 128``. The one rule calib
    (``QuantConv2d``) and the export both follow.
    """
    return output is None and not x.symmetric and (weight.symmetric or weight.bits <= 7)


def level_table(fn, scale: Tensor | float, zero_point: Tensor | int, qmin: int, qmax: int) -> Tensor:
    """``fn`` of every dequantized level of a per-tensor grid: ``fn((q - zp) * s)`` for ``q = qmin..qmax``.

    float32, shape ``(qmax - qmin + 1,)``; entry ``q - qmin``. The levels are formed with
    DequantizeLinear's float32 arithmetic, so a lookup at ``q`` is ``fn`` of exactly the value
    the engine's DQ produces. Calibration and export both build their tables here.
    """
    s = torch.as_tensor(scale, dtype=torch.float32)
    levels = torch.arange(qmin, qmax + 1, dtype=torch.float32) - torch.as_tensor(zero_point, dtype=torch.float32)
    with torch.no_grad():
        return fn(levels * s)


def table_levels(fn, scale: Tensor | float, zero_point: Tensor | int, qmin: int, qmax: int, out_scale: Tensor,
                 out_zero_point: Tensor, out_qmin: int, out_qmax: int) -> Tensor:
    """Output levels of ``DequantizeLinear -> fn -> QuantizeLinear`` for every input level ``q = qmin..qmax``.

    ``clamp(round_half_even(fn((q - zp) s) / s_out) + zp_out, out_qmin, out_qmax)``, float32 arithmetic;
    integer-valued float32, shape ``(qmax - qmin + 1,)``: the levels of ``fake_quant`` applied to
    ``level_table(fn, ...)``, which calibration's integer gates (``srq.calib.layers.TableSigmoid``) read;
    the export writes them (or checks ORT's ``QLinearSigmoid`` against them).
    """
    y = level_table(fn, scale, zero_point, qmin, qmax)
    return torch.round(y / out_scale).add_(out_zero_point).clamp_(out_qmin, out_qmax)


def qlinear_mul_levels(a: Tensor, b: Tensor, scale_a: Tensor, scale_b: Tensor, scale_c: Tensor,
                       zero_point_c: Tensor, qmin: int, qmax: int) -> Tensor:
    """ONNX Runtime's ``QLinearMul`` on x86 (MLAS ``MlasQLinearMulKernel``, SSE2): levels ``q_c - zp_c``.

    ``a``, ``b``: integer-valued float32 levels ``q - zp`` of the two inputs (their product is exact
    in float32 below 2^24); scales float32 scalars. MLAS forms ``ratio = (s_a * s_b) / s_c`` in
    float32, then per element ``round_half_even(float32(a b) * ratio + zp_c)`` (two float32
    roundings, no fused multiply-add), saturated; the clamp to ``[qmin, qmax]`` also covers the
    integer ``Clip`` of a grid below 8 bits.
    """
    ratio = (scale_a * scale_b) / scale_c
    return (a * b).mul_(ratio).add_(zero_point_c).round_().clamp_(qmin, qmax).sub_(zero_point_c)


def _fma32(x: Tensor, y: Tensor, z: Tensor) -> Tensor:
    """float32 ``x * y + z`` with one rounding (a fused multiply-add), for float32 ``y``, ``z`` and ``x``
    an integer of at most 9 bits: the product is exact in float64, and so is the sum while the two
    terms lie within 2^20 of each other in magnitude, as in ``qlinear_add_levels``."""
    return (x.double() * y.double() + z.double()).float()


def qlinear_add_levels(a: Tensor, b: Tensor, scale_a: Tensor, zero_point_a: Tensor, scale_b: Tensor,
                       zero_point_b: Tensor, scale_c: Tensor, zero_point_c: Tensor, qmin: int, qmax: int) -> Tensor:
    """ONNX Runtime's ``QLinearAdd`` on x86 with AVX2 (MLAS ``MlasQLinearAddKernelAvx2Helper``): levels
    ``q_c - zp_c`` of ``a + b``.

    ``a``, ``b``: integer-valued float32 levels ``q - zp`` of input A (the Add's first input) and B; scales
    float32 scalars, zero points integer-valued. MLAS forms ``r_a = s_a / s_c``, ``r_b = s_b / s_c`` and
    ``fixed = zp_c - fma(r_a, zp_a, r_b zp_b)`` in float32, then per element on the stored integers
    ``q = round_half_even(fma(q_a, r_a, fma(q_b, r_b, fixed)))`` (B first), saturated to the container.
    ``tests/test_integer_residuals.py`` checks this against the kernel.
    """
    r_a, r_b = scale_a / scale_c, scale_b / scale_c
    fixed = zero_point_c - _fma32(zero_point_a, r_a, r_b * zero_point_b)
    v = _fma32(a + zero_point_a, r_a, _fma32(b + zero_point_b, r_b, fixed))
    return v.round_().clamp_(qmin, qmax).sub_(zero_point_c)


def check_finite(x: Tensor, site: str) -> None:
    """Raise ``SrqError`` naming ``site`` when ``x`` holds NaN or inf."""
    if not bool(torch.isfinite(x).all()):
        bad = "NaN" if bool(torch.isnan(x).any()) else "inf"
        raise SrqError(f"quantizer site {site or '<unnamed>'}: {bad} in the observed data")


class FakeQuantizer(nn.Module):
    """One quantizer site: trainable bounds ``lb``/``ub`` (and optional shift ``beta``).

    Bounds have shape ``()`` (per-tensor) or ``(C,)`` (per-channel along ``axis`` of the input).
    ``mode``: ``"fp"`` passes the input through, ``"observe"`` passes it through and feeds
    ``observer`` (FP statistics for the bound search, as 2DQuant's calibration pass), ``"quant"``
    fake-quantizes. ``site`` is the module path of this quantizer, set at placement.
    """

    def __init__(
        self,
        kind: Kind,
        fmt: QuantFormat,
        *,
        op: str,
        channels: int | None = None,
        axis: int | None = None,
        one_direction: bool = False,
        bias_correction: bool = False,
    ) -> None:
        super().__init__()
        if (channels is None) != (axis is None):
            raise ValueError("per-channel quantizers need both channels and axis")
        shape = () if channels is None else (channels,)
        self.kind, self.fmt, self.op, self.axis = kind, fmt, op, axis
        self.one_direction = one_direction
        self.lb = nn.Parameter(torch.full(shape, -1.0))
        self.ub = nn.Parameter(torch.full(shape, 1.0))
        self.beta = nn.Parameter(torch.zeros(shape)) if bias_correction else None
        self.mode: Mode = "fp"
        self.site = ""
        self.observer = None  # set by srq.calib.observe while observing

    @property
    def quantizing(self) -> bool:
        return self.mode == "quant"

    def _bcast(self, p: Tensor, ndim: int) -> Tensor:
        if self.axis is None:
            return p
        shape = [1] * ndim
        shape[self.axis] = -1
        return p.reshape(shape)

    def qparams(self) -> tuple[Tensor, Tensor]:
        """Snapped ``(scale, zero_point)`` with the bounds' shape."""
        return qparams(self.lb, self.ub, self.fmt)

    def quantize_shifted(self, x: Tensor) -> Tensor:
        """``Q(x - beta)`` (``Q(x)`` without bias correction): what the integer kernel consumes."""
        scale, zero_point = self.qparams()
        if self.beta is not None:
            x = x - self._bcast(self.beta, x.ndim)
        return fake_quant(x, self._bcast(scale, x.ndim), self._bcast(zero_point, x.ndim), self.fmt.qmin, self.fmt.qmax)

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "fp":
            return x
        if self.mode == "observe":
            if self.observer is None:
                check_finite(x, self.site)
            else:
                self.observer.update(x)  # checks finiteness on its min / max pass
            return x
        y = self.quantize_shifted(x)
        return y if self.beta is None else y + self._bcast(self.beta, x.ndim)

    def set_bounds(self, lb: Tensor, ub: Tensor, beta: Tensor | None = None) -> None:
        """Load bounds (and beta) found by a search; refuses non-finite values."""
        for name, v in (("lb", lb), ("ub", ub), ("beta", beta)):
            if v is not None:
                check_finite(v, f"{self.site} ({name})")
        with torch.no_grad():
            self.lb.copy_(lb.reshape(self.lb.shape))
            self.ub.copy_(ub.reshape(self.ub.shape))
            if self.beta is not None and beta is not None:
                self.beta.copy_(beta.reshape(self.beta.shape))

    def extra_repr(self) -> str:
        gran = "tensor" if self.axis is None else f"channel(axis={self.axis})"
        sym = "sym" if self.fmt.symmetric else "asym"
        return f"{self.kind}, {self.op}, {self.fmt.bits}-bit {sym}, {gran}, mode={self.mode}"
