"""Quality side of ``imdn_islands_probe.py``: what the fully integer IMDN block would cost in Set5 dB.

The probe's fastest IMDB block quantizes each LeakyReLU output before its Split and joins the Concat on one
grid per block, so c2 / c3 / c4 inputs, c4's output and the LeakyReLU outputs share one grid; and it puts the
channel attention's sigmoid on a [0, 1] 8-bit grid. Its per-part variant leaves the grids alone: each
LeakyReLU output goes onto the grid of the next conv's input (which its Split's second part is read on
anyway), so the Concat joins parts of four grids and statistics / gating run per part. This script applies both to srq's calibrated IMDN x2
``+ integer residuals`` recipe of ``benchmarks/integer_graph.py`` (phase 1 sorted, ``--first-conv-bits 8
--symmetric-8bit-weights --integer-gates --shared-inputs --integer-residuals``) as fake quantization, without
searching again: the block grid spans the union of the four tied sites' calibrated bounds, and a forward hook
on each block's LeakyReLU module (called three times per block) puts its output on that grid. The exact
integer statistics change no value, and the upsampler conv's cost is in ``docs/integer-graph.md``.

One command (~1 min on 2 cores; recipes cached in --work, shared with ``integer_graph.py``):

    .venv/bin/python benchmarks/imdn_block_grid_cost.py --data ../shared/data/benchmarks/Set5

Writes ``docs/imdn-block-grid-cost.md`` / ``.json``: Set5 Y-PSNR of each variant, W8A8 and W4A4.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from integer_graph import NETS, recipe_and_onnx, variant_flags  # noqa: E402
from speed import save_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"as calibrated": ("", False), "+ LeakyReLU outputs on the next conv's grid": ("next", False),
            "+ one grid per block": ("block", False), "+ gate on a [0, 1] grid": ("", True),
            "next conv's grid + gate": ("next", True), "one grid per block + gate": ("block", True)}


def _sigmoid_on_grid(module: torch.nn.Module, inputs: tuple, out: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.round(out * 255), 0, 255) / 255


def score(model_path: Path, recipe: Path, data: str, act: str, gate: bool) -> float:
    """Mean Y-PSNR (dB) on ``data`` of ``recipe`` fake-quantized; ``act``: "" (LeakyReLU outputs float, as
    calibrated), "next" (each on the next conv's input grid) or "block" (one grid per block, tied to c2 / c3 /
    c4 inputs and c4's output); ``gate``: the attention's sigmoid on a [0, 1] 8-bit grid."""
    from srq.calib.recipe import Recipe, apply_recipe
    from srq.imaging.datasets import open_dataset
    from srq.pipeline.evaluation import score_images
    from srq.zoo.loader import load_model

    model = load_model(str(model_path), None)
    sites = apply_recipe(model.module, Recipe.load(recipe))
    blocks = [(name, m) for name, m in model.module.named_children() if name.startswith("IMDB")]
    for name, block in blocks:
        if act == "next":  # the k-th LeakyReLU's output onto c(k+1)'s input grid, which its Split's second part
            for k in (1, 2, 3):  # is read on anyway
                grid = sites[f"{name}.c{k + 1}.input_q"]
                getattr(block, f"act{k}").register_forward_hook(lambda _m, _i, out, grid=grid: grid(out))
        if act == "block":
            tied = [sites[f"{name}.{site}"] for site in ("c2.input_q", "c3.input_q", "c4.input_q", "c4.output")]
            low, high = min(float(q.lb) for q in tied), max(float(q.ub) for q in tied)
            with torch.no_grad():
                for q in tied:
                    q.lb.fill_(low)
                    q.ub.fill_(high)
            for k in (1, 2, 3):
                getattr(block, f"act{k}").register_forward_hook(lambda _m, _i, out, grid=tied[0]: grid(out))
        if gate:
            block.cca.conv_du[-1].register_forward_hook(_sigmoid_on_grid)
    with torch.no_grad():
        rows = score_images(model, open_dataset(data, model.scale))
    return float(np.mean([r["psnr_y"] for r in rows]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="scoring images, e.g. ../shared/data/benchmarks/Set5")
    ap.add_argument("--work", type=Path, default=Path("/tmp/srq-integer-graph"))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "imdn-block-grid-cost")
    args = ap.parse_args(argv)
    model, net_flags, last = NETS["IMDN x2"]
    work = args.work / "imdn"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for bits in ("w8a8", "w4a4"):
        variant = "+ integer residuals"
        recipe, _ = recipe_and_onnx(model, bits, net_flags + variant_flags(variant, last), f"{bits}-3", work)
        for name, (act, gate) in VARIANTS.items():
            rows.append({"bits": bits, "variant": name, "psnr_y": score(model, recipe, args.data, act, gate)})
            print(rows[-1], flush=True)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "data": args.data, "rows": rows,
              "command": "python benchmarks/imdn_block_grid_cost.py " + shlex.join(argv or sys.argv[1:])}
    base = {r["bits"]: r["psnr_y"] for r in rows if r["variant"] == "as calibrated"}
    lines = ["# IMDN x2: what the fully integer block's grids cost (fake quantization)", "",
             f"`{result['command']}`, {result['date']}. Recipe: `benchmarks/integer_graph.py`'s `+ integer "
             "residuals` (phase 1 sorted); tied grids span the union of the calibrated bounds, not searched "
             f"again (see the script). Y-PSNR on `{args.data}`.", "",
             "| bits | variant | Y-PSNR dB | vs as calibrated |", "|---|---|---:|---:|"]
    lines += [f"| {r['bits']} | {r['variant']} | {r['psnr_y']:.4f} | {r['psnr_y'] - base[r['bits']]:+.4f} |"
              for r in rows]
    save_result(args.out, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
