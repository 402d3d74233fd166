"""QDQ ONNX export of a calibrated model: the FP graph plus Q/DQ nodes carrying the recipe's integer grids.

``export_quantized(model, recipe, target, tile_hw, out_path, weights)``:

1. FP graph at the fixed tile size (``srq.export.fp_onnx``).
2. Each recipe site ``<module path>.<role>`` is mapped to ONNX nodes through the TorchScript
   exporter's scope names (``/IMDB1/c1/Conv`` is module ``IMDB1.c1``; a Sequential child shows as
   ``/cca/conv_du/conv_du.0/Conv``). Conv -> ``Conv``; Linear -> ``MatMul`` + ``Add`` (3-D input)
   or ``Gemm``; SwinIR ``<attn>.matmul_qk`` / ``<attn>.matmul_av`` -> the first / second MatMul
   in the attention scope; ``<attn>.qkv.{q,k,v}`` -> the fused qkv MatMul split into three
   (``Concat`` back). Any site that does not map raises ``SrqError`` listing all of them.
3. Roles: ``weight_q`` -> integer initializer + ``DequantizeLinear`` (per-channel axis of the
   ONNX weight: 0 for Conv, 1 for the transposed MatMul weight; an asymmetric grid of <= 7 bits
   is stored as int8 ``q - zp`` with zero point 0, the same values, for ORT's faster U8S8
   kernels); ``input_q`` / ``input_a`` / ``input_b`` -> ``Q -> [integer Clip] -> DQ`` on that input; ``output`` -> the same on the
   layer's output, in front of all consumers (ORT's QLinearConv needs it). Bias of a layer with
   both weight and input quantized -> ``DQ(int32 round_half_even(b / (s_x * s_w)))``, which is
   calib's ``simulate_int32_bias``.
4. ``target="trt"``: every grid lowered by ``srq.export.symmetric.to_symmetric`` (zp 0, int8);
   the effective bits lost per site are written next to the model as ``<stem>.bits_lost.json``.
   A conv-output requantization that feeds a Concat is left out (0 bits lost; ``_feeds_concat``).
   The float64 statistics of a quantized model (IMDN's channel attention, traced with
   ``set_exact_statistics`` on, as calibration runs them) are computed in float32 (``srq.export.float64``).
5. ``target="ort"``: a quantized Conv without output requantization whose weight levels fit int8
   (the first conv under ``first_conv_bits``) becomes ``ConvInteger -> Add(int32 bias) -> Cast ->
   Mul(s_x * s_w)``: integer kernel, float output, bit-identical to calib (``_integer_float_output``).
6. ``target="ort"`` with the recipe's ``sigmoid_tables``: a Sigmoid reading a requantized conv
   output becomes ``Gather`` from the table of that output's levels that calib's ``TableSigmoid``
   uses (the engine's own sigmoid differs by an ulp, which can flip a level downstream).
   With ``integer_gates`` the gate has its own site ``<sigmoid>.output``: ``Sigmoid -> Q -> DQ`` (ORT's
   ``QLinearSigmoid``) where this machine's ORT computes calib's ``table_levels`` for that input grid
   (checked level by level), else a uint8 ``Gather`` of them and a DQ. A following Mul then reads two
   DQs and, where one QuantizeLinear alone reads it, ORT fuses a ``QLinearMul``, which calib computes
   for an arch's ``Gate``. ``target="trt"`` keeps float sigmoids (TensorRT's own kernels).
7. ``target="ort"``: each part of a Concat that one QuantizeLinear alone reads is quantized on that
   grid first (``requantize_concat_inputs``; the same levels, by idempotence), so ORT runs
   QLinearConcat, and QLinearLeakyRelu for the parts that are LeakyReLUs of a requantized output.
8. Integer residuals (``placement.integer_residuals``) and requantized gate products: ``Q -> DQ`` on each
   residual ``Add`` / gate ``Mul`` with a site ``<path>.output``, in front of all its readers
   (``_put_sum_and_product_sites``); ORT fuses ``QLinearAdd`` / ``QLinearMul``.
9. Integer concats (``placement.integer_concats``): ``Q -> DQ`` on each ``Concat`` with a site ``<path>.output``
   (step 8's pass; ORT fuses ``QLinearConcat``), and a ``ChannelContrast`` reading such a grid (IMDN's attention
   input) sums its uint8 levels exactly instead of its float64 statistics (``srq.export.channel_statistics``).
   Integer activations (``placement.integer_activations``): the same on each ``LeakyRelu`` with a site (ORT:
   ``QLinearLeakyRelu``); a ``Split`` of a DQ output then splits the integer levels (``split_levels``), so that
   each part reaches its reader (a conv on that grid, a Concat) as a DQ output.
10. A ``Q`` that re-quantizes a ``DQ`` output on the same grid is the identity on those levels and is
   skipped (``skip_requantization_on_same_grid``: a layer reading a residual on its grid), then equal
   quantization chains on one tensor become one (``merge_twin_quantizers``: layers that share an input
   quantizer, ``placement.shared_inputs``): the engine quantizes each such tensor once.

``weights="packed"`` stores weights of <= 4 bits as int4/uint4 initializers (opset 21; 2-bit
weights too, because ORT cannot create a session with int2 weights, see
docs/export-ort-fusion.md): the smallest file, but ORT runs those layers as float ops.

Bias correction (2DQuant+, ``Q_beta(x) = Q(x - beta) + beta`` on an input site, per-tensor ``beta``):

* the input chain becomes ``Sub(beta) -> Q -> [Clip] -> DQ``: the float32 ``x - beta`` is the
  subtraction calib computes, so the integer input is calib's ``Q(x - beta)`` (``beta / s`` is not
  an integer in general, so it cannot go into the zero point);
* Conv / Linear: ``W_q @ beta`` (per output channel, computed with torch exactly as calib does,
  from the exported integer weights) joins the float bias before the int32 rounding, so the
  layer stays ``DQ -> Conv/MatMul(+Add) -> [Q]`` and ONNX Runtime still fuses QLinearConv / QGemm;
* a zero-padded Conv: its ``pads`` move into a float ``Pad(0)`` in front of the ``Sub``, and the Conv
  gets ``pads = 0``. The integer kernel then sees the border as ``Q(0 - beta)``, a grid level, so
  the fold above is exact for every output pixel and QLinearConv stays; calib's ``QuantConv2d``
  pads first in the same way (``srq.calib.layers``);
* attention MatMul (act x act): ``MatMul(A', B')`` of the shifted inputs stays integer and
  ``beta_a colsum(B') + beta_b rowsum(A') + K beta_a beta_b`` is added after it in float
  (``srq.export.qdq_nodes.add_matmul_shift_terms``), i.e. ``(A' + beta_a) @ (B' + beta_b)`` up to
  float32 summation order; before a row softmax (``Q @ K^T``) only the first term, the other two
  being constant along the softmax axis. Measurements: docs/export-ort-fusion.md, docs/speed.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnx.version_converter
import onnx_graphsurgeon as gs
import torch

import srq
from srq.calib.quantizer import QuantFormat, integer_conv_with_float_output, level_table, table_levels
from srq.calib.recipe import MODULE_OUTPUT_OPS, Recipe, SiteParams
from srq.errors import SrqError
from srq.export.channel_statistics import contrast_from_levels
from srq.export.fp_onnx import export_fp_onnx
from srq.export.float64 import float64_to_float32
from srq.export.ort_fusion import qlinear_sigmoid_levels
from srq.export.qdq_nodes import (IntGrid, add_matmul_shift_terms, add_output_constant, conv_integer_float_output,
                                  dequantize_bias_input, dequantize_weight_input, fold_into_bias,
                                  merge_twin_quantizers, quantize_activation_input, quantize_activation_output,
                                  quantize_before_nearest_resize, requantize_concat_inputs, set_metadata,
                                  sigmoid_as_gate, sigmoid_as_table, skip_requantization_on_same_grid, split_levels)
from srq.export.symmetric import requantize_weight, to_symmetric
from srq.zoo import ChannelContrast, set_exact_statistics
from srq.zoo.loader import SRModel

Target = Literal["ort", "trt"]
WeightStorage = Literal["int8", "packed"]
INPUT_ROLES = {"input_q": 0, "input_a": 0, "input_b": 1}
OUTPUT_ROLES = ("output",)
# site op -> the ONNX op whose output it requantizes (ORT only: asymmetric grids); sigmoid gates: _put_gates
ORT_OUTPUT_NODES = {"add": "Add", "mul": "Mul", "concat": "Concat", "leaky_relu": "LeakyRelu"}
PACKED_OPSET = 21


@dataclass
class _Layer:
    """ONNX nodes of one quantized layer: the compute node and, for Linear as MatMul, its bias Add."""

    op: Literal["conv", "linear", "matmul"]
    node: gs.Node
    bias_add: gs.Node | None = None

    @property
    def output_node(self) -> gs.Node:
        return self.bias_add or self.node


def _scope(node_name: str) -> str | None:
    """Module path of a TorchScript-exported node name (``/a/b.0/c/Conv`` -> ``a.b.0.c``)."""
    if not node_name.startswith("/"):
        return None
    parts: list[str] = []
    for part in node_name.strip("/").split("/")[:-1]:
        if parts and part.startswith(parts[-1] + "."):
            parts[-1] = part  # Sequential / ModuleList child: "conv_du/conv_du.0"
        else:
            parts.append(part)
    return ".".join(parts)


def _const_input(node: gs.Node) -> int | None:
    idx = [i for i, t in enumerate(node.inputs) if isinstance(t, gs.Constant)]
    return idx[0] if len(idx) == 1 else None


class _LayerMap:
    """Module path -> ``_Layer`` over one imported FP graph."""

    def __init__(self, graph: gs.Graph):
        self.graph = graph
        self.scopes: dict[str, list[gs.Node]] = {}
        for n in graph.nodes:
            s = _scope(n.name)
            if s is not None:
                self.scopes.setdefault(s, []).append(n)
        self.split: dict[str, dict[str, _Layer]] = {}

    def _linear_or_conv(self, path: str) -> _Layer | None:
        nodes = self.scopes.get(path, [])
        ops = [n.op for n in nodes]
        if ops == ["Conv"]:
            return _Layer("conv", nodes[0])
        if ops == ["Gemm"] and nodes[0].attrs.get("transB", 0) == 1:
            return _Layer("linear", nodes[0])
        if ops in (["MatMul"], ["MatMul", "Add"]) and isinstance(nodes[0].inputs[1], gs.Constant):
            add = nodes[1] if len(nodes) == 2 else None
            if add is not None and _const_input(add) is None:
                return None
            return _Layer("linear", nodes[0], add)
        return None

    def _split_qkv(self, path: str) -> dict[str, _Layer] | None:
        """Replace the fused qkv MatMul (+ Add) at ``path`` by three, concatenated on the last axis."""
        fused = self._linear_or_conv(path)
        if fused is None or fused.node.op != "MatMul":
            return None
        w = np.asarray(fused.node.inputs[1].values)
        c = w.shape[1] // 3
        x = fused.node.inputs[0]
        out = fused.output_node.outputs[0]
        bias = None
        if fused.bias_add is not None:
            bias = np.asarray(fused.bias_add.inputs[_const_input(fused.bias_add)].values)
        parts: dict[str, _Layer] = {}
        outs = []
        for i, role in enumerate("qkv"):
            name = f"{path}.{role}"
            y = gs.Variable(f"{name}_matmul", np.float32)
            mm = gs.Node("MatMul", f"{name}_MatMul", inputs=[x, gs.Constant(f"{name}.weight_t", w[:, i * c:(i + 1) * c].copy())],
                         outputs=[y])
            self.graph.nodes.append(mm)
            add = None
            if bias is not None:
                z = gs.Variable(f"{name}_add", np.float32)
                add = gs.Node("Add", f"{name}_Add", inputs=[y, gs.Constant(f"{name}.bias", bias[i * c:(i + 1) * c].copy())],
                              outputs=[z])
                self.graph.nodes.append(add)
                y = z
            outs.append(y)
            parts[role] = _Layer("linear", mm, add)
        fused.output_node.outputs.clear()
        if fused.bias_add is not None:
            fused.node.outputs.clear()
        self.graph.nodes.append(gs.Node("Concat", f"{path}_Concat", attrs={"axis": -1}, inputs=outs, outputs=[out]))
        return parts

    def find(self, path: str) -> _Layer | None:
        parent, _, last = path.rpartition(".")
        if last in ("matmul_qk", "matmul_av"):
            mms = [n for n in self.scopes.get(parent, []) if n.op == "MatMul"]
            if len(mms) != 2:
                return None
            return _Layer("matmul", mms[0 if last == "matmul_qk" else 1])
        if last in ("q", "k", "v") and parent.endswith(".qkv"):
            if parent not in self.split:
                parts = self._split_qkv(parent)
                if parts is None:
                    return None
                self.split[parent] = parts
            return self.split[parent][last]
        return self._linear_or_conv(path)


def _grid(s: SiteParams, container: str | None = None, axis: int | None = None) -> IntGrid:
    container = container or ("int8" if s.symmetric else "uint8")
    return IntGrid(np.asarray(s.scale, np.float32), np.asarray(s.zero_point, np.int64), s.qmin, s.qmax, container,
                   axis if s.axis is not None else None)


def _quantize_values(w: np.ndarray, grid: IntGrid) -> np.ndarray:
    """``clamp(round_half_even(w / s) + zp, qmin, qmax)`` in float32, as calib's fake quantizer."""
    shape = [1] * w.ndim
    if grid.axis is not None:
        shape[grid.axis] = -1
    s = np.asarray(grid.scale, np.float32).reshape(shape)
    zp = np.asarray(grid.zero_point, np.float32).reshape(shape)
    return np.clip(np.round(np.asarray(w, np.float32) / s) + zp, grid.qmin, grid.qmax).astype(np.int64)


def _packed_container(grid: IntGrid) -> str:
    return "int4" if grid.qmin < 0 else "uint4"


class _Exporter:
    def __init__(self, graph: gs.Graph, recipe: Recipe, target: Target, weights: WeightStorage):
        self.graph, self.recipe, self.target, self.weights = graph, recipe, target, weights
        self.bits_lost: dict[str, float] = {}

    def _lower(self, s: SiteParams, grid: IntGrid) -> IntGrid:
        """``grid`` as the target stores it: TensorRT, every grid symmetric; ONNX Runtime, an
        asymmetric weight grid of <= 7 bits in int8 ``q - zp`` with zero point 0 too (exact, see
        ``srq.export.symmetric``), so that ORT runs its U8S8 kernels, ~2x faster than the U8U8
        kernels a uint8 weight selects on x86 without VNNI (docs/speed.md); packed weights keep
        their grid."""
        signed_weight = (s.kind == "weight" and self.weights == "int8" and grid.container == "uint8"
                         and s.bits <= 7)
        if self.target == "ort" and not signed_weight:
            return grid
        sym, lost = to_symmetric(grid, weight=s.kind == "weight")
        if self.target == "trt":
            self.bits_lost[s.name] = lost
        return sym

    def weight(self, layer: _Layer, s: SiteParams) -> tuple[IntGrid, np.ndarray]:
        """Integer weight + DQ on ``layer``; returns its grid and the dequantized float32 values (ONNX layout)."""
        const = layer.node.inputs[1]
        if not isinstance(const, gs.Constant):
            raise SrqError(f"site {s.name}: the weight of {layer.node.name} is not a constant")
        axis = 1 if layer.node.op == "MatMul" else 0
        grid = _grid(s, axis=axis)
        q = _quantize_values(np.asarray(const.values), grid)
        low = self._lower(s, grid)
        if low is not grid:
            q = requantize_weight(q, grid, low)
        shape = [1] * q.ndim
        shape[axis] = -1
        dq = ((q.astype(np.float32) - np.asarray(low.zero_point, np.float32).reshape(shape))
              * np.asarray(low.scale, np.float32).reshape(shape))
        if self.weights == "packed" and s.bits <= 4:
            low = IntGrid(low.scale, low.zero_point, low.qmin, low.qmax, _packed_container(low), low.axis)
        dequantize_weight_input(self.graph, layer.node, 1, q, low, s.name)
        return low, dq

    def activation(self, layer: _Layer, s: SiteParams, role: str) -> IntGrid | None:
        """Q/DQ of an input or output site; None where the target leaves it out (see ``_feeds_concat``)."""
        if role in OUTPUT_ROLES and self.target == "trt" and _feeds_concat(layer.output_node):
            self.bits_lost[s.name] = 0.0  # left in float: nothing lost, finer than calibrated
            return None
        grid = self._lower(s, _grid(s))
        if role in OUTPUT_ROLES:
            quantize_activation_output(self.graph, layer.output_node, grid, s.name)
            return grid
        shift = None if s.beta is None else float(s.beta)
        pads = _take_conv_pads(layer.node, s.name) if shift is not None and layer.op == "conv" else None
        quantize_activation_input(self.graph, layer.node, INPUT_ROLES[role], grid, s.name, shift, pads)
        return grid

    def shift(self, layer: _Layer, betas: dict[str, float], w: np.ndarray | None, path: str) -> None:
        """The output-side term of bias-corrected inputs: ``W_q @ beta`` into the bias, or MatMul shift terms."""
        name = f"{path}.beta"
        if layer.op == "matmul":
            add_matmul_shift_terms(self.graph, layer.node, betas.get("input_a"), betas.get("input_b"), name)
            return
        if w is None:
            raise SrqError(f"recipe site {path}.input_q: bias correction needs the layer's weight_q site")
        addend = _beta_fold(layer, w, betas["input_q"])
        if layer.op == "conv" or layer.node.op == "Gemm":
            fold_into_bias(self.graph, layer.node, addend, name)
        elif layer.bias_add is not None:
            i = _const_input(layer.bias_add)
            old = np.asarray(layer.bias_add.inputs[i].values, np.float32)
            layer.bias_add.inputs[i] = gs.Constant(f"{name}_bias", (old + addend).astype(np.float32))
        else:
            layer.bias_add = add_output_constant(self.graph, layer.node, addend, name).inputs[0]

    def bias(self, layer: _Layer, x: IntGrid, w: IntGrid, name: str) -> None:
        step = (np.float32(x.scale) * np.asarray(w.scale, np.float32)).astype(np.float32)
        if layer.op == "conv" or layer.node.op == "Gemm":
            if len(layer.node.inputs) > 2 and isinstance(layer.node.inputs[2], gs.Constant):
                dequantize_bias_input(self.graph, layer.node, 2, step, name)
        elif layer.bias_add is not None:
            dequantize_bias_input(self.graph, layer.bias_add, _const_input(layer.bias_add), step, name)

    def layer(self, layer: _Layer, sites: dict[str, SiteParams], path: str) -> None:
        """Weight, inputs (with their shifts), bias, then the output Q (after everything the output sums)."""
        grids: dict[str, IntGrid] = {}
        w = None
        if "weight_q" in sites:
            grids["weight_q"], w = self.weight(layer, sites["weight_q"])
        betas: dict[str, float] = {}
        for role, s in sites.items():
            if role in INPUT_ROLES:
                grids[role] = self.activation(layer, s, role)
                if s.beta is not None:
                    betas[role] = float(s.beta)
        if betas:
            self.shift(layer, betas, w, path)
        # TensorRT takes no INT32 Q/DQ (lint rule trt-type): its bias stays float, fused by the builder.
        if ("weight_q" in grids and "input_q" in grids and self.recipe.placement.simulate_int32_bias
                and self.target == "ort"):
            self.bias(layer, grids["input_q"], grids["weight_q"], f"{path}.bias_int32")
        for role in OUTPUT_ROLES:
            if role in sites:
                self.activation(layer, sites[role], role)
        if (self.target == "ort" and layer.op == "conv" and self.recipe.placement.simulate_int32_bias
                and _integer_float_output(sites)):
            conv_integer_float_output(self.graph, layer.node, f"{path}.conv_integer")


def _integer_float_output(sites: dict[str, SiteParams]) -> bool:
    """Exported as ``ConvInteger`` with a float output (``srq.export.qdq_nodes.conv_integer_float_output``)?
    calib's rule, ``srq.calib.quantizer.integer_conv_with_float_output``, on the recipe's formats."""
    w, x = sites.get("weight_q"), sites.get("input_q")
    if w is None or x is None:
        return False
    out = sites.get("output")
    return integer_conv_with_float_output(*(None if s is None else QuantFormat(s.bits, s.symmetric, s.narrow)
                                            for s in (w, x, out)))


def _sigmoid_table(scale: float, zero_point: int, qmin: int, qmax: int) -> np.ndarray:
    """calib's ``TableSigmoid`` values for one grid (``srq.calib.quantizer.level_table``)."""
    return level_table(torch.sigmoid, scale, zero_point, qmin, qmax).numpy()


def _gate_levels(scale: float, zero_point: int, qmin: int, qmax: int, gate: SiteParams) -> np.ndarray:
    """calib's integer-gate levels for one input grid (``srq.calib.quantizer.table_levels``)."""
    out = (torch.tensor(float(np.asarray(gate.scale)), dtype=torch.float32),
           torch.tensor(float(np.asarray(gate.zero_point)), dtype=torch.float32))
    return table_levels(torch.sigmoid, scale, zero_point, qmin, qmax, *out, gate.qmin, gate.qmax).numpy()


def _ort_gate_levels(scale: float, zero_point: int, qmin: int, qmax: int, gate: SiteParams) -> np.ndarray:
    """The same levels from ONNX Runtime's ``QLinearSigmoid`` on this machine."""
    # no Clip after the Q: a grid below 8 bits agrees only where the table never leaves it
    return qlinear_sigmoid_levels(scale, zero_point, qmin, qmax, float(np.asarray(gate.scale)),
                                  int(np.asarray(gate.zero_point)))


def _feeds_concat(node: gs.Node) -> bool:
    """Does ``node``'s output go into a Concat?

    A conv-output requantization exists for ONNX Runtime (QLinearConv needs a Q after the
    Conv). TensorRT fuses the conv output itself and wants the inputs of a Concat all
    quantized with one scale or none (else it inserts reformat layers: lint rule
    ``trt-concat-scales``). IMDN concatenates float distilled channels with one conv's
    output, so for ``target="trt"`` such a requantization is left out: the value stays
    float (0 bits lost, finer than what calibration simulated).
    """
    return any(c.op == "Concat" for c in node.outputs[0].outputs)


def _take_conv_pads(conv: gs.Node, site: str) -> list[int] | None:
    """Zero the Conv's explicit ``pads`` and return them in ONNX ``Pad`` order for its input (None: unpadded)."""
    if conv.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        raise SrqError(f"recipe site {site}: bias correction on a Conv with auto_pad is not supported")
    pads = list(conv.attrs.get("pads", []))
    if not any(pads):
        return None
    conv.attrs["pads"] = [0] * len(pads)
    n = len(pads) // 2
    return [0, 0, *pads[:n], 0, 0, *pads[n:]]


def _beta_fold(layer: _Layer, w: np.ndarray, beta: float) -> np.ndarray:
    """``W_q @ beta`` per output channel, float32, with calib's torch expression (``srq.calib.layers``).

    ``w``: dequantized weight in ONNX layout (Conv ``(O, I/g, kh, kw)``, Gemm ``(O, I)``, MatMul ``(I, O)``).
    """
    wt = torch.from_numpy(np.ascontiguousarray(w))
    b = torch.tensor(beta, dtype=torch.float32)
    if layer.op == "conv":
        return (wt.sum(dim=(2, 3)) @ b.expand(wt.shape[1])).numpy()
    if layer.node.op == "MatMul":
        wt = wt.T.contiguous()
    return (wt @ b.expand(wt.shape[1])).numpy()


def recipe_fingerprint(recipe: Recipe) -> str:
    """sha256 over the recipe as written by ``Recipe.save``: JSON bytes then sidecar bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipe.json"
        recipe.save(path)
        return hashlib.sha256(path.read_bytes() + path.with_suffix(".safetensors").read_bytes()).hexdigest()


def _group_sites(recipe: Recipe) -> dict[str, dict[str, SiteParams]]:
    """``{layer path: {role: site}}`` of the Conv / Linear / MatMul sites (gates: ``_gate_sites``; residuals
    and gate products: ``_put_sum_and_product_sites``)."""
    layers: dict[str, dict[str, SiteParams]] = {}
    known = set(INPUT_ROLES) | set(OUTPUT_ROLES) | {"weight_q"}
    for s in recipe.sites:
        if s.op in MODULE_OUTPUT_OPS:
            continue
        path, _, role = s.name.rpartition(".")
        if role not in known:
            raise SrqError(f"recipe site {s.name}: unknown role {role!r} (known: {', '.join(sorted(known))})")
        if s.beta is not None and (role not in INPUT_ROLES or np.ndim(s.beta) != 0):
            raise SrqError(f"recipe site {s.name}: beta is exported on per-tensor layer inputs only "
                           f"(role {role}, beta shape {np.shape(s.beta)})")
        layers.setdefault(path, {})[role] = s
    return layers


def _gate_sites(recipe: Recipe) -> dict[str, SiteParams]:
    """``{sigmoid path: gate site}`` of an integer-gate recipe."""
    gates = {s.name.rpartition(".")[0]: s for s in recipe.sites if s.op == "sigmoid"}
    for s in gates.values():
        if not s.name.endswith(".output") or s.granularity != "tensor" or s.symmetric:
            raise SrqError(f"recipe site {s.name}: a gate is a per-tensor asymmetric <sigmoid>.output site")
    return gates


def _put_gates(graph: gs.Graph, recipe: Recipe, target: Target) -> None:
    """Sigmoids on a requantized conv output (ORT): calib's tables, or with gate sites its integer gates."""
    gates = _gate_sites(recipe)
    sigmoids = [(_scope(n.name), n) for n in graph.nodes if n.op == "Sigmoid"]
    missing = sorted(set(gates) - {path for path, _ in sigmoids})
    if missing:
        raise SrqError(f"recipe gate sites with no Sigmoid in the {recipe.model.arch} ONNX graph: "
                       f"{', '.join(f'{p}.output' for p in missing)}")
    if target != "ort" or not recipe.placement.sigmoid_tables:
        return  # TensorRT: its own sigmoid, float gates
    for i, (path, node) in enumerate(sigmoids):
        gate = gates.get(path)
        if gate is None:
            sigmoid_as_table(graph, node, _sigmoid_table, f"sigmoid_table_{i}")
        else:  # None when the sigmoid does not read a requantized output: the site is inert, as in calib
            sigmoid_as_gate(graph, node, float(np.asarray(gate.scale)), int(np.asarray(gate.zero_point)),
                            lambda *grid, g=gate: _gate_levels(*grid, g),
                            lambda *grid, g=gate: _ort_gate_levels(*grid, g), f"gate_{i}")


def _put_sum_and_product_sites(graph: gs.Graph, recipe: Recipe) -> None:
    """``Q -> [Clip] -> DQ`` on the output of each residual ``Add`` (site ``<residual path>.output``, op ``"add"``),
    requantized gate ``Mul`` (``<gate path>.output``, op ``"mul"``), requantized ``Concat`` (``<concat
    path>.output``, op ``"concat"``) and requantized ``LeakyRelu`` (``<act path>.output``, op ``"leaky_relu"``), in
    front of all its readers: where the inputs are DQs too, ONNX Runtime runs ``QLinearAdd`` / ``QLinearMul`` /
    ``QLinearConcat`` (float parts of a Concat: ``requantize_concat_inputs``) / ``QLinearLeakyRelu``."""
    for op, node_op in ORT_OUTPUT_NODES.items():
        nodes = {_scope(n.name): n for n in graph.nodes if n.op == node_op}
        sites = [s for s in recipe.sites if s.op == op]
        missing = sorted(s.name for s in sites if s.name.rpartition(".")[0] not in nodes)
        if missing:
            raise SrqError(f"recipe {op} sites with no {node_op} in the {recipe.model.arch} ONNX graph: "
                           f"{', '.join(missing)}")
        for s in sites:
            if not s.name.endswith(".output") or s.granularity != "tensor" or s.symmetric:
                raise SrqError(f"recipe site {s.name}: an {op} site is a per-tensor asymmetric <path>.output site")
            quantize_activation_output(graph, nodes[s.name.rpartition(".")[0]], _grid(s), s.name)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_quantized(model: SRModel, recipe: Recipe, target: Target, tile_hw: tuple[int, int],
                     out_path: str | Path, weights: WeightStorage = "int8") -> Path:
    """Write the QDQ ONNX model of ``model`` quantized by ``recipe`` for ``target`` to ``out_path``.

    Input ``lr`` (1, C, H, W) float32 in [0, 1], ``(H, W) = tile_hw`` (multiples of
    ``model.size_multiple``); output ``sr`` (1, C, sH, sW). ``target="trt"`` also writes
    ``<stem>.bits_lost.json`` ({site: effective bits lost}). Nothing is left behind on error.
    """
    if target not in ("ort", "trt") or weights not in ("int8", "packed"):
        raise SrqError(f"export: target {target!r} / weights {weights!r}: choose ort|trt and int8|packed")
    if target == "trt" and weights == "packed":
        raise SrqError("export: TensorRT takes int4 only as block-quantized weights; use --weights int8 for trt")
    m = model.size_multiple
    if tile_hw[0] <= 0 or tile_hw[1] <= 0 or tile_hw[0] % m or tile_hw[1] % m:
        raise SrqError(f"{model.source}: tile {tile_hw[0]}x{tile_hw[1]} is not a multiple of {m} "
                       f"(the {model.arch} size multiple)")
    recipe.check_matches(model)
    ort_only = sorted(s.name for s in recipe.sites if s.op in ORT_OUTPUT_NODES)
    if target == "trt" and ort_only:
        raise SrqError(f"recipe sites {', '.join(ort_only[:3])}{' ...' if len(ort_only) > 3 else ''} requantize "
                       f"residual sums / gate products / concats / activations on asymmetric grids for ONNX Runtime "
                       f"(--integer-residuals, integer gates, --integer-concats, --integer-activations); for TensorRT "
                       f"calibrate with --symmetric")
    layers = _group_sites(recipe)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".qdq_export-") as tmp:
        set_exact_statistics(model.module)  # the quantized model's float64 statistics, as calibrated
        try:
            fp = onnx.load(str(export_fp_onnx(model, tile_hw, Path(tmp) / "fp.onnx")))
        finally:
            set_exact_statistics(model.module, False)
        if weights == "packed" and any(s.kind == "weight" and s.bits <= 4 for s in recipe.sites):
            fp = onnx.version_converter.convert_version(fp, PACKED_OPSET)  # sub-byte types need opset 21
        graph = gs.import_onnx(fp)
        found = _LayerMap(graph)
        matched = {path: found.find(path) for path in layers}
        unmatched = sorted(p for p, layer in matched.items() if layer is None)
        if unmatched:
            names = [s for p in unmatched for s in (f"{p}.{r}" for r in layers[p])]
            raise SrqError(f"recipe sites with no matching node in the {model.arch} ONNX graph: {', '.join(names)}")
        exporter = _Exporter(graph, recipe, target, weights)
        for path, layer in matched.items():
            exporter.layer(layer, layers[path], path)
        if target == "trt":
            float64_to_float32(graph)
        _put_gates(graph, recipe, target)
        _put_sum_and_product_sites(graph, recipe)
        if target == "ort":
            split_levels(graph)
            contrast_from_levels(graph, found.scopes, [p for p, m in model.module.named_modules()
                                                       if isinstance(m, ChannelContrast)])
            requantize_concat_inputs(graph)
            quantize_before_nearest_resize(graph)
        skip_requantization_on_same_grid(graph)
        merge_twin_quantizers(graph)
        proto = gs.export_onnx(graph.cleanup().toposort())
        proto.metadata_props.extend(fp.metadata_props)
        set_metadata(proto, {
            "srq.version": srq.__version__, "srq.recipe_sha256": recipe_fingerprint(recipe),
            "srq.site_bits": json.dumps({s.name: s.bits for s in recipe.sites}),
            "srq.target": target, "srq.weights": weights})
        onnx.checker.check_model(proto)
        _atomic_write(out_path, proto.SerializeToString())
        if target == "trt":
            report = out_path.with_name(f"{out_path.stem}.bits_lost.json")
            try:
                _atomic_write(report, (json.dumps(exporter.bits_lost, indent=1) + "\n").encode())
            except BaseException:
                out_path.unlink(missing_ok=True)
                raise
    return out_path
