"""Quantizer placement: swap Conv2d / Linear / SwinIR attention modules for quantized ones, in place.

Site names are the module paths of the ``FakeQuantizer`` modules, ``<layer path>.<role>``:

* ``<conv or linear>.weight_q`` / ``<conv or linear>.input_q`` (e.g. ``IMDB1.c1.input_q``);
* ``<conv>.output``: the requantization of a quantized conv's output (``conv_output_bits``,
  8 by default; activation kind, per-tensor, asymmetric uint8 unless symmetric mode, op
  ``conv2d``; never bias-corrected) -- ONNX Runtime's QLinearConv needs it, see ``srq.calib.layers``;
* SwinIR attention: ``<block>.attn.qkv.{q,k,v}.{weight_q,input_q}`` (qkv split, the default) or
  ``<block>.attn.qkv.{weight_q,input_q}`` (``qkv="fused"``),
  ``<block>.attn.proj.{weight_q,input_q}``, ``<block>.attn.matmul_qk.input_a`` (Q, scaled),
  ``<block>.attn.matmul_qk.input_b`` (K), ``<block>.attn.matmul_av.input_a`` (A, post-softmax),
  ``<block>.attn.matmul_av.input_b`` (V); the MLP: ``<block>.mlp.fc1.*``, ``<block>.mlp.fc2.*``.

The recipe, the export and the reports use these names unchanged.

Policies (``PlacementConfig.policy``):

* ``2dquant`` (SwinIR): in every transformer block the window attention (qkv as three
  Linear, proj, both batched MatMuls) and ``mlp.fc1`` / ``mlp.fc2``; everything else FP --
  16 quantizers per block (qkv: 3 weights + 3 inputs; proj, fc1, fc2: 2 each; 4 MatMul inputs).
  ``qkv="fused"`` keeps qkv one Linear with one input quantizer: 12 per block. Its per-channel
  weight quantizer covers the same rows the three split ones do, and at phase 1 the three split input
  quantizers find the same bounds anyway (same tensor, same search); only DQC can move them apart.
  The engine then runs one integer GEMM instead of three plus a float Concat (docs/speed.md).
* ``body`` (CNN): every Conv2d / Linear run at LR resolution except the first one, the last
  one and the conv feeding the first PixelShuffle (upsampler); everything run at HR
  resolution (after PixelShuffle / interpolation) stays FP. ``first_conv_bits`` quantizes the
  first conv too (input and symmetric per-channel weights at that many bits, whatever ``w_bits``
  / ``a_bits``; no output quantizer): the engine runs it as an integer conv with a float output
  (``ConvInteger``, see ``srq.calib.layers``), which calibration reproduces bit for bit. An FP
  first conv is the one op whose float32 summation order differs between PyTorch and the
  engine, which flips roundings downstream (IMDN W8A8 engine parity 55.9 dB, 3 % of values off
  by more than 1/255 on Set5 tiles: docs/export-parity.md).
* ``all``: every Conv2d / Linear except the first and the last one run, plus attention MatMuls
  (the first one as in ``body``).

Layers are found by one traced forward pass (leaf-module call order and input sizes), so a
functional ``F.interpolate`` in the forward is seen through the sizes. ``include`` / ``exclude``
globs on module paths override the policy (exclude wins). ``layer_bits`` rules ``GLOB=wNaM`` give the
matching layers (a SwinIR window attention as a whole, by its ``attn`` path) other weight / input
bits: mixed precision, e.g. the few layers ``benchmarks/site_sensitivity.py`` finds most sensitive at
8 bits in a W4A4 model; conv-output requantizations keep ``conv_output_bits`` and the first conv
``first_conv_bits``. ``shared_inputs``: one grid per tensor: quantized layers that read the very same
tensor (PAN's ``conv1_a`` / ``conv1_b``, ``PAConv.k2`` / ``k3``) at the same input format share one input
quantizer (one module, both site names), and a layer that reads a requantized output unchanged reads it
on that output's grid, so the engine quantizes each tensor once. ``integer_residuals``: every
``srq.zoo.Residual`` block sum gets an output site ``<residual>.output`` at ``conv_output_bits`` (op ``"add"``,
``srq.calib.layers.QuantResidual``: ONNX Runtime's ``QLinearAdd`` where both inputs are on grids), and a
layer reading that sum at those bits without bias correction reads it on that grid (the same module
under the layer's ``input_q`` name). ``integer_concats``: every ``srq.zoo.Concat`` gets an output site
``<concat>.output`` at ``conv_output_bits`` (op ``"concat"``, ``srq.calib.layers.QuantConcat``: ONNX Runtime's
``QLinearConcat``); what reads it then runs on integers where it can: IMDN's ``ChannelContrast`` sums the
levels (``srq.calib.layers.GridContrast``) and, with ``integer_gates``, its attention sigmoid gets a gate site,
so that the gated product is a ``QLinearMul`` into c5's input grid. ``integer_activations`` (not with bias
correction): an ``nn.LeakyReLU`` module called once, whose output quantized layers read (unchanged, or a channel
slice of it: IMDN's Split) at one asymmetric input format, gets an output site ``<act>.output`` at that format
(op ``"leaky_relu"``, ``srq.calib.layers.QuantActivation``: ONNX Runtime's ``QLinearLeakyRelu``), and those
layers read it on that grid (one module under both names), so that the engine splits uint8 tensors and IMDN's
distilled parts reach the Concat on grids. Sites whose name matches
``one_direction_sites`` get 2DQuant's one-direction bound search (post-softmax A and the
post-GELU fc2 input by default).

Bias correction (``bias_correction``) shifts every two-sided activation input (not the one-direction
ones, not conv outputs). ``beta_sites="layers"`` keeps it on Conv / Linear inputs only, where the
export folds ``W @ beta`` into the layer's int32 bias; on the inputs of a batched MatMul of two
activations (SwinIR's Q, K, V) the shift becomes explicit terms in the engine
(``(Q' + b_q)(K' + b_k)^T``, ``A (V' + b_v)``), which cost SwinIR's engine ~20 % (docs/speed.md).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Literal

import torch
from torch import Tensor, nn

from srq.calib.layers import (GridContrast, QuantActivation, QuantConcat, QuantConv2d, QuantGate, QuantLinear,
                              QuantMatMul, QuantQKV, QuantResidual, QuantWindowAttention, TableSigmoid)
from srq.calib.quantizer import FakeQuantizer, QuantFormat, integer_conv_with_float_output
from srq.errors import SrqError
from srq.zoo import ChannelContrast, Concat, Gate, NearestUpsample, Residual, set_exact_statistics

Policy = Literal["2dquant", "body", "all"]
POLICIES: tuple[str, ...] = ("2dquant", "body", "all")
QKV_LAYOUTS: tuple[str, ...] = ("split", "fused")
BETA_SITES: tuple[str, ...] = ("all", "layers")
ONE_DIRECTION_SITES = ("*.matmul_av.input_a", "*.mlp.fc2.input_q")


@dataclass(frozen=True)
class PlacementConfig:
    """Where quantizers go and their integer formats (weights per-channel by default)."""

    policy: Policy = "body"
    w_bits: int = 4
    a_bits: int = 4
    symmetric: bool = False  # TensorRT: zp 0, weights narrow range, activations full range
    weight_symmetric: bool = False  # weights only: zp 0, narrow range (ORT's fast U8S8 kernels, see docs/speed.md)
    weight_symmetric_8bit: bool = False  # the same for the layers whose weights are 8-bit (e.g. by layer_bits)
    weight_granularity: Literal["channel", "tensor"] = "channel"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    one_direction: bool = True  # False = 2DQuant's released code (symmetric search everywhere)
    one_direction_sites: tuple[str, ...] = ONE_DIRECTION_SITES
    bias_correction: bool = False  # beta on input sites with a symmetric (two-sided) search
    beta_sites: Literal["all", "layers"] = "all"  # which of those: all (2DQuant+), or Conv/Linear inputs only
    simulate_int32_bias: bool = True
    conv_output_bits: int | None = 8  # output quantizer of every quantized Conv2d; None: none
    first_conv_bits: int | None = None  # body / all: integer first conv at these bits, float output; None: FP
    float_output: tuple[str, ...] = ()  # globs: quantized convs that keep a float output (ConvInteger)
    sigmoid_tables: bool = True  # nn.Sigmoid on a requantized conv output: a table of its levels (TableSigmoid)
    integer_gates: bool = False  # gate sites <sigmoid>.output on those tables; a Gate product as QLinearMul
    gate_products: bool = True  # with integer gates: a Gate(requantized=True) product gets its own site
    shared_inputs: bool = False  # one grid per tensor: its readers share one input quantizer (one Q in the engine)
    integer_residuals: bool = False  # an arch's Residual sum requantized by <residual>.output, as QLinearAdd
    integer_concats: bool = False  # an arch's Concat requantized by <concat>.output, as QLinearConcat
    integer_activations: bool = False  # a LeakyReLU read by quantized layers: <act>.output on their grid
    qkv: Literal["split", "fused"] = "split"  # SwinIR qkv: three Linears (2DQuant) or one, one input quantizer
    layer_bits: tuple[str, ...] = ()  # "GLOB=wNaM": other bits for the layers whose path matches (last match wins)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise SrqError(f"placement policy {self.policy!r}: choose one of {', '.join(POLICIES)}")
        if self.qkv not in QKV_LAYOUTS:
            raise SrqError(f"qkv layout {self.qkv!r}: choose one of {', '.join(QKV_LAYOUTS)}")
        if self.beta_sites not in BETA_SITES:
            raise SrqError(f"beta sites {self.beta_sites!r}: choose one of {', '.join(BETA_SITES)}")
        QuantFormat(self.w_bits), QuantFormat(self.a_bits)  # validates bit widths
        for bits in (self.conv_output_bits, self.first_conv_bits):
            if bits is not None:
                QuantFormat(bits)
        for rule in self.layer_bits:
            _layer_bits_rule(rule)
        if self.integer_gates and (not self.sigmoid_tables or self.symmetric):
            raise SrqError("integer gates need sigmoid tables and an asymmetric (ONNX Runtime) placement")
        if self.integer_residuals and self.symmetric:
            raise SrqError("integer residuals need an asymmetric (ONNX Runtime) placement")
        if self.integer_concats and self.symmetric:
            raise SrqError("integer concats need an asymmetric (ONNX Runtime) placement")
        if self.integer_activations and self.symmetric:
            raise SrqError("integer activations need an asymmetric (ONNX Runtime) placement")

    def for_layer(self, path: str) -> PlacementConfig:
        """This config with the weight / input bits of the last ``layer_bits`` rule matching ``path``."""
        bits = [(w, a) for glob, w, a in map(_layer_bits_rule, self.layer_bits) if fnmatchcase(path, glob)]
        return self if not bits else replace(self, w_bits=bits[-1][0], a_bits=bits[-1][1])


_LAYER_BITS = re.compile(r"(.+)=w([2-8])a([2-8])")


def _layer_bits_rule(rule: str) -> tuple[str, int, int]:
    """``"IMDB*.c5=w8a8"`` -> ``("IMDB*.c5", 8, 8)``; ``SrqError`` for anything else."""
    m = _LAYER_BITS.fullmatch(rule.strip())
    if m is None:
        raise SrqError(f"layer bits {rule!r}: expected GLOB=wNaM with N, M between 2 and 8 (e.g. 'LR_conv=w8a8')")
    return m.group(1), int(m.group(2)), int(m.group(3))


def _is_window_attention(m: nn.Module) -> bool:
    return all(hasattr(m, a) for a in ("qkv", "proj", "relative_position_bias_table", "relative_position_index",
                                       "num_heads", "scale", "window_size")) and isinstance(m.qkv, nn.Linear)


@dataclass(frozen=True)
class _Call:
    path: str
    module: nn.Module
    in_hw: tuple[int, ...]
    input: Tensor  # the call's input (kept alive, so that two calls reading one tensor see the same object)
    output: Tensor
    versions: tuple[int, int]  # input / output ``_version`` at the call (an in-place op later bumps it)
    second: Tensor | None  # a second input (a Gate's gate)


def _trace_calls(model: nn.Module, example: Tensor) -> list[_Call]:
    """Leaf Conv2d / Linear / PixelShuffle / Sigmoid / LeakyReLU / Residual / NearestUpsample / Gate / Concat
    calls of one no-grad forward, in call order."""
    calls: list[_Call] = []
    handles = []
    for path, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.PixelShuffle, nn.Sigmoid, nn.LeakyReLU, Residual, NearestUpsample,
                          Gate, Concat)):
            def hook(mod, args, out, path=path):
                calls.append(_Call(path, mod, tuple(args[0].shape[-2:]) if args[0].ndim == 4 else (), args[0], out,
                                   (args[0]._version, out._version), args[1] if len(args) > 1 else None))
            handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return calls


def _policy_layers(model: nn.Module, cfg: PlacementConfig, calls: list[_Call]) -> tuple[list[str], list[str], str | None]:
    """(attention module paths, Conv2d/Linear module paths the policy quantizes, the first layer's
    path when it is among them at ``first_conv_bits``); ``calls``: ``_trace_calls``."""
    attn = [p for p, m in model.named_modules() if _is_window_attention(m)]
    if cfg.policy == "2dquant":
        if not attn:
            raise SrqError("placement policy '2dquant' needs a SwinIR-style model (no window attention found)")
        mlps = [f"{p[: -len('attn')]}mlp.{fc}" for p in attn for fc in ("fc1", "fc2")]
        return attn, [p for p in mlps if isinstance(model.get_submodule(p), nn.Linear)], None
    calls = [c for c in calls if isinstance(c.module, (nn.Conv2d, nn.Linear, nn.PixelShuffle))]
    layers = [c for c in calls if isinstance(c.module, (nn.Conv2d, nn.Linear))]
    inside_attn = tuple(p + "." for p in attn)
    if not layers:
        raise SrqError(f"placement policy {cfg.policy!r}: the model runs no Conv2d/Linear layer")
    first = layers[0].path if cfg.first_conv_bits is not None and len(layers) > 1 else None
    fp = {layers[-1].path} | ({layers[0].path} if first is None else set())
    if cfg.policy == "body":
        attn = []
        lr_hw = layers[0].in_hw
        fp |= {c.path for c in layers if c.in_hw and lr_hw and c.in_hw[0] > lr_hw[0]}
        for prev, nxt in zip(calls, calls[1:]):
            if isinstance(nxt.module, nn.PixelShuffle) and isinstance(prev.module, nn.Conv2d):
                fp.add(prev.path)
    seen: list[str] = []
    for c in layers:
        if c.path not in fp and c.path not in seen and not c.path.startswith(inside_attn):
            seen.append(c.path)
    return attn, seen, first


def _glob(path: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(path, p) for p in patterns)


def _weight_q(layer: nn.Module, cfg: PlacementConfig, op: str, out_channels: int) -> FakeQuantizer:
    sym = _symmetric_weights(cfg)
    fmt = QuantFormat(cfg.w_bits, sym, narrow=sym)
    if cfg.weight_granularity == "channel":
        return FakeQuantizer("weight", fmt, op=op, channels=out_channels, axis=0)
    return FakeQuantizer("weight", fmt, op=op)


def _symmetric_weights(cfg: PlacementConfig) -> bool:
    return cfg.symmetric or cfg.weight_symmetric or (cfg.weight_symmetric_8bit and cfg.w_bits == 8)


def _act_q(cfg: PlacementConfig, op: str, bits: int | None = None) -> FakeQuantizer:
    return FakeQuantizer("activation", QuantFormat(cfg.a_bits if bits is None else bits, cfg.symmetric), op=op)


def _quant_layer(m: nn.Module, cfg: PlacementConfig) -> nn.Module:
    if isinstance(m, nn.Linear):
        return QuantLinear(m, _weight_q(m, cfg, "linear", m.out_features), _act_q(cfg, "linear"),
                           cfg.simulate_int32_bias)
    if isinstance(m, nn.Conv2d):
        out = None if cfg.conv_output_bits is None else _act_q(cfg, "conv2d", cfg.conv_output_bits)
        return QuantConv2d(m, _weight_q(m, cfg, "conv2d", m.out_channels), _act_q(cfg, "conv2d"),
                           cfg.simulate_int32_bias, out)
    raise SrqError(f"cannot quantize a {type(m).__name__}: only Conv2d and Linear layers")


def _split_qkv(qkv: nn.Linear, cfg: PlacementConfig) -> QuantQKV:
    c = qkv.out_features // 3
    parts = []
    for i in range(3):
        part = nn.Linear(qkv.in_features, c, bias=qkv.bias is not None)
        part.weight = nn.Parameter(qkv.weight[i * c:(i + 1) * c], requires_grad=qkv.weight.requires_grad)
        if qkv.bias is not None:
            part.bias = nn.Parameter(qkv.bias[i * c:(i + 1) * c], requires_grad=qkv.bias.requires_grad)
        parts.append(_quant_layer(part, cfg))
    return QuantQKV(*parts)


def _quant_attention(attn: nn.Module, cfg: PlacementConfig) -> QuantWindowAttention:
    return QuantWindowAttention(
        attn, _split_qkv(attn.qkv, cfg) if cfg.qkv == "split" else _quant_layer(attn.qkv, cfg),
        _quant_layer(attn.proj, cfg),
        QuantMatMul(_act_q(cfg, "matmul"), _act_q(cfg, "matmul")),
        QuantMatMul(_act_q(cfg, "matmul"), _act_q(cfg, "matmul")),
    )


def _set(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, new)


def place_quantizers(model: nn.Module, cfg: PlacementConfig, example: Tensor) -> dict[str, FakeQuantizer]:
    """Swap quantized layers into ``model`` (in place); return ``{site name: quantizer}`` in module order.

    ``example``: a small ``(1, C, h, w)`` input, run once to find the layers' call order and sizes.
    Quantizers start in ``"fp"`` mode with placeholder bounds; set them with a search or a recipe.
    """
    _refuse_quantized(model)
    calls = _trace_calls(model, example)
    acts = [c for c in calls if isinstance(c.module, nn.LeakyReLU)]
    calls = [c for c in calls if not isinstance(c.module, nn.LeakyReLU)]
    attn, layers, first = _policy_layers(model, cfg, calls)
    layers += [p for p, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
               and _glob(p, cfg.include) and p not in layers and not any(p.startswith(a + ".") for a in attn)]
    paths = [p for p in attn + layers if not _glob(p, cfg.exclude)]
    if not paths:
        raise SrqError(f"placement policy {cfg.policy!r} with the given include/exclude placed no quantizer")
    floats = [p for p in paths if _glob(p, cfg.float_output) and isinstance(model.get_submodule(p), nn.Conv2d)]
    unmatched = [g for g in cfg.float_output if not any(fnmatchcase(p, g) for p in floats)]
    if unmatched:
        raise SrqError(f"float_output {', '.join(unmatched)}: matches no quantized Conv2d of this model")
    unmatched = [r for r in cfg.layer_bits if not any(fnmatchcase(p, _layer_bits_rule(r)[0]) for p in paths)]
    if unmatched:
        raise SrqError(f"layer_bits {', '.join(unmatched)}: matches no quantized layer of this model")
    overrides = {p: c for p in paths if (c := cfg.for_layer(p)) != cfg}
    overrides |= {p: _float_output(overrides.get(p, cfg)) for p in floats}
    integer_skips = cfg.integer_residuals and cfg.conv_output_bits is not None
    if first in paths:  # with integer residuals its output is requantized: the skip path stays integer
        b = cfg.first_conv_bits
        first_cfg = replace(cfg, w_bits=b, a_bits=b, weight_symmetric=True)
        overrides[first] = first_cfg if integer_skips else _float_output(first_cfg)
    requantized = {p for p in paths if p not in floats and p != first and isinstance(model.get_submodule(p), nn.Conv2d)}
    concats = (tuple(c.path for c in calls if isinstance(c.module, Concat))
               if cfg.integer_concats and cfg.conv_output_bits else ())
    gates = _gate_paths(calls, requantized, concats) if cfg.integer_gates and cfg.conv_output_bits else ()
    residuals = tuple(c.path for c in calls if isinstance(c.module, Residual)) if integer_skips else ()
    if integer_skips and first in paths:
        requantized.add(first)
    shared = _shared_inputs(calls, [p for p in paths if p != first], overrides, cfg, residuals,
                            requantized if cfg.shared_inputs else set())
    products = _gate_products(calls, gates, requantized) if cfg.gate_products else ()
    activations: dict[str, int] = {}
    if cfg.integer_activations and not cfg.bias_correction:
        for act, (bits, readers) in _activation_sites(acts, calls, [p for p in paths if p != first], overrides,
                                                      cfg).items():
            activations[act] = bits
            shared |= {reader: f"{act}.output" for reader in readers}
    return place_at(model, cfg, paths, overrides, gates, shared, residuals, products, concats, activations)


def _activation_sites(acts: list[_Call], calls: list[_Call], paths: list[str], overrides: dict[str, PlacementConfig],
                      cfg: PlacementConfig) -> dict[str, tuple[int, list[str]]]:
    """``{LeakyReLU path: (bits, reader paths)}``: each LeakyReLU module called once whose output the quantized
    Conv2d / Linear layers at ``paths`` read, unchanged or as a channel slice (a view of it: IMDN's Split), all at
    one asymmetric input format of ``bits``. Its output gets that grid, which those layers then read it on."""
    once = Counter(a.path for a in acts)
    wanted = set(paths)
    found: dict[str, tuple[int, list[str]]] = {}
    for a in acts:
        readers = [c for c in calls if c.path in wanted and isinstance(c.module, (nn.Conv2d, nn.Linear))
                   and (c.input is a.output or c.input._base is a.output) and c.versions[0] == a.versions[1]]
        formats = {(overrides.get(c.path, cfg).a_bits, overrides.get(c.path, cfg).symmetric) for c in readers}
        if once[a.path] == 1 and len(formats) == 1 and not next(iter(formats))[1]:
            found[a.path] = (next(iter(formats))[0], [c.path for c in readers])
    return found


def _gate_products(calls: list[_Call], gates: tuple[str, ...], requantized: set[str]) -> tuple[str, ...]:
    """The ``Gate(requantized=True)`` paths whose product gets its own grid: a requantized conv's output
    times an integer gate (a sigmoid at ``gates``), as PAN's HR pixel attention (QLinearMul)."""
    outputs = {id(c.output): c for c in calls}
    return tuple(c.path for c in calls if isinstance(c.module, Gate) and c.module.requantized
                 and getattr(outputs.get(id(c.second)), "path", None) in gates
                 and getattr(outputs.get(id(c.input)), "path", None) in requantized)


def _shared_inputs(calls: list[_Call], paths: list[str], overrides: dict[str, PlacementConfig],
                   cfg: PlacementConfig, residuals: tuple[str, ...], requantized: set[str]) -> dict[str, str]:
    """``{layer path: site path}``: the quantized Conv2d / Linear layers (``paths``) whose input quantizer
    is another site's, as each tensor gets one grid and the engine quantizes it once:

    * a layer that reads, unchanged and at ``conv_output_bits`` without bias correction, the sum of an
      integer residual (``residuals``: paths) or the output of a requantized conv (``requantized``:
      paths, given under ``shared_inputs``) reads it on that output's own grid (``<path>.output``),
      which it already is (PAN's ``att.conv`` on ``upconv``'s output, each block's first convs on the
      previous block's sum), also through a ``NearestUpsample`` (PAN's ``upconv1`` on the trunk's sum);
    * ``shared_inputs``: a layer that reads the very tensor an earlier one (in call order) reads, at the
      same input format, shares that one's ``input_q`` (PAN's ``conv1_a`` / ``conv1_b``, ``PAConv.k2`` /
      ``k3``), so ONNX Runtime can also fuse the op that made it (e.g. QLinearLeakyRelu).
    """
    wanted = set(paths)
    grids = {id(c.output): (f"{c.path}.output", c.versions[1]) for c in calls
             if c.path in residuals or c.path in requantized}
    leaders: dict[tuple[int, int, bool], str] = {}
    shared: dict[str, str] = {}
    for c in calls:
        grid = grids.get(id(c.input))
        if isinstance(c.module, NearestUpsample) and grid is not None and grid[1] == c.versions[0]:
            grids[id(c.output)] = (grid[0], c.versions[1])  # copies values: still on that grid
        if c.path not in wanted or not isinstance(c.module, (nn.Conv2d, nn.Linear)) or c.path in shared:
            continue
        layer = overrides.get(c.path, cfg)
        if (grid is not None and grid[1] == c.versions[0] and layer.a_bits == cfg.conv_output_bits
                and not layer.symmetric and not cfg.bias_correction):
            shared[c.path] = grid[0]
        elif cfg.shared_inputs:
            leader = leaders.setdefault((id(c.input), layer.a_bits, layer.symmetric), c.path)
            if leader != c.path:
                shared[c.path] = f"{leader}.input_q"
    return shared


def _gate_paths(calls: list[_Call], requantized: set[str], concats: tuple[str, ...]) -> tuple[str, ...]:
    """The ``nn.Sigmoid`` paths worth an integer gate: called right after a conv whose output is
    requantized (its likely input), on a spatial map, or as the gate of a ``Gate`` whose other operand is
    on a grid (a requantized ``Concat`` at ``concats``: IMDN's per-channel attention, which otherwise
    gates float features, where an integer gate would save nothing). A site on a sigmoid that turns out
    to read something else stays inert (``TableSigmoid``)."""
    grids = {id(c.output) for c in calls if c.path in concats}
    gated = {id(c.second) for c in calls if isinstance(c.module, Gate) and id(c.input) in grids}
    return tuple(c.path for prev, c in zip(calls, calls[1:]) if isinstance(c.module, nn.Sigmoid)
                 and prev.path in requantized and ((c.in_hw and c.in_hw[0] * c.in_hw[1] > 1) or id(c.output) in gated))


def _float_output(cfg: PlacementConfig) -> PlacementConfig:
    """``cfg`` for a conv that keeps a float output: no output quantizer, and symmetric weights where
    its weight levels would not fit int8 otherwise (8-bit asymmetric), so that the engine runs it
    as ``ConvInteger`` and reproduces calibration exactly."""
    weight = QuantFormat(cfg.w_bits, _symmetric_weights(cfg))
    fits = integer_conv_with_float_output(weight, QuantFormat(cfg.a_bits, cfg.symmetric), None)
    return replace(cfg, conv_output_bits=None, weight_symmetric=cfg.weight_symmetric or not fits)


def _refuse_quantized(model: nn.Module) -> None:
    if any(isinstance(m, FakeQuantizer) for m in model.modules()):
        raise SrqError("model already holds quantizers: place them on a fresh FP model")


def _attention_prefix(model: nn.Module, path: str) -> str | None:
    parts = path.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        try:
            m = model.get_submodule(prefix)
        except AttributeError:
            return None
        if _is_window_attention(m):
            return prefix
    return None


def place_at(model: nn.Module, cfg: PlacementConfig, paths: list[str],
             overrides: dict[str, PlacementConfig] | None = None,
             gates: tuple[str, ...] = (), shared: dict[str, str] | None = None,
             residuals: tuple[str, ...] = (), products: tuple[str, ...] = (),
             concats: tuple[str, ...] = (), activations: dict[str, int] | None = None) -> dict[str, FakeQuantizer]:
    """Quantize the layers at ``paths`` (Conv2d / Linear paths, or paths inside a SwinIR window
    attention, which is swapped as a whole) with ``cfg``'s formats (``overrides``: another config
    for some layer paths); returns ``{site: quantizer}``. With ``cfg.sigmoid_tables`` every
    ``nn.Sigmoid`` becomes a ``TableSigmoid`` (a plain sigmoid unless it reads a requantized conv output);
    with ``cfg.integer_gates`` those at ``gates`` (paths) get an output quantizer at ``conv_output_bits``
    (op ``"sigmoid"``) and every ``Gate`` becomes a ``QuantGate``, those at ``products`` with an output site at
    ``conv_output_bits`` (op ``"mul"``). The ``Residual`` modules at ``residuals``
    become ``QuantResidual`` with an output site at ``conv_output_bits`` (op ``"add"``), the ``Concat`` modules at
    ``concats`` ``QuantConcat`` (op ``"concat"``), the activation modules at ``activations`` (``{path: bits}``)
    ``QuantActivation`` (op ``"leaky_relu"``), and every ``ChannelContrast`` a ``GridContrast``. ``shared``
    (``{layer path: site path}``): those layers' ``input_q`` is that site's quantizer, one module under
    two site names (the recipe lists both, with equal values; beta follows the first name).
    Statistics that a model can sum exactly (``srq.zoo.set_exact_statistics``) are switched on."""
    _refuse_quantized(model)
    todo: dict[str, str] = {}
    for path in paths:
        attn = _attention_prefix(model, path)
        if attn is not None:
            todo[attn] = "attention"
            continue
        try:
            m = model.get_submodule(path)
        except AttributeError:
            raise SrqError(f"no layer {path!r} in this model") from None
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            raise SrqError(f"cannot quantize {path!r}: a {type(m).__name__}, not a Conv2d or Linear")
        todo[path] = "layer"
    for path, what in todo.items():
        m = model.get_submodule(path)
        layer_cfg = (overrides or {}).get(path, cfg)
        _set(model, path, _quant_attention(m, layer_cfg) if what == "attention" else _quant_layer(m, layer_cfg))
    if cfg.sigmoid_tables:
        for name in [n for n, m in model.named_modules() if type(m) is nn.Sigmoid]:
            gate = cfg.integer_gates and name in gates
            _set(model, name, TableSigmoid(_act_q(cfg, "sigmoid", cfg.conv_output_bits) if gate else None))
    if cfg.integer_gates:
        for name in [n for n, m in model.named_modules() if type(m) is Gate]:
            _set(model, name, QuantGate(_act_q(cfg, "mul", cfg.conv_output_bits) if name in products else None))
    for name in residuals:
        _set(model, name, QuantResidual(_act_q(cfg, "add", cfg.conv_output_bits)))
    for name in concats:
        _set(model, name, QuantConcat(_act_q(cfg, "concat", cfg.conv_output_bits)))
    for name, bits in (activations or {}).items():
        _set(model, name, QuantActivation(model.get_submodule(name), _act_q(cfg, "leaky_relu", bits)))
    for name in [n for n, m in model.named_modules() if type(m) is ChannelContrast]:
        _set(model, name, GridContrast(model.get_submodule(name)))
    for path, site in (shared or {}).items():
        model.get_submodule(path).input_q = model.get_submodule(site)
    set_exact_statistics(model)
    sites = {name: m for name, m in model.named_modules(remove_duplicate=False) if isinstance(m, FakeQuantizer)}
    for name, q in sorted(sites.items(), key=lambda item: not is_output_site(item[0])):  # output names first
        if q.site:  # a shared quantizer, set up under its first name
            continue
        q.site = name
        q.one_direction = cfg.one_direction and q.kind == "activation" and _glob(name, cfg.one_direction_sites)
        if (cfg.bias_correction and q.kind == "activation" and not q.one_direction and not is_output_site(name)
                and (cfg.beta_sites == "all" or q.op != "matmul")):
            q.beta = nn.Parameter(torch.zeros_like(q.lb))
    return sites


def is_output_site(name: str) -> bool:
    """Whether ``name`` is a conv output quantizer (``<conv>.output``) rather than a layer input or weight."""
    return name.endswith(".output")


def set_mode(sites: dict[str, FakeQuantizer], mode: str) -> None:
    """Put every quantizer in ``mode`` (``"fp"``, ``"observe"`` or ``"quant"``)."""
    for q in sites.values():
        q.mode = mode
