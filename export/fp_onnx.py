"""Full-precision ONNX export of an ``SRModel`` at one fixed input size (the FP reference engine).

Exporter choice, measured on SwinIR-light x2 at 32x32 (2 shared CPU cores, torch 2.14, opset 17):
the TorchScript exporter followed by ``onnxscript.optimizer.optimize`` (constant folding, dead
Shape/Identity chains removed) gives 1105 nodes in ~45 s; the dynamo exporter gives 1189 nodes in
~110 s with the same operator set and the same ORT parity (~1e-6). Opset 17 has a native
LayerNormalization and is fully supported by both ONNX Runtime and TensorRT 10.

Graph: input ``lr`` (1, C, H, W) float32 in [0, 1] -> output ``sr`` (1, C, s*H, s*W); one file,
no external data; model metadata ``srq.*`` records arch, scale, channels and weights fingerprint.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import onnx
import onnxscript.optimizer
import torch

from srq.zoo.fixed_size import module_for_size
from srq.zoo.loader import SRModel

OPSET = 17
INPUT_NAME, OUTPUT_NAME = "lr", "sr"


def _trace_to_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings on Python-int shape arithmetic (static by design)
        torch.onnx.export(module, (example,), str(path), opset_version=OPSET, dynamo=False,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True)


def export_fp_onnx(model: SRModel, tile_hw: tuple[int, int], path: str | Path) -> Path:
    """Write ``model`` as FP32 ONNX for a fixed ``(1, C, H, W)`` input to ``path`` (atomic) and return it.

    ``tile_hw`` = (H, W) must be multiples of ``model.size_multiple`` (SrqError otherwise).
    SwinIR's attention masks are rebuilt for that size before tracing.
    """
    path = Path(path)
    h, w = tile_hw
    module = module_for_size(model, (h, w)).eval()
    example = torch.zeros(1, model.in_channels, h, w)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".fp_onnx-") as tmp:
        raw = Path(tmp) / "traced.onnx"
        _trace_to_onnx(module, example, raw)
        proto = onnxscript.optimizer.optimize(onnx.load(str(raw)))
        meta = {"srq.arch": model.arch, "srq.scale": str(model.scale),
                "srq.in_channels": str(model.in_channels), "srq.tile_hw": f"{h}x{w}",
                "srq.fingerprint": model.fingerprint, "srq.source": model.source}
        onnx.helper.set_model_props(proto, meta)
        onnx.checker.check_model(proto)
        final = Path(tmp) / path.name
        onnx.save_model(proto, str(final), save_as_external_data=False)
        os.replace(final, path)
    return path
