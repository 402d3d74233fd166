"""Model sizes: the engine file's bytes and its theoretical size with weights packed at their bit-width.

``packed_size_bytes``: every initializer that a DequantizeLinear dequantizes and that holds
integers of at most 16 bits counts ``ceil(log2(max - min + 1))`` bits per element (the bits
its integer values need: 4 for a W4 weight stored in int8 containers); every other
initializer counts its storage size (float weights, int32 biases, scales, zero-points).
Graph structure and metadata are not counted. Read from the graph itself, so it needs no
naming convention between recipe sites and initializers.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from srq.errors import SrqError


def integer_bits(values: np.ndarray) -> int:
    """Bits needed for the integer range of ``values``: ``ceil(log2(max - min + 1))``, at least 1."""
    v = values.astype(np.int64)
    return max(1, math.ceil(math.log2(int(v.max()) - int(v.min()) + 1))) if v.size else 0


def packed_size_bytes(onnx_path: str | os.PathLike) -> float:
    """Theoretical size in bytes of the initializers of ``onnx_path`` with quantized weights packed."""
    path = Path(onnx_path)
    try:
        graph = onnx.load(path).graph
    except Exception as exc:
        raise SrqError(f"{path}: cannot read it as ONNX ({exc})") from exc
    dequantized = {n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    bits = 0
    for init in graph.initializer:
        arr = numpy_helper.to_array(init)
        packed = (init.name in dequantized and np.issubdtype(arr.dtype, np.integer)
                  and arr.dtype.itemsize <= 2)
        bits += arr.size * (integer_bits(arr) if packed else arr.dtype.itemsize * 8)
    return bits / 8
