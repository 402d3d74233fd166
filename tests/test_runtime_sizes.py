"""Theoretical packed size, counted by hand on a small QDQ graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from srq.errors import SrqError
from srq.runtime.sizes import integer_bits, packed_size_bytes


def test_integer_bits():
    assert integer_bits(np.array([-8, 7], np.int8)) == 4
    assert integer_bits(np.array([-8, 8], np.int8)) == 5
    assert integer_bits(np.array([0, 3], np.uint8)) == 2
    assert integer_bits(np.array([-127, 127], np.int8)) == 8


def test_packed_size_counts_dequantized_integers_at_their_bits(tmp_path):
    w = np.tile(np.arange(-8, 8, dtype=np.int8), 3)[:36].reshape(2, 2, 3, 3)  # W4 values in int8
    inits = [numpy_helper.from_array(w, "w_q"), numpy_helper.from_array(np.float32(0.1), "w_s"),
             numpy_helper.from_array(np.int8(0), "w_zp"), numpy_helper.from_array(np.zeros(2, np.float32), "b")]
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w"]),
             helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    # 36 weights x 4 bits = 18 B, scale 4 B, zero-point 1 B, bias 2 x 4 B = 8 B
    assert packed_size_bytes(tmp_path / "m.onnx") == 18 + 4 + 1 + 8


def test_not_onnx_is_a_clear_error(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"not a model")
    with pytest.raises(SrqError, match="x.onnx: cannot read it as ONNX"):
        packed_size_bytes(tmp_path / "x.onnx")
