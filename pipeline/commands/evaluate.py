"""Score an SR model on a benchmark: Y-channel PSNR/SSIM, the convention SR papers report.

LR inputs come from DIR/LR_bicubic/X{S} when present (the EDSR/BasicSR layout), otherwise
they are made from DIR/HR with MATLAB-compatible bicubic. Scores: BT.601 Y, output rounded
to uint8, border of S pixels cropped, float64. With --recipe, the model is fake-quantized
exactly as the recipe says (what the exported engine computes).

examples:
  srq eval ../shared/data/weights/PAN/PANx4_DF2K.pth --data ../shared/data/benchmarks/Set5
  srq eval swinir-light-x2 --data builtin:demo --json fp.json
  srq eval IMDN_x2.pth --data Set14 --recipe recipe.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="checkpoint (.pth/.pt/.safetensors) or built-in name (see `srq models`)")
    p.add_argument("--data", required=True, metavar="DIR|builtin:NAME",
                   help="benchmark folder with HR/ (and optionally LR_bicubic/X{S}/), a folder of HR "
                        "images, or builtin:demo / builtin:calib")
    p.add_argument("--scale", type=int, default=None,
                   help="upscaling factor (default: the model's own; required for multi-scale nets)")
    p.add_argument("--recipe", type=Path, default=None,
                   help="evaluate the fake-quantized model this recipe describes (srq calibrate)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT",
                   help="also write the scores as JSON: model, scale, dataset, psnr_y, ssim_y, images[]")


def run(args: argparse.Namespace) -> int:
    from srq.pipeline.evaluation import evaluate_model, print_table

    result = evaluate_model(args.model, args.data, scale=args.scale, recipe=args.recipe)
    print_table(result)
    if args.json is not None:
        tmp = args.json.with_name(args.json.name + ".tmp")
        try:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
            os.replace(tmp, args.json)
        except OSError as exc:
            from srq.errors import SrqError

            tmp.unlink(missing_ok=True)
            raise SrqError(f"{args.json}: cannot write ({exc.strerror})") from None
    return 0
