"""Float64 islands for TensorRT: computed in float32 instead.

A model may sum statistics in float64 so that any summation order rounds to the same float32
(IMDN's channel attention, ``srq.zoo.archs.imdn``): ONNX Runtime then reproduces calibration
exactly. TensorRT has no float64 kernels (onnx-tensorrt's operator notes: "limited support for
DOUBLE ... cast DOUBLE down to FLOAT"), so the TensorRT export does that cast itself, visibly:
every ``Cast(to=DOUBLE)`` and the ``Cast(to=FLOAT)`` closing the island are bypassed, and
float64 constants inside it become float32. The island then computes in float32, as the engine
would anyway; ``srq lint --target trt`` flags any float64 left (rule ``trt-float64``).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto


def _cast_to(node: gs.Node) -> int | None:
    return node.attrs.get("to") if node.op == "Cast" else None


def _bypass(node: gs.Node) -> None:
    """Feed ``node``'s consumers its input and detach it (a Cast inside the graph, not at an output)."""
    src, dst = node.inputs[0], node.outputs[0]
    for consumer in list(dst.outputs):
        consumer.inputs[consumer.inputs.index(dst)] = src
    node.inputs.clear()
    node.outputs.clear()


def float64_to_float32(graph: gs.Graph) -> None:
    """Rewrite ``graph`` (in place) so that no tensor is float64.

    The float64 region is followed from each ``Cast(to=DOUBLE)`` through its consumers up to the
    ``Cast(to=FLOAT)`` nodes that end it. Call ``graph.cleanup()`` afterwards.
    """
    starts = [n for n in graph.nodes if _cast_to(n) == TensorProto.DOUBLE]
    region: set[int] = set()
    todo = [t for n in starts for t in n.outputs]
    ends = []
    while todo:
        tensor = todo.pop()
        for consumer in tensor.outputs:
            if id(consumer) in region:
                continue
            region.add(id(consumer))
            if _cast_to(consumer) == TensorProto.FLOAT:
                ends.append(consumer)
                continue
            for inp in consumer.inputs:
                if isinstance(inp, gs.Constant) and inp.values.dtype == np.float64:
                    inp.values = inp.values.astype(np.float32)
            for out in consumer.outputs:
                out.dtype = np.float32
                todo.append(out)
    for node in starts + ends:
        _bypass(node)
