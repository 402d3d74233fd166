"""What ONNX Runtime's CPU graph optimizer turns a QDQ model into: op-type counts of the optimized graph.

Runs a real session at ``ORT_ENABLE_ALL`` with ``optimized_model_filepath`` and reads the
saved graph back. Integer kernels are the op types in ``INTEGER_OPS``; a quantized
Conv/MatMul/Gemm that stays a float op next to DequantizeLinear nodes did not fuse.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import onnx
import onnxruntime as ort

INTEGER_OPS = frozenset({
    "QLinearConv", "QLinearMatMul", "QGemm", "MatMulInteger", "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul", "ConvInteger", "MatMulNBits",
})


def optimized_op_counts(model: onnx.ModelProto | str | Path, int8_activations_allowed: bool = False) -> Counter:
    """Op-type counts of ``model`` after ORT's CPU optimizations (``ORT_ENABLE_ALL``).

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
        optimized = onnx.load(opts.optimized_model_filepath, load_external_data=False)
    return Counter(node.op_type for node in optimized.graph.node)
