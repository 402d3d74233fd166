"""Q/DQ insertion primitives: one small function per pattern over an onnx-graphsurgeon ``gs.Graph``.

Each function edits the graph in place (graphsurgeon's model: nodes and tensors are plain
objects) and returns the tensor it created; callers run ``graph.cleanup().toposort()`` once
at the end. Patterns:

* activation site on ONE consumer input: ``[Pad(0)] -> [Sub(beta)] -> QuantizeLinear(s, zp) ->
  [Clip(qmin, qmax) on the integer tensor, only when the grid is narrower than the container] ->
  DequantizeLinear``; other consumers of the same producer keep the float tensor (shared producers
  stay exact). ``Sub`` is a bias-corrected site's shift, ``Pad`` a zero-padded Conv's padding moved
  in front of that shift (the caller zeroes the Conv's ``pads``);
* activation site on a node's OUTPUT (``quantize_activation_output``): the same chain in front of
  all consumers (a Conv output Q, which ONNX Runtime's QLinearConv selector needs);
* weight site: integer initializer (uint8/int8 container, or packed int4/uint4/int2/uint2)
  -> ``DequantizeLinear`` (per-channel ``axis``) -> consumer;
* bias as ``DequantizeLinear(int32, s_x * s_w)`` (what ONNX Runtime's QLinearConv / QGemm
  selectors require, see docs/export-ort-fusion.md);
* a quantized Conv without output Q rewritten as ``ConvInteger -> Add(int32 bias) -> Cast -> Mul``
  (exact integer conv with a float output; ``conv_integer_float_output``);
* an exact per-output-channel addend folded into a bias, or an explicit ``Add`` of a constant
  on a node's output (bias correction: ``W_q @ beta``);
* the shift terms of a MatMul whose inputs were quantized as ``Q(a - beta_a)``, ``Q(b - beta_b)``:
  ``A' B' + beta_a colsum(B') + beta_b rowsum(A') + K beta_a beta_b`` (the MatMul stays integer);
* ``DQ -> Sigmoid`` on a requantized output as a table lookup (``sigmoid_as_table``), or on the
  uint8 gate grid (``sigmoid_as_gate``);
* the parts of a Concat requantized on the grid that reads it (``requantize_concat_inputs``);
* model ``metadata_props``.

Packed sub-byte initializers are built with ``onnx.numpy_helper.from_array`` on ``ml_dtypes``
arrays, because graphsurgeon's ``Constant(export_dtype=...)`` converts only from float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues

# Integer containers: numpy dtype used to hold the values, ONNX type, representable range.
CONTAINERS: dict[str, tuple[type, int, int, int]] = {
    "uint8": (np.uint8, onnx.TensorProto.UINT8, 0, 255),
    "int8": (np.int8, onnx.TensorProto.INT8, -128, 127),
    "uint4": (ml_dtypes.uint4, onnx.TensorProto.UINT4, 0, 15),
    "int4": (ml_dtypes.int4, onnx.TensorProto.INT4, -8, 7),
    "uint2": (ml_dtypes.uint2, onnx.TensorProto.UINT2, 0, 3),
    "int2": (ml_dtypes.int2, onnx.TensorProto.INT2, -2, 1),
    "int32": (np.int32, onnx.TensorProto.INT32, -(2**31), 2**31 - 1),
}


@dataclass(frozen=True)
class IntGrid:
    """Integer grid ``q = clamp(round_half_even(x / scale) + zero_point, qmin, qmax)``.

    ``scale`` float32 and ``zero_point`` int: scalar (per-tensor) or 1-D ``[C]`` along ``axis``.
    ``container``: a key of ``CONTAINERS`` holding ``[qmin, qmax]``.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    qmin: int
    qmax: int
    container: str
    axis: int | None = None

    def __post_init__(self) -> None:
        lo, hi = CONTAINERS[self.container][2:]
        if not lo <= self.qmin < self.qmax <= hi:
            raise ValueError(f"grid [{self.qmin}, {self.qmax}] does not fit the {self.container} container")
        if np.shape(self.scale) != np.shape(self.zero_point):
            raise ValueError("scale and zero_point shapes differ")
        if (np.ndim(self.scale) == 1) != (self.axis is not None):
            raise ValueError("a 1-D scale needs an axis, a scalar scale none")

    @property
    def narrower_than_container(self) -> bool:
        lo, hi = CONTAINERS[self.container][2:]
        return (self.qmin, self.qmax) != (lo, hi)


def int_constant(name: str, values: np.ndarray, container: str) -> gs.Constant:
    """Initializer of integer ``values`` stored as ``container`` (sub-byte types packed two/four per byte)."""
    dtype, _, lo, hi = CONTAINERS[container]
    values = np.asarray(values)
    if values.size and (values.min() < lo or values.max() > hi):
        raise ValueError(f"{name}: values outside the {container} range [{lo}, {hi}]")
    if container in ("uint8", "int8", "int32"):
        return gs.Constant(name, values.astype(dtype))
    return gs.Constant(name, LazyValues(onnx.numpy_helper.from_array(values.astype(dtype), name)))


def _qparams(grid: IntGrid, name: str) -> tuple[gs.Constant, gs.Constant]:
    scale = gs.Constant(f"{name}_scale", np.asarray(grid.scale, dtype=np.float32))
    zero_point = int_constant(f"{name}_zero_point", np.asarray(grid.zero_point), grid.container)
    return scale, zero_point


def _axis_attrs(grid: IntGrid) -> dict[str, int]:
    return {} if grid.axis is None else {"axis": int(grid.axis)}


def _qdq_chain(graph: gs.Graph, x: gs.Tensor, grid: IntGrid, name: str, shift: float | None = None,
               pads: list[int] | None = None) -> gs.Variable:
    """Append ``[Pad(pads, 0)] -> [Sub(shift)] -> Q(x) -> [integer Clip] -> DQ`` nodes to ``graph``;
    returns the DQ output (nothing rewired). ``pads``: ONNX ``Pad`` order (begins then ends, all axes)."""
    scale, zero_point = _qparams(grid, name)
    nodes = []
    if pads is not None and any(pads):
        padded = gs.Variable(f"{name}_padded", dtype=np.float32)
        nodes.append(gs.Node("Pad", f"{name}_Pad", attrs={"mode": "constant"}, inputs=[
            x, gs.Constant(f"{name}_pads", np.asarray(pads, np.int64)),
            gs.Constant(f"{name}_pad_value", np.array(0.0, np.float32))], outputs=[padded]))
        x = padded
    if shift is not None:
        shifted = gs.Variable(f"{name}_shifted", dtype=np.float32, shape=x.shape)
        nodes.append(gs.Node("Sub", f"{name}_Sub", inputs=[
            x, gs.Constant(f"{name}_beta", np.array(shift, np.float32))], outputs=[shifted]))
        x = shifted
    q = gs.Variable(f"{name}_q", dtype=CONTAINERS[grid.container][0], shape=x.shape)
    nodes.append(gs.Node("QuantizeLinear", f"{name}_QuantizeLinear", attrs=_axis_attrs(grid),
                         inputs=[x, scale, zero_point], outputs=[q]))
    if grid.narrower_than_container:
        clipped = gs.Variable(f"{name}_q_clipped", dtype=q.dtype, shape=x.shape)
        nodes.append(gs.Node("Clip", f"{name}_Clip", inputs=[
            q, int_constant(f"{name}_qmin", np.array(grid.qmin), grid.container),
            int_constant(f"{name}_qmax", np.array(grid.qmax), grid.container)], outputs=[clipped]))
        q = clipped
    y = gs.Variable(f"{name}_dq", dtype=np.float32, shape=x.shape)
    nodes.append(gs.Node("DequantizeLinear", f"{name}_DequantizeLinear", attrs=_axis_attrs(grid),
                         inputs=[q, scale, zero_point], outputs=[y]))
    graph.nodes.extend(nodes)
    return y


def quantize_activation_input(graph: gs.Graph, consumer: gs.Node, input_index: int, grid: IntGrid,
                              name: str, shift: float | None = None, pads: list[int] | None = None) -> gs.Variable:
    """Insert ``[Pad] -> [Sub(shift)] -> Q -> [Clip] -> DQ`` on ``consumer.inputs[input_index]`` only;
    returns the DQ output.

    The ``Clip`` acts on the integer tensor (bounds of the container type), so the producer's
    ``... -> Q`` pattern stays intact for ONNX Runtime's QDQ fusion. ``shift``: a bias-corrected
    site's beta (the consumer then sees ``Q(x - beta)``); ``pads``: zero padding applied first
    (ONNX ``Pad`` order), for a Conv whose own ``pads`` the caller removes.
    """
    y = _qdq_chain(graph, consumer.inputs[input_index], grid, name, shift, pads)
    consumer.inputs[input_index] = y
    return y


def dequantize_weight_input(graph: gs.Graph, consumer: gs.Node, input_index: int, q_values: np.ndarray,
                            grid: IntGrid, name: str) -> gs.Variable:
    """Replace ``consumer.inputs[input_index]`` by ``DQ(q_values)``; ``q_values`` integers on ``grid``.

    ``q_values`` has the float weight's shape; ``grid.axis`` is the per-channel axis of that shape.
    """
    if q_values.min() < grid.qmin or q_values.max() > grid.qmax:
        raise ValueError(f"{name}: quantized weight outside [{grid.qmin}, {grid.qmax}]")
    old = consumer.inputs[input_index]
    if tuple(old.shape) != q_values.shape:
        raise ValueError(f"{name}: quantized weight shape {q_values.shape} != {tuple(old.shape)}")
    scale, zero_point = _qparams(grid, name)
    y = gs.Variable(f"{name}_dq", dtype=np.float32, shape=q_values.shape)
    graph.nodes.append(gs.Node("DequantizeLinear", f"{name}_DequantizeLinear", attrs=_axis_attrs(grid), inputs=[
        int_constant(f"{name}_quantized", q_values, grid.container), scale, zero_point], outputs=[y]))
    consumer.inputs[input_index] = y
    return y


def dequantize_bias_input(graph: gs.Graph, consumer: gs.Node, bias_index: int, bias_scale: np.ndarray,
                          name: str) -> gs.Variable:
    """Replace a float bias constant by ``DQ(int32 round_half_even(b / bias_scale))``, zp 0, axis 0.

    ``bias_scale``: float32 ``s_x * s_w``, scalar or ``[C_out]``; values saturate to int32.
    """
    bias = np.asarray(consumer.inputs[bias_index].values, dtype=np.float32)
    step = np.broadcast_to(np.asarray(bias_scale, dtype=np.float32), bias.shape)
    q = np.clip(np.round(bias / step), -(2.0**31), 2.0**31 - 1).astype(np.int32)
    y = gs.Variable(f"{name}_dq", dtype=np.float32, shape=bias.shape)
    graph.nodes.append(gs.Node("DequantizeLinear", f"{name}_DequantizeLinear", attrs={"axis": 0}, inputs=[
        gs.Constant(f"{name}_quantized", q), gs.Constant(f"{name}_scale", step.copy()),
        gs.Constant(f"{name}_zero_point", np.zeros(bias.shape, np.int32))], outputs=[y]))
    consumer.inputs[bias_index] = y
    return y


def fold_into_bias(graph: gs.Graph, consumer: gs.Node, addend: np.ndarray, name: str) -> gs.Constant:
    """Add a per-output-channel ``addend[C_out]`` to a Conv/Gemm's float bias (input 2), creating it if absent.

    Exact for any ``consumer`` whose output is ``op(x) + bias``: the caller decides that the
    addend is a constant per channel (Linear; Conv without zero padding).
    """
    addend = np.asarray(addend, dtype=np.float32)
    if len(consumer.inputs) > 2 and consumer.inputs[2].name:
        old = consumer.inputs[2]
        if not isinstance(old, gs.Constant):
            raise ValueError(f"{consumer.name}: bias is not a constant, cannot fold {name}")
        values = np.asarray(old.values, dtype=np.float32) + addend
    else:
        values = addend.copy()
    bias = gs.Constant(f"{name}_bias", values)
    while len(consumer.inputs) < 3:
        consumer.inputs.append(gs.Variable.empty())
    consumer.inputs[2] = bias
    return bias


def conv_integer_float_output(graph: gs.Graph, conv: gs.Node, name: str) -> gs.Node:
    """Rewrite ``DQ(x_q) , DQ(w_q) [, DQ(int32 bias)] -> Conv`` (no output Q) as an exact integer conv.

    ``ConvInteger(x_q, w_levels + 128 as uint8, zp_x, 128) -> [Add(int32 bias)] -> Cast(float)
    -> Mul(float32 s_x * s_w)``, writing the Conv's own output tensor; returns the ConvInteger.
    The int32 accumulator is exact, so the only roundings are the Cast and the Mul, which
    ``srq.calib.layers`` reproduces bit for bit. ONNX Runtime's ConvInteger takes one weight
    zero point, hence the levels ``q - zp`` (which must fit int8) stored as uint8 with zero
    point 128; its uint8-weight kernel is also the faster one (measured: ~4x the int8 one).
    """
    dqs = [t.inputs[0] if t.inputs else None for t in conv.inputs if t.name]  # x, w [, bias]
    if any(dq is None or dq.op != "DequantizeLinear" for dq in dqs):
        raise ValueError(f"{conv.name}: ConvInteger needs dequantized input, weight and bias")
    dq_x, dq_w, dq_b = (dqs + [None])[:3]
    q_x, s_x, zp_x = dq_x.inputs[:3]
    q_w, s_w, zp_w = (np.asarray(t.values) for t in dq_w.inputs[:3])
    if zp_x.values.dtype != np.uint8:
        raise ValueError(f"{conv.name}: ConvInteger here takes uint8 activations")
    levels = q_w.astype(np.int32) - zp_w.astype(np.int32).reshape(-1, *([1] * (q_w.ndim - 1)))
    if levels.min() < -128 or levels.max() > 127:
        raise ValueError(f"{conv.name}: weight levels q - zp outside int8, no exact ConvInteger")
    channel = (1, -1) + (1,) * (q_w.ndim - 2)
    step = (np.float32(s_x.values) * np.asarray(s_w, np.float32)).astype(np.float32)
    out = conv.outputs[0]
    acc = gs.Variable(f"{name}_acc", dtype=np.int32)
    node = gs.Node("ConvInteger", f"{name}_ConvInteger", attrs=dict(conv.attrs), inputs=[
        q_x, gs.Constant(f"{name}_weight_u8", (levels + 128).astype(np.uint8)), zp_x,
        gs.Constant(f"{name}_weight_zero_point", np.array(128, np.uint8))], outputs=[acc])
    nodes = [node]
    if dq_b is not None:
        summed = gs.Variable(f"{name}_acc_bias", dtype=np.int32)
        bias = np.asarray(dq_b.inputs[0].values, np.int32).reshape(channel)
        nodes.append(gs.Node("Add", f"{name}_AddBias", inputs=[acc, gs.Constant(f"{name}_bias_i32", bias)],
                             outputs=[summed]))
        acc = summed
    as_float = gs.Variable(f"{name}_acc_float", dtype=np.float32)
    nodes.append(gs.Node("Cast", f"{name}_Cast", attrs={"to": onnx.TensorProto.FLOAT}, inputs=[acc],
                         outputs=[as_float]))
    nodes.append(gs.Node("Mul", f"{name}_Scale", inputs=[
        as_float, gs.Constant(f"{name}_step", step.reshape(channel))],
        outputs=[out]))
    conv.outputs.clear()
    conv.inputs.clear()
    graph.nodes.extend(nodes)
    return node


def _table_input(sigmoid: gs.Node) -> tuple[gs.Tensor, float, gs.Constant, int, int] | None:
    """``(q, scale, zero_point, qmin, qmax)`` of the ``Q -> [Clip] -> DQ`` (per-tensor) a Sigmoid reads, else None."""
    dq = sigmoid.inputs[0].inputs[0] if sigmoid.inputs[0].inputs else None
    if dq is None or dq.op != "DequantizeLinear" or dq.attrs.get("axis") is not None:
        return None
    q, scale, zero_point = dq.inputs[:3]
    if not isinstance(scale, gs.Constant) or not isinstance(zero_point, gs.Constant) or scale.values.size != 1:
        return None
    producer = q.inputs[0] if q.inputs else None
    if producer is not None and producer.op == "Clip":
        qmin, qmax = (int(np.asarray(t.values)) for t in producer.inputs[1:3])
    else:
        info = np.iinfo(zero_point.values.dtype)
        qmin, qmax = int(info.min), int(info.max)
    return q, float(scale.values), zero_point, qmin, qmax


def _lookup(q: gs.Tensor, table: np.ndarray, qmin: int, name: str, out: gs.Tensor) -> list[gs.Node]:
    """``Cast(int32) -> [Sub(qmin)] -> Gather(table)`` from integer tensor ``q`` into ``out``."""
    index = gs.Variable(f"{name}_index", dtype=np.int32)
    nodes = [gs.Node("Cast", f"{name}_Cast", attrs={"to": onnx.TensorProto.INT32}, inputs=[q], outputs=[index])]
    if qmin:
        shifted = gs.Variable(f"{name}_index0", dtype=np.int32)
        qmin_const = gs.Constant(f"{name}_qmin", np.array(qmin, np.int32))
        nodes.append(gs.Node("Sub", f"{name}_Sub", inputs=[index, qmin_const], outputs=[shifted]))
        index = shifted
    nodes.append(gs.Node("Gather", f"{name}_Gather", attrs={"axis": 0},
                         inputs=[gs.Constant(f"{name}_table", table), index], outputs=[out]))
    return nodes


def sigmoid_as_table(graph: gs.Graph, sigmoid: gs.Node, table_of, name: str) -> bool:
    """Replace ``Q -> [Clip] -> DQ -> Sigmoid`` (per-tensor DQ) by ``Cast(int32) -> [Sub(qmin)] -> Gather(table)``.

    ``table_of(scale, zero_point, qmin, qmax)`` returns the float32 values for ``q = qmin..qmax``
    (calib's ``level_table``). Returns False, leaving the graph as it is, when the Sigmoid's
    input is not such a DQ. The DQ stays for any other consumer.
    """
    found = _table_input(sigmoid)
    if found is None:
        return False
    q, scale, zero_point, qmin, qmax = found
    table = np.asarray(table_of(scale, int(zero_point.values), qmin, qmax), np.float32)
    nodes = _lookup(q, table, qmin, name, sigmoid.outputs[0])
    sigmoid.outputs.clear()
    sigmoid.inputs.clear()
    graph.nodes.extend(nodes)
    return True


def sigmoid_as_gate(graph: gs.Graph, sigmoid: gs.Node, out_scale: float, out_zero_point: int, levels_of,
                    kernel_levels_of, name: str) -> str | None:
    """Requantize the Sigmoid reading ``Q -> [Clip] -> DQ`` (per-tensor) on the uint8 gate grid
    ``(out_scale, out_zero_point)``.

    ``levels_of(scale, zero_point, qmin, qmax)``: the gate's uint8 level for each input level
    (calib's ``table_levels``); ``kernel_levels_of(...)``: the same as the engine computes them. Equal:
    ``Sigmoid -> Q -> DQ`` after the DQ (ONNX Runtime's ``QLinearSigmoid``), returns ``"qlinear"``;
    different: ``Cast -> [Sub] -> Gather(uint8 levels) -> DQ``, returns ``"gather"``. Either way the
    gate leaves through a DequantizeLinear, so a following Mul can fuse. None (graph unchanged) when
    the input is not such a DQ.
    """
    found = _table_input(sigmoid)
    if found is None:
        return None
    q, scale, zero_point, qmin, qmax = found
    args = (scale, int(zero_point.values), qmin, qmax)
    levels = np.asarray(levels_of(*args)).astype(np.uint8)
    grid = IntGrid(np.array(out_scale, np.float32), np.array(out_zero_point), 0, 255, "uint8")
    if np.array_equal(levels, kernel_levels_of(*args)):
        quantize_activation_output(graph, sigmoid, grid, name)
        return "qlinear"
    gate_q = gs.Variable(f"{name}_q", dtype=np.uint8)
    scale_out, zero_point_out = _qparams(grid, name)
    nodes = _lookup(q, levels, qmin, name, gate_q)
    nodes.append(gs.Node("DequantizeLinear", f"{name}_DQ", inputs=[gate_q, scale_out, zero_point_out],
                         outputs=[sigmoid.outputs[0]]))
    sigmoid.outputs.clear()
    sigmoid.inputs.clear()
    graph.nodes.extend(nodes)
    return "gather"


def producer(t: gs.Tensor, op: str) -> gs.Node | None:
    """The node that makes ``t`` when it is an ``op`` node, else None."""
    return t.inputs[0] if len(t.inputs) == 1 and t.inputs[0].op == op else None


def _sole_reader_grid(graph: gs.Graph, node: gs.Node) -> IntGrid | None:
    """The grid of the one per-tensor QuantizeLinear (constant scale and zero point) that alone reads
    ``node``'s output, which is no graph output; else None."""
    readers = node.outputs[0].outputs
    if (len(readers) != 1 or readers[0].op != "QuantizeLinear" or readers[0].attrs.get("axis") is not None
            or node.outputs[0] in graph.outputs):
        return None
    scale, zero_point = readers[0].inputs[1:3]
    if not isinstance(scale, gs.Constant) or not isinstance(zero_point, gs.Constant) or scale.values.size != 1:
        return None
    container = np.dtype(zero_point.values.dtype).name
    lo, hi = CONTAINERS[container][2:]
    return IntGrid(np.asarray(scale.values, np.float32), np.asarray(zero_point.values), lo, hi, container)


def requantize_concat_inputs(graph: gs.Graph) -> int:
    """Give each input of a Concat that one per-tensor QuantizeLinear alone reads a ``Q -> DQ`` on that grid.

    Exact by idempotence: quantizing each part on the output grid before concatenating, then the
    whole again, gives the same levels as quantizing the concatenation once (concatenation moves
    values, it computes nothing). ONNX Runtime then fuses ``QLinearConcat`` and, where a part is
    ``DQ -> LeakyRelu``, ``QLinearLeakyRelu``. A part that already is a ``DequantizeLinear`` output (an
    integer residual) is left alone: QLinearConcat requantizes it by a table of ``Q(DQ(q))``, the same
    levels, whereas ORT would rewrite an explicit ``Q -> DQ -> Q -> DQ`` into one pair with other
    parameters (``DoubleQDQPairsRemover``), which is not exact. Returns the number of Concats changed.
    """
    changed = 0
    for concat in [n for n in graph.nodes if n.op == "Concat"]:
        grid = _sole_reader_grid(graph, concat)
        if grid is None:
            continue
        for i, part in enumerate(concat.inputs):
            if producer(part, "DequantizeLinear") is None:
                quantize_activation_input(graph, concat, i, grid, f"{concat.name}_in{i}")
        changed += 1
    return changed


_CHAIN_OPS = ("Pad", "Sub", "QuantizeLinear", "Clip", "DequantizeLinear")


def _input_key(t: gs.Tensor) -> tuple:
    if isinstance(t, gs.Constant):
        v = np.asarray(t.values)
        return ("c", v.dtype.str, v.shape, v.tobytes())
    return ("v", id(t))


def merge_twin_quantizers(graph: gs.Graph) -> int:
    """Let equal quantization chains on one tensor become one (common-subexpression elimination).

    Two ``[Pad] -> [Sub] -> Q -> [Clip] -> DQ`` chains that read the same tensor with equal constants
    compute the same values: the later one's readers are moved to the earlier one's outputs and
    ``cleanup`` drops it. They arise where calibration shares one input quantizer between layers
    that read one tensor (``PlacementConfig.shared_inputs``); ONNX Runtime then quantizes the tensor
    once and can fuse its producer (its own CSE does not merge nodes whose initializers merely hold
    equal values). Returns the number of nodes merged. Graph outputs are left alone.
    """
    graph.toposort()
    seen: dict[tuple, gs.Node] = {}
    merged = 0
    for node in list(graph.nodes):
        if (node.op not in _CHAIN_OPS or not isinstance(node.inputs[0], gs.Variable)  # not a weight's DQ
                or any(o in graph.outputs for o in node.outputs)):
            continue
        key = (node.op, tuple(sorted((k, repr(v)) for k, v in node.attrs.items())),
               tuple(_input_key(t) for t in node.inputs))
        first = seen.setdefault(key, node)
        if first is node:
            continue
        for old, new in zip(node.outputs, first.outputs):
            rewire(list(old.outputs), old, new)
        node.outputs.clear()
        merged += 1
    return merged


def _narrowed(q: gs.Node) -> bool:
    """Is ``QuantizeLinear`` ``q`` followed by an integer ``Clip`` (a grid narrower than its container)?"""
    return any(r.op == "Clip" for r in q.outputs[0].outputs)


def _same_constants(a: list[gs.Tensor], b: list[gs.Tensor]) -> bool:
    return len(a) == len(b) and all(isinstance(x, gs.Constant) and isinstance(y, gs.Constant)
                                    and _input_key(x) == _input_key(y) for x, y in zip(a, b))


def split_levels(graph: gs.Graph) -> int:
    """Let each ``Split`` of a per-tensor ``DequantizeLinear`` output split the DQ's integer input instead, with a
    DQ (the same constants) on each part.

    Exact: dequantization is elementwise, so it commutes with splitting. ONNX Runtime then splits uint8 tensors,
    and each part is a DQ output again, which the fusions need (a Conv reading a part: QLinearConv; a Concat
    of parts: QLinearConcat). Returns the number of Splits changed.
    """
    changed = 0
    for split in [n for n in graph.nodes if n.op == "Split"]:
        dq = producer(split.inputs[0], "DequantizeLinear")
        if dq is None or np.asarray(dq.inputs[1].values).size != 1 or dq.attrs.get("axis") is not None:
            continue
        split.inputs[0] = dq.inputs[0]
        for i, part in enumerate(list(split.outputs)):
            levels = gs.Variable(f"{split.name}_levels{i}", dtype=dq.inputs[0].dtype, shape=part.shape)
            split.outputs[i] = levels
            graph.nodes.append(gs.Node("DequantizeLinear", f"{split.name}_DequantizeLinear{i}", {},
                                       [levels, *dq.inputs[1:]], [part]))
        changed += 1
    return changed


def _clip_of(t: gs.Tensor) -> gs.Node | None:
    """The integer ``Clip`` that made the levels ``t``, directly or through ``Split`` nodes; else None."""
    while len(t.inputs) == 1 and t.inputs[0].op == "Split":
        t = t.inputs[0].inputs[0]
    return producer(t, "Clip")


def skip_requantization_on_same_grid(graph: gs.Graph) -> int:
    """Let a per-tensor ``QuantizeLinear`` whose input is a ``DequantizeLinear`` output on the same grid
    (equal scale and zero-point constants, same axis) hand on the DQ's integer input instead.

    Exact: ``DQ(q) = (q - zp) s`` in float32, and ``(q - zp) s / s`` rounds back to ``q - zp`` for any
    8-bit level, so that ``Q`` returns ``q``. It arises where a layer's input site is the grid its input
    already has (a layer reading an integer residual, or a part of a split activation on its grid). A ``Clip``
    after the ``Q`` (a narrower grid) keeps the ``Q`` unless the levels come from an equal ``Clip`` already
    (through ``Split`` nodes); then both go. Returns the number of QuantizeLinear nodes skipped.
    """
    skipped = 0
    for q in [n for n in graph.nodes if n.op == "QuantizeLinear"]:
        dq = producer(q.inputs[0], "DequantizeLinear")
        if (dq is None or dq.attrs.get("axis") != q.attrs.get("axis")
                or not _same_constants(dq.inputs[1:3], q.inputs[1:3]) or q.outputs[0] in graph.outputs
                or np.asarray(q.inputs[1].values).size != 1):
            continue
        out = q.outputs[0]
        if _narrowed(q):
            clip, before = _clip_after(q), _clip_of(dq.inputs[0])
            if clip is None or before is None or not _same_constants(clip.inputs[1:3], before.inputs[1:3]):
                continue
            out = clip.outputs[0]
        rewire(list(out.outputs), out, dq.inputs[0])
        q.outputs.clear()
        skipped += 1
    return skipped


def _clip_after(q: gs.Node) -> gs.Node | None:
    """The one integer ``Clip`` that alone reads ``QuantizeLinear`` ``q``'s output, else None."""
    readers = q.outputs[0].outputs
    return readers[0] if len(readers) == 1 and readers[0].op == "Clip" else None


def _fusable_binary(node: gs.Node | None) -> bool:
    """An Add / Mul of two DQ outputs (ORT fuses it with a Q after it into QLinearAdd / QLinearMul)."""
    return (node is not None and node.op in ("Add", "Mul")
            and all(producer(t, "DequantizeLinear") is not None for t in node.inputs))


def quantize_before_nearest_resize(graph: gs.Graph) -> int:
    """Give a nearest-neighbour ``Resize`` whose output one per-tensor ``QuantizeLinear`` alone reads a
    ``Q -> DQ`` on its input with that grid, so that it moves levels of one grid (ONNX Runtime then
    resizes the uint8 tensor and fuses the op in front, e.g. QLinearLeakyRelu or QLinearAdd).

    Exact: nearest resizing copies values, so quantizing before it gives the levels quantizing after
    it gives, and quantizing them again changes nothing. An input that is already a
    ``DequantizeLinear`` output is left alone (ORT would rewrite the ``Q -> DQ -> Q -> DQ`` inexactly), and
    so is an Add / Mul of two DQs (ORT would fuse a QLinearAdd / QLinearMul that calibration did not
    compute; an arch's ``Residual`` has its own site instead).
    Returns the number of Resize nodes changed.
    """
    changed = 0
    for resize in [n for n in graph.nodes if n.op == "Resize" and n.attrs.get("mode") == "nearest"]:
        grid, x = _sole_reader_grid(graph, resize), resize.inputs[0]
        if (grid is None or producer(x, "DequantizeLinear") is not None
                or _fusable_binary(x.inputs[0] if x.inputs else None)
                or _narrowed(resize.outputs[0].outputs[0])):
            continue
        quantize_activation_input(graph, resize, 0, grid, f"{resize.name}_in")
        changed += 1
    return changed


def rewire(consumers: list[gs.Node], old: gs.Tensor, new: gs.Tensor) -> None:
    """Make ``consumers`` read ``new`` wherever they read ``old`` (graphsurgeon lists take no slices)."""
    for node in consumers:
        for i, t in enumerate(node.inputs):
            if t is old:
                node.inputs[i] = new


def add_output_constant(graph: gs.Graph, producer: gs.Node, addend: np.ndarray, name: str) -> gs.Variable:
    """Insert ``Add(producer.outputs[0], addend)`` in front of all of its consumers; returns the sum.

    ``addend`` broadcasts against the output (e.g. a border-dependent ``(1, C, H, W)`` map).
    """
    out = producer.outputs[0]
    summed = gs.Variable(f"{name}_sum", dtype=out.dtype, shape=out.shape)
    rewire(list(out.outputs), out, summed)
    if out in graph.outputs:
        graph.outputs[graph.outputs.index(out)] = summed
    graph.nodes.append(gs.Node("Add", f"{name}_Add", inputs=[
        out, gs.Constant(f"{name}_addend", np.asarray(addend, dtype=np.float32))], outputs=[summed]))
    return summed


def feeds_row_softmax_only(graph: gs.Graph, t: gs.Tensor) -> bool:
    """Whether every use of ``t`` ends in a Softmax over the last axis, reached only through Adds and
    Reshapes that keep the last axis (known shapes; no graph output on the way): a term constant
    along that axis cancels there."""
    last = t.shape[-1] if t.shape else None
    if not isinstance(last, int) or not t.outputs or t in graph.outputs:
        return False
    for node in t.outputs:
        out = node.outputs[0] if node.outputs else None
        if node.op == "Softmax":
            axis = node.attrs.get("axis", -1)
            if axis not in (-1, len(t.shape) - 1):
                return False
        elif node.op not in ("Add", "Reshape") or out is None or not out.shape or out.shape[-1] != last:
            return False
        elif node.op == "Reshape" and node.inputs[0] is not t:  # t must be the reshaped data, not the shape
            return False
        elif not feeds_row_softmax_only(graph, out):
            return False
    return True


def add_matmul_shift_terms(graph: gs.Graph, matmul: gs.Node, beta_a: float | None, beta_b: float | None,
                           name: str) -> gs.Variable:
    """Make ``MatMul(A', B')`` of shifted inputs compute ``(A' + beta_a) @ (B' + beta_b)``; returns the sum.

    Adds ``beta_a * ReduceSum(B', axis -2) + beta_b * ReduceSum(A', axis -1) + K beta_a beta_b``
    (``K`` = the contraction size, from the input shapes) to the MatMul output in front of all its
    consumers; a missing beta is 0. ``A'``, ``B'``: the MatMul's inputs (the DQ outputs), ``(..., M, K)``
    and ``(..., K, N)``. The MatMul itself keeps its DQ inputs, so ONNX Runtime still fuses it.
    Where the output only feeds a softmax over its last axis (``feeds_row_softmax_only``: SwinIR's
    ``Q @ K^T``), the last two terms are constant along that axis and cancel in the softmax, so they
    are left out: the same probabilities up to float32 rounding, two full-size Adds fewer.
    """
    a, b = matmul.inputs[:2]
    if feeds_row_softmax_only(graph, matmul.outputs[0]):
        beta_b = None
    terms: list[gs.Tensor] = []
    for beta, src, axis, tag in ((beta_a, b, -2, "a"), (beta_b, a, -1, "b")):
        if beta is None:
            continue
        summed = gs.Variable(f"{name}_{tag}_sum", dtype=np.float32)
        scaled = gs.Variable(f"{name}_{tag}_term", dtype=np.float32)
        graph.nodes.extend([
            gs.Node("ReduceSum", f"{name}_{tag}_ReduceSum", attrs={"keepdims": 1}, inputs=[
                src, gs.Constant(f"{name}_{tag}_axes", np.array([axis], np.int64))], outputs=[summed]),
            gs.Node("Mul", f"{name}_{tag}_Mul", inputs=[
                summed, gs.Constant(f"{name}_{tag}_beta", np.array(beta, np.float32))], outputs=[scaled])])
        terms.append(scaled)
    if beta_a is not None and beta_b is not None:
        k = a.shape[-1] if a.shape else None
        if not isinstance(k, int):
            raise ValueError(f"{matmul.name}: contraction size unknown, cannot add the {name} shift terms")
        terms.append(gs.Constant(f"{name}_ab", np.array(np.float32(beta_a) * np.float32(beta_b) * k, np.float32)))
    out = matmul.outputs[0]
    consumers = list(out.outputs)
    total = out
    for i, t in enumerate(terms):
        nxt = gs.Variable(f"{name}_sum{i}", dtype=np.float32, shape=out.shape)
        graph.nodes.append(gs.Node("Add", f"{name}_Add{i}", inputs=[total, t], outputs=[nxt]))
        total = nxt
    rewire(consumers, out, total)
    if out in graph.outputs:
        graph.outputs[graph.outputs.index(out)] = total
    return total


def set_metadata(model: onnx.ModelProto, entries: dict[str, str]) -> None:
    """Set ``model.metadata_props`` keys (replacing existing ones of the same key)."""
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, **entries})


def quantize_activation_output(graph: gs.Graph, producer: gs.Node, grid: IntGrid, name: str) -> gs.Variable:
    """Insert ``Q -> [Clip] -> DQ`` on ``producer.outputs[0]`` in front of ALL its consumers; returns the DQ output.

    The ``Q`` directly after the producer is what ONNX Runtime's QLinearConv selector needs.
    A graph output keeps its name (it moves to the DQ output).
    """
    out = producer.outputs[0]
    consumers = list(out.outputs)
    y = _qdq_chain(graph, out, grid, name)
    rewire(consumers, out, y)
    if out in graph.outputs:
        graph.outputs[graph.outputs.index(out)] = y
        out.name, y.name = y.name, out.name
    return y
