"""Integer channel statistics: a per-channel contrast (``srq.zoo.ChannelContrast``, IMDN's attention input)
summed from the stored levels of a tensor on a grid, for ONNX Runtime.

Where the contrast reads a ``DequantizeLinear`` output (a requantized ``Concat``, ``placement.integer_concats``),
its float64 subgraph (cast, mean, centred squares, mean: ~3 ms per IMDN block at a 128x128 tile, docs/speed.md)
is replaced by sums of the uint8 levels ``q``:

    Transpose to NHWC (cancels against ORT's own layout change) -> Reshape (N, n/k, k, C) -> Cast float32
    -> sums over k of the levels and of their squares (exact: every partial sum is an integer below
    k * 255^2 < 2^24) -> Cast float64 -> ReduceSum over n/k (exact below 2^53) -> S1, S2 of shape (N, C)

and then the float64 arithmetic of ``srq.calib.layers.level_contrast`` on those exact sums (``m = S1 / n``,
``v = S2 / n - m m``, ``mean = (m - zp) s``, ``var = v (s s)``), rounded to float32 once, and
``sqrt(max(var, 0)) + mean`` in float32, the root taken in float64 and rounded (the correctly rounded float32
root, which neither ORT's nor PyTorch's float32 Sqrt kernel is). Every value is
thus what calibration computes, bit for bit, in any summation order.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto

from srq.errors import SrqError
from srq.export.qdq_nodes import producer, rewire

_FLOAT32_EXACT_CHUNK = (2**24 - 1) // 255**2  # 258 levels of at most 255 squared sum exactly in float32


def _chunk(n: int) -> int:
    """The largest divisor of ``n`` that is at most ``_FLOAT32_EXACT_CHUNK``."""
    return max(k for k in range(1, min(n, _FLOAT32_EXACT_CHUNK) + 1) if n % k == 0)


class _Builder:
    """Appends nodes to ``graph`` under one name prefix: ``b(op, inputs, dtype, **attrs)`` -> the output."""

    def __init__(self, graph: gs.Graph, name: str):
        self.graph, self.name, self.count = graph, name, 0

    def __call__(self, op: str, inputs: list, dtype, **attrs) -> gs.Variable:
        self.count += 1
        out = gs.Variable(f"{self.name}_{op}{self.count}", dtype=dtype)
        self.graph.nodes.append(gs.Node(op, f"{self.name}/{op}_{self.count}", attrs, inputs, [out]))
        return out

    def const(self, values) -> gs.Constant:
        self.count += 1
        return gs.Constant(f"{self.name}_c{self.count}", np.asarray(values))


def _level_sums(b: _Builder, q: gs.Tensor, shape: list[int]) -> tuple[gs.Variable, gs.Variable]:
    """``(S1, S2)``: per-channel sums of the uint8 ``q`` ``(N, C, H, W)`` and of its squares, float64 ``(N, C)``.

    The chunk sums are float32 ``MatMul`` s of a row of ones with the ``(k, C)`` chunks (and their squares), which
    ORT runs as a GEMM: 0.4 ms per 64x128x128 tensor on one core, against 1.0 ms for ReduceSum + ReduceSumSquare
    (measured on this project's AVX-512 machine), and exact in any order for the same reason as the reductions.
    """
    n_batch, channels, height, width = shape
    k = _chunk(height * width)
    nhwc = b("Transpose", [q], np.uint8, perm=[0, 2, 3, 1])
    chunks = b("Reshape", [nhwc, b.const(np.int64([n_batch, -1, k, channels]))], np.uint8)
    values = b("Cast", [chunks], np.float32, to=TensorProto.FLOAT)
    ones = b.const(np.ones((1, k), np.float32))
    sums = []
    for x in (values, b("Mul", [values, values], np.float32)):
        part = b("MatMul", [ones, x], np.float32)  # (N, n / k, 1, C)
        wide = b("Cast", [part], np.float64, to=TensorProto.DOUBLE)
        sums.append(b("ReduceSum", [wide, b.const(np.int64([1, 2]))], np.float64, keepdims=0))
    return sums[0], sums[1]


def _contrast_of_levels(b: _Builder, q: gs.Tensor, scale: float, zero_point: int, shape: list[int]) -> gs.Variable:
    s1, s2 = _level_sums(b, q, shape)
    n = np.float64(shape[2] * shape[3])
    m = b("Div", [s1, b.const(n)], np.float64)
    v = b("Sub", [b("Div", [s2, b.const(n)], np.float64), b("Mul", [m, m], np.float64)], np.float64)
    s = np.float64(np.float32(scale))
    mean = b("Mul", [b("Sub", [m, b.const(np.float64(zero_point))], np.float64), b.const(s)], np.float64)
    var = b("Mul", [v, b.const(s * s)], np.float64)
    mean, var = (b("Cast", [t], np.float32, to=TensorProto.FLOAT) for t in (mean, var))
    # float32 sqrt, correctly rounded: via float64 (ORT's float32 Sqrt kernel is an ulp off now and then)
    wide = b("Cast", [b("Max", [var, b.const(np.float32(0))], np.float32)], np.float64, to=TensorProto.DOUBLE)
    std = b("Cast", [b("Sqrt", [wide], np.float64)], np.float32, to=TensorProto.FLOAT)
    out = b("Add", [std, mean], np.float32)
    return b("Reshape", [out, b.const(np.int64([shape[0], shape[1], 1, 1]))], np.float32)


def _scalar(t: gs.Tensor) -> float | None:
    return float(np.asarray(t.values)) if isinstance(t, gs.Constant) and np.asarray(t.values).size == 1 else None


def contrast_from_levels(graph: gs.Graph, scopes: dict[str, list[gs.Node]], paths: list[str]) -> int:
    """Replace each ``ChannelContrast`` subgraph (module ``paths``; ``scopes``: module path -> its nodes) whose
    input is a per-tensor uint8 ``DequantizeLinear`` output by integer sums of the DQ's levels (see the module
    docstring). Returns the number replaced; the old nodes are dropped (``graph.cleanup``)."""
    replaced = 0
    for path in paths:
        nodes = scopes.get(path, [])
        inside = {id(n) for n in nodes}
        inputs = {id(t): t for n in nodes for t in n.inputs  # data, not constants (a version converter's too)
                  if isinstance(t, gs.Variable) and not any(id(p) in inside or p.op == "Constant" for p in t.inputs)}
        outputs = [t for n in nodes for t in n.outputs if any(id(c) not in inside for c in t.outputs)]
        if len(inputs) != 1 or len(outputs) != 1:
            raise SrqError(f"channel contrast {path}: expected one input and one output in the ONNX graph, found "
                           f"{len(inputs)} and {len(outputs)}")
        (x,), (old,) = inputs.values(), outputs
        dq = producer(x, "DequantizeLinear")
        if dq is None:
            continue
        scale, zero = _scalar(dq.inputs[1]), dq.inputs[2] if len(dq.inputs) > 2 else None
        if scale is None or zero is None or _scalar(zero) is None or np.asarray(zero.values).dtype != np.uint8:
            continue
        if x.shape is None or len(x.shape) != 4 or not all(isinstance(d, int) for d in x.shape):
            raise SrqError(f"channel contrast {path}: the input {x.name} has no static (N, C, H, W) shape")
        new = _contrast_of_levels(_Builder(graph, f"{path}.levels"), dq.inputs[0], scale, int(_scalar(zero)),
                                  list(x.shape))
        rewire(list(old.outputs), old, new)
        replaced += 1
    if replaced:
        graph.cleanup()
    return replaced
