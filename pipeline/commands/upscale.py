"""Upscale images with an engine: ONNX (ONNX Runtime, CPU) or TensorRT (.engine / .plan).

Whole images of any size go through the engine's fixed tile size in overlapping tiles;
each tile's centre is kept, so no seam shows when --tile-overlap (LR pixels) covers the
network's receptive field. INPUT may be image files or folders (their images, not
recursive). Every result is written atomically as DIR/<name>.png at the input's bit depth.

  RGB     through the engine; a Y-only engine (1 channel, e.g. FSRCNN) gets BT.601 Y and
          the colour (Cb, Cr) is upscaled by MATLAB bicubic.
  gray    replicated to RGB, upscaled as RGB, written back as gray (mean of the channels).
  alpha   a warning; the alpha channel is upscaled by bicubic, not by the engine.

Example:
  srq upscale model_w8a8.onnx photos/ extra.jpg --out upscaled/ --tile-overlap 16
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("engine", help="the engine: .onnx (ONNX Runtime) or .engine/.plan (TensorRT)")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--tile-overlap", type=int, default=None, metavar="N",
                        help="LR context pixels kept around each tile (default: 8, less for "
                             "tiles under 36 pixels)")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="ONNX Runtime intra-op threads (default: 0 = one per physical core)")


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from tqdm import tqdm

    from srq.errors import SrqError
    from srq.runtime.engine import open_engine
    from srq.runtime.upscale_files import collect_inputs, upscale_file

    sources = collect_inputs([Path(p) for p in args.inputs])
    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SrqError(f"{out_dir}: cannot create the output folder ({exc.strerror or exc})") from exc
    with open_engine(args.engine, threads=args.threads, save_optimized=False) as engine:
        for src in tqdm(sources, desc="upscale", unit="image", disable=None if len(sources) > 1 else True):
            upscale_file(engine, src, out_dir / f"{src.stem}.png", args.tile_overlap)
    print(f"wrote {len(sources)} image(s) to {out_dir} (x{engine.scale}, {engine.path.name})",
          file=sys.stderr)
    return 0
