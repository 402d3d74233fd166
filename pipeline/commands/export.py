"""Export a calibrated model as QDQ ONNX for ONNX Runtime or TensorRT.

The FP network is exported at one fixed tile size (input `lr` (1, C, H, W) float32 in [0, 1],
output `sr`), then QuantizeLinear/DequantizeLinear nodes carrying the recipe's scales and
zero points are inserted at every recipe site: integer weights + DequantizeLinear, activations
as Q -> integer Clip (below 8 bits) -> DQ, biases as int32 at s_x * s_w. The engine then runs
integer kernels (ORT: QLinearConv / QGemm) and gives the images of the calibrated model.

  --target ort   asymmetric uint8 grids, what `srq calibrate` produced (ONNX Runtime CPU).
  --target trt   symmetric int8 grids (zero point 0) for TensorRT; exact below 8 bits, else
                 the range is widened: the bits each site loses go to <out stem>.bits_lost.json.
  --weights packed  stores <= 4-bit weights as int4 (opset 21): smallest file, but ORT runs
                 those layers in float (no integer kernel); int8 (default) is the fast path.

The tile must be a multiple of the model's size multiple (SwinIR: the window size); run the
engine tiled (`srq upscale`) for larger images. Nothing is written when anything fails.

Example:
  srq export IMDN_x2.pth --recipe imdn_w4a4.json --target ort --tile 64x64 --out imdn_w4a4.onnx
  srq lint imdn_w4a4.onnx --target ort
"""

from __future__ import annotations

import argparse


def _tile(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"tile {text!r}: write HxW, e.g. 64x64") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"tile {text!r}: sizes must be positive")
    return h, w


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="FP checkpoint (.pth/.pt/.safetensors) or built-in name the recipe was made for")
    parser.add_argument("--recipe", required=True, help="recipe JSON from `srq calibrate` (its .safetensors beside it)")
    parser.add_argument("--target", choices=("ort", "trt"), required=True,
                        help="ort: asymmetric uint8 (ONNX Runtime); trt: symmetric int8 (TensorRT)")
    parser.add_argument("--tile", type=_tile, required=True, help="fixed input size HxW of the exported graph")
    parser.add_argument("--weights", choices=("int8", "packed"), default="int8",
                        help="int8: 8-bit weight containers (fast, default); packed: int4 initializers (smallest)")
    parser.add_argument("--scale", type=int, default=None, help="upscaling factor for multi-scale checkpoints")
    parser.add_argument("--out", required=True, help="output .onnx path (written atomically)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from srq.calib.recipe import Recipe
    from srq.errors import SrqError
    from srq.export.qdq_export import export_quantized
    from srq.zoo.loader import load_model

    recipe = Recipe.load(args.recipe)
    model = load_model(args.model, args.scale)
    try:
        recipe.check_matches(model)
    except SrqError as exc:
        raise SrqError(f"{args.recipe}: {exc}") from None
    out = export_quantized(model, recipe, args.target, args.tile, args.out, args.weights)
    print(f"{out}: {Path(out).stat().st_size / 1e6:.2f} MB, {len(recipe.sites)} sites, target {args.target}, "
          f"weights {args.weights}")
    if args.target == "trt":
        print(f"bits lost per site: {out.with_name(out.stem + '.bits_lost.json')}")
    return 0
