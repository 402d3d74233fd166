"""What ONNX Runtime's CPU graph optimizer turns a QDQ model into, and what its fused kernels compute.

``optimized_op_counts`` runs a real session at ``ORT_ENABLE_ALL`` with ``optimized_model_filepath``
and reads the saved graph back. Integer kernels are the op types in ``INTEGER_OPS``; a quantized
Conv/MatMul/Gemm that stays a float op next to DequantizeLinear nodes did not fuse.
``qlinear_sigmoid_levels`` runs every input level through ``DQ -> Sigmoid -> Q`` (fused into
``QLinearSigmoid``, whose table MLAS's own sigmoid fills) and returns the output levels.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

INTEGER_OPS = frozenset({
    "QLinearConv", "QLinearMatMul", "QGemm", "MatMulInteger", "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul", "ConvInteger", "MatMulNBits",
})


def optimized_model(model: onnx.ModelProto | str | Path, int8_activations_allowed: bool = False) -> onnx.ModelProto:
    """``model`` after ORT's CPU optimizations (``ORT_ENABLE_ALL``), as ORT saves it.

    ``int8_activations_allowed`` sets ``session.qdqisint8allowed`` (off by default on x86,
    where the QDQ selectors then refuse int8 activations for Conv/MatMul).
    """
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.onnx"
        if isinstance(model, onnx.ModelProto):
            onnx.save(model, src)
        else:
            src = Path(model)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.qdqisint8allowed", "1" if int8_activations_allowed else "0")
        ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
        return onnx.load(opts.optimized_model_filepath, load_external_data=False)


def optimized_op_counts(model: onnx.ModelProto | str | Path, int8_activations_allowed: bool = False) -> Counter:
    """Op-type counts of ``optimized_model(model, int8_activations_allowed)``."""
    return Counter(node.op_type for node in optimized_model(model, int8_activations_allowed).graph.node)


def qlinear_sigmoid_levels(scale: float, zero_point: int, qmin: int, qmax: int, out_scale: float,
                           out_zero_point: int) -> np.ndarray:
    """uint8 output levels of ONNX Runtime's ``DQ(scale, zero_point) -> Sigmoid -> Q(out_scale, out_zero_point)``
    for the uint8 input levels ``qmin..qmax``: shape ``(qmax - qmin + 1,)``, as this machine's ORT computes them."""
    def const(name: str, value, dtype: int) -> onnx.TensorProto:
        return helper.make_tensor(name, dtype, [], [value])

    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["x"]), helper.make_node("Sigmoid", ["x"], ["y"]),
         helper.make_node("QuantizeLinear", ["y", "s_out", "zp_out"], ["gate"])],
        "qlinear_sigmoid", [helper.make_tensor_value_info("q", TensorProto.UINT8, [qmax - qmin + 1])],
        [helper.make_tensor_value_info("gate", TensorProto.UINT8, [qmax - qmin + 1])],
        [const("s", scale, TensorProto.FLOAT), const("zp", zero_point, TensorProto.UINT8),
         const("s_out", out_scale, TensorProto.FLOAT), const("zp_out", out_zero_point, TensorProto.UINT8)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return session.run(None, {"q": np.arange(qmin, qmax + 1, dtype=np.uint8)})[0]
