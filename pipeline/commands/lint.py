"""Check a QDQ ONNX model against the Q/DQ rules of ONNX Runtime (CPU) or TensorRT.

Prints one line per violation, `node <name>: <rule id>: <what>`, and exits with 1 when there
is any (0 when the model is clean). Rules: Q/DQ types and zero points, constant positive
scales, per-channel weight axes, both inputs of Conv/MatMul/Gemm quantized, and per target
the patterns the runtime fuses into integer kernels (ORT) or accepts (TensorRT: symmetric
INT8, residual Add and Concat scale rules). Rule sources are cited in srq/export/lint.py.

Example:
  srq lint model_trt.onnx --target trt
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="QDQ ONNX model to check")
    parser.add_argument("--target", choices=("ort", "trt"), required=True,
                        help="runtime whose rules apply: ort (ONNX Runtime CPU) or trt (TensorRT)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import onnx
    from google.protobuf.message import DecodeError

    from srq.errors import SrqError
    from srq.export.lint import lint_model

    path = Path(args.model)
    try:
        model = onnx.load(path, load_external_data=False)
    except (OSError, DecodeError) as exc:
        raise SrqError(f"{path}: not a readable ONNX model ({exc.__class__.__name__}: {exc})") from None
    violations = lint_model(model, args.target)
    for v in violations:
        print(v)
    print(f"{path}: {len(violations)} violation(s) of the {args.target} Q/DQ rules")
    return 1 if violations else 0
