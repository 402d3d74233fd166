"""Static checker of a QDQ ONNX model against the Q/DQ rules of ONNX Runtime (CPU) or TensorRT.

Torch-free (onnx + numpy only), so it runs on the deploy side. One ``Violation`` per broken
rule and node; ``str(v)`` is ``node <name>: <rule id>: <what>``. Each rule cites its source.
Written here because neither Polygraphy nor onnx's checker knows these runtime rules
(Polygraphy checks ONNX validity, not where an engine fuses Q/DQ).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

Target = Literal["ort", "trt"]
QUANT_OPS = ("QuantizeLinear", "DequantizeLinear")
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
SUB_BYTE = {TensorProto.INT4, TensorProto.UINT4, TensorProto.INT2, TensorProto.UINT2}
TWO_BIT = {TensorProto.INT2, TensorProto.UINT2}


@dataclass(frozen=True)
class Violation:
    node: str
    rule: str
    what: str

    def __str__(self) -> str:
        return f"node {self.node}: {self.rule}: {self.what}"


class _Graph:
    """Lookup tables over one ONNX graph: constants, producers, consumers, Q/DQ types."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.nodes = list(g.node)
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.const_types: dict[str, int] = {t.name: t.data_type for t in g.initializer}
        for n in self.nodes:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
                self.const_types[n.output[0]] = n.attribute[0].t.data_type
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in self.nodes:
            for i in n.input:
                self.consumers[i].append(n)
        self.graph_outputs = {o.name for o in g.output}

    def name(self, node: onnx.NodeProto) -> str:
        return node.name or f"{node.op_type}({node.output[0]})"

    def attr(self, node: onnx.NodeProto, key: str, default=None):
        for a in node.attribute:
            if a.name == key:
                return onnx.helper.get_attribute_value(a)
        return default

    def qtype(self, node: onnx.NodeProto) -> int | None:
        """Integer type of a Q output / DQ input: the zero point's type (uint8 when absent)."""
        if len(node.input) > 2 and node.input[2]:
            return self.const_types.get(node.input[2])
        if node.op_type == "DequantizeLinear":
            return self.const_types.get(node.input[0], TensorProto.UINT8)
        return TensorProto.UINT8

    def dq_input(self, node: onnx.NodeProto, index: int) -> onnx.NodeProto | None:
        """The DequantizeLinear feeding ``node.input[index]`` (looking through an integer Clip is not needed)."""
        if index >= len(node.input) or not node.input[index]:
            return None
        p = self.producer.get(node.input[index])
        return p if p is not None and p.op_type == "DequantizeLinear" else None

    def is_weight_dq(self, dq: onnx.NodeProto) -> bool:
        return dq.input[0] in self.consts


def _tname(t: int | None) -> str:
    return TensorProto.DataType.Name(t) if t is not None else "unknown"


def _check_qparams(g: _Graph, node: onnx.NodeProto, out: list[Violation]) -> None:
    """Both runtimes: scale / zero point are initializers; scale positive and finite.

    Sources: TensorRT "Quantize" / "Dequantize" operator pages (scale must be a positive
    build-time constant: docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/Quantize.html);
    ONNX Runtime qdq_util.cc ``IsQOrDQScalePositiveConstantScalar`` / ``IsDQSupported`` (constant
    scale and zero point required for QDQ node units).
    """
    name = g.name(node)
    scale = g.consts.get(node.input[1])
    if scale is None:
        out.append(Violation(name, "scale-constant", f"scale {node.input[1]!r} is not an initializer"))
    elif not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        out.append(Violation(name, "scale-positive", f"scale {node.input[1]!r} has values <= 0 or not finite"))
    if len(node.input) > 2 and node.input[2] and node.input[2] not in g.consts:
        out.append(Violation(name, "zero-point-constant", f"zero point {node.input[2]!r} is not an initializer"))


def _check_trt_qdq(g: _Graph, node: onnx.NodeProto, out: list[Violation]) -> None:
    """TensorRT types and zero points of one Q/DQ node.

    Sources: TensorRT "Working with Quantized Types" (docs.nvidia.com/deeplearning/tensorrt/latest/
    inference-library/work-quantized-types.html): INT8 activations and weights, INT4 only for
    weight-only block quantization, no INT2/INT3, no UINT8 (except DLA); "Quantize" operator page:
    zero point must be a constant of zeros.
    """
    name = g.name(node)
    zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if zp_name in g.consts and np.any(g.consts[zp_name].astype(np.int64) != 0):
        out.append(Violation(name, "trt-zero-point", "TensorRT requires zero point 0 (symmetric quantization)"))
    t = g.qtype(node)
    weight = node.op_type == "DequantizeLinear" and g.is_weight_dq(node)
    if t == TensorProto.INT8:
        return
    if t == TensorProto.INT4 and weight and g.attr(node, "block_size", 0) > 0:
        return
    what = ("INT4 only as a block-quantized weight (DequantizeLinear block_size)" if t == TensorProto.INT4
            else "no UINT8/INT2/UINT2/UINT4 types; activations must be INT8")
    out.append(Violation(name, "trt-type", f"{_tname(t)} {'weight' if weight else 'activation'}: {what}"))


def _weight_axis(g: _Graph, op: onnx.NodeProto, rank: int) -> int | None:
    """Output-channel axis of the weight input of ``op`` (TensorRT: per-channel along K)."""
    if op.op_type == "Conv":
        return 0
    if op.op_type == "ConvTranspose":
        return 1
    if op.op_type == "Gemm":
        return 0 if g.attr(op, "transB", 0) else 1
    return rank - 1  # MatMul B[..., K, N]: per output column


def _check_compute(g: _Graph, op: onnx.NodeProto, target: Target, out: list[Violation]) -> None:
    name = g.name(op)
    dqs = [g.dq_input(op, i) for i in range(2)]
    if not any(dqs):
        return
    # Both targets: a Conv/MatMul/Gemm runs quantized only with BOTH data inputs quantized.
    # TensorRT developer guide, "Q/DQ Layer-Placement Recommendations" (quantize all inputs of
    # weighted ops); ORT qdq_selectors.cc ConvNodeGroupSelector / MatMulNodeGroupSelector
    # (num DQ inputs must equal the op's inputs).
    if not all(dqs):
        missing = "input" if dqs[0] is None else "weight"
        out.append(Violation(name, "qdq-both-inputs", f"{missing} is not quantized (no DequantizeLinear)"))
        return
    w_dq = dqs[1]
    w_scale = g.consts.get(w_dq.input[1])
    if g.is_weight_dq(w_dq) and w_scale is not None and w_scale.ndim == 1 and w_scale.size > 1:
        rank = g.consts[w_dq.input[0]].ndim
        axis = g.attr(w_dq, "axis", 1) % rank
        expected = _weight_axis(g, op, rank)
        # TensorRT "Quantize" op page + ORT qdq docs: per-channel weight scales along the
        # output-channel axis (Conv axis 0; MatMul/Gemm the N axis).
        if axis != expected:
            out.append(Violation(name, "weight-axis", f"per-channel weight axis {axis}, expected {expected}"))
    if target == "ort":
        _check_ort_fusion(g, op, dqs, out)


def _check_ort_fusion(g: _Graph, op: onnx.NodeProto, dqs: list[onnx.NodeProto], out: list[Violation]) -> None:
    """Whether ORT's CPU QDQ selectors turn ``op`` into an integer kernel.

    Source: onnxruntime/core/optimizer/qdq_transformer/selectors_actions/qdq_selectors.cc
    (ConvNodeGroupSelector, MatMulNodeGroupSelector, GemmNodeGroupSelector, CheckQDQNodes), and
    the measurements in docs/export-ort-fusion.md.
    """
    name = g.name(op)
    t_in, t_w = g.qtype(dqs[0]), g.qtype(dqs[1])
    if t_in in SUB_BYTE or t_w in SUB_BYTE:
        rule = "ort-2bit-type" if (t_in in TWO_BIT or t_w in TWO_BIT) else "ort-subbyte-type"
        what = ("2-bit types break ORT session creation" if rule == "ort-2bit-type"
                else "4-bit types are not fused by ORT's CPU selectors")
        out.append(Violation(name, rule, f"{_tname(t_in)} x {_tname(t_w)}: {what}; use 8-bit containers + integer Clip"))
        return
    if t_in == TensorProto.INT8 and t_w != TensorProto.INT8:
        out.append(Violation(name, "ort-signedness", "int8 activations need int8 weights (qdq_selectors.cc)"))
    outs = g.consumers[op.output[0]]
    output_q = bool(outs) and all(c.op_type == "QuantizeLinear" for c in outs) and op.output[0] not in g.graph_outputs
    if output_q and g.qtype(outs[0]) != t_in:
        out.append(Violation(name, "ort-output-type", "output Q type differs from the input DQ type"))
    if op.op_type in ("Conv", "ConvTranspose") and not output_q:
        out.append(Violation(name, "ort-conv-output-q", "Conv output must feed only QuantizeLinear nodes to run "
                                                        "as QLinearConv (ConvNodeGroupSelector)"))
    if op.op_type == "Gemm" and len(op.input) > 2 and op.input[2]:
        bias_dq = g.dq_input(op, 2)
        if not output_q and (bias_dq is None or g.qtype(bias_dq) != TensorProto.INT32):
            out.append(Violation(name, "ort-gemm-bias", "Gemm without output Q needs DQ(int32) bias for QGemm"))
    if op.op_type == "MatMul" and not output_q and g.is_weight_dq(dqs[1]):
        # MatMul + Add(bias) is fused to Gemm before the QDQ selectors run: the bias must then be
        # DQ(int32) (GemmNodeGroupSelector), else the Linear stays float (measured).
        adds = [c for c in outs if c.op_type == "Add"]
        for add in adds:
            other = [i for i in add.input if i != op.output[0]]
            bias_dq = g.producer.get(other[0]) if other else None
            if other and other[0] in g.consts or (bias_dq is not None and bias_dq.op_type == "DequantizeLinear"
                                                   and g.qtype(bias_dq) != TensorProto.INT32):
                out.append(Violation(name, "ort-linear-bias", "Linear (MatMul + Add) without output Q needs its "
                                                              "bias as DQ(int32) to run as QGemm"))


def _scales_equal(g: _Graph, a: onnx.NodeProto, b: onnx.NodeProto) -> bool:
    sa, sb = g.consts.get(a.input[1]), g.consts.get(b.input[1])
    za = g.consts.get(a.input[2]) if len(a.input) > 2 else None
    zb = g.consts.get(b.input[2]) if len(b.input) > 2 else None
    same = sa is not None and sb is not None and sa.shape == sb.shape and np.array_equal(sa, sb)
    return same and (za is None) == (zb is None) and (za is None or np.array_equal(za, zb))


def _check_trt_concat(g: _Graph, node: onnx.NodeProto, out: list[Violation]) -> None:
    """TensorRT: quantized Concat inputs must share one scale (else reformat layers are inserted).

    Source: TensorRT developer guide, "Explicit Quantization" Q/DQ placement figures (concat
    with Q/DQ inputs); NVIDIA Model Optimizer modelopt/onnx/quantization/int8.py concat handling.
    """
    dqs = [g.producer.get(i) for i in node.input]
    quantized = [d for d in dqs if d is not None and d.op_type == "DequantizeLinear"]
    if quantized and len(quantized) != len(dqs):
        out.append(Violation(g.name(node), "trt-concat-scales", "some Concat inputs are quantized and some are not"))
    elif any(not _scales_equal(g, quantized[0], d) for d in quantized[1:]):
        out.append(Violation(g.name(node), "trt-concat-scales", "quantized Concat inputs have different scales"))


def _check_trt_residual_add(g: _Graph, node: onnx.NodeProto, out: list[Violation]) -> None:
    """TensorRT: Conv + residual Add fuses only if the residual branch is Q/DQ'd.

    Source: TensorRT developer guide, "Q/DQ Layer-Placement Recommendations" (quantize the
    residual input of an element-wise addition fused into a convolution; no Q/DQ between the
    conv and the add).
    """
    producers = [g.producer.get(i) for i in node.input]
    for k, p in enumerate(producers):
        if p is None or p.op_type != "Conv" or g.dq_input(p, 0) is None:
            continue
        other = producers[1 - k] if len(producers) == 2 else None
        if other is None or other.op_type != "DequantizeLinear":
            out.append(Violation(g.name(node), "trt-residual-add", f"residual input of the Add after quantized "
                                                                 f"{g.name(p)} is not quantized"))
            return


def lint_model(model: onnx.ModelProto, target: Target) -> list[Violation]:
    """All rule violations of ``model`` for ``target`` (``"ort"`` CPU or ``"trt"``), in graph order."""
    if target not in ("ort", "trt"):
        raise ValueError(f"unknown target {target!r}")
    g = _Graph(model)
    out: list[Violation] = []
    for node in g.nodes:
        if node.op_type in QUANT_OPS:
            _check_qparams(g, node, out)
            if target == "trt":
                _check_trt_qdq(g, node, out)
        elif node.op_type in COMPUTE_OPS:
            _check_compute(g, node, target, out)
        elif target == "trt" and node.op_type == "Concat":
            _check_trt_concat(g, node, out)
        elif target == "trt" and node.op_type == "Add":
            _check_trt_residual_add(g, node, out)
        elif target == "trt" and node.op_type == "Cast" and g.attr(node, "to") == TensorProto.DOUBLE:
            # onnx-tensorrt operators.md (TensorRT 10): "limited support for DOUBLE type. TensorRT
            # will attempt to cast DOUBLE down to FLOAT": the engine would not compute what the
            # graph says; srq's TensorRT export does that cast itself (srq.export.float64).
            out.append(Violation(g.name(node), "trt-float64", "Cast to DOUBLE: TensorRT computes float64 "
                                 "in float32; export for --target trt"))
    return out
