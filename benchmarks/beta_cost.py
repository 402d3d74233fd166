"""What 2DQuant+'s bias correction (beta) costs in the engine and buys in quality, by where it sits.

One command (SwinIR-light x2, ~20 min on 2 idle cores; calibrations are cached in --work):

    .venv/bin/python benchmarks/beta_cost.py --data ../shared/data/benchmarks/Set5

For W8A8 and W4A4 it calibrates three recipes as ``srq run`` does for SwinIR (sorted, DQC 50 steps,
batch 4, 32x32 patches, ``--qkv fused``, 8-bit symmetric weights; ``srq run``'s ``--first-conv-bits 8``
is left out, which SwinIR's 2dquant placement ignores but a CNN's would not), differing only in beta: none,
``--beta-sites layers`` (Conv / Linear inputs: folded into the int32 bias, one Sub each) and
``--beta-sites all`` (2DQuant+: also Q, K, V, whose shift terms are explicit engine ops). Each is
exported for ONNX Runtime at ``srq run``'s 64x64 tile, scored fake-quantized on ``--data``
(``srq eval``'s Y-PSNR), and all engines are timed interleaved against the FP32 ONNX model (1
intra-op thread, thread CPU time; ``benchmarks/speed.py``'s loop). Writes ``docs/beta-cost.md``
and ``docs/beta-cost.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import _cli, machine, save_result, time_interleaved  # noqa: E402  (sibling benchmark script)

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"none": [], "layers": ["--bias-correction", "--beta-sites", "layers"],
            "all": ["--bias-correction", "--beta-sites", "all"]}
TILE = "64x64"


def recipe_and_onnx(model: str, bits: str, variant: str, work: Path) -> tuple[Path, Path]:
    recipe, onnx = work / f"{variant}-{bits}.json", work / f"{variant}-{bits}.onnx"
    if not recipe.exists():
        _cli("calibrate", model, "--bits", bits, "--method", "sorted", "--qkv", "fused", "--dqc-iters", "50",
             "--dqc-batch", "4", "--dqc-patch", "32", "--symmetric-8bit-weights", *VARIANTS[variant],
             "--out", str(recipe))
    if not onnx.exists():
        _cli("export", model, "--recipe", str(recipe), "--target", "ort", "--tile", TILE, "--out", str(onnx))
    return recipe, onnx


def main(argv: list[str] | None = None) -> int:
    from srq.export.fp_onnx import export_fp_onnx
    from srq.pipeline.evaluation import evaluate_model
    from srq.runtime.latency import Timing
    from srq.runtime.ort_engine import OrtEngine, OrtOptions
    from srq.zoo.loader import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="swinir-light-x2")
    ap.add_argument("--data", required=True, help="scoring images, e.g. ../shared/data/benchmarks/Set5")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--work", type=Path, default=Path("/tmp/srq-beta-cost"))
    ap.add_argument("--note", default="no note", help="load situation, e.g. 'one ablation job running'")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "beta-cost")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    load_before = [round(v, 2) for v in os.getloadavg()]
    fp = args.work / "fp.onnx"
    if not fp.exists():
        export_fp_onnx(load_model(args.model), tuple(map(int, TILE.split("x"))), fp)
    rows, engines = [], {"fp32": OrtEngine(fp, OrtOptions(threads=1, save_optimized=False))}
    fp_psnr = evaluate_model(args.model, args.data)["psnr_y"]
    for bits in ("w8a8", "w4a4"):
        for variant in VARIANTS:
            recipe, onnx = recipe_and_onnx(args.model, bits, variant, args.work)
            shifted = sum(s["beta"] is not None for s in json.loads(recipe.read_text())["sites"])
            psnr = evaluate_model(args.model, args.data, recipe=recipe)["psnr_y"]
            rows.append({"bits": bits, "beta": variant, "shifted_sites": shifted, "psnr_y": psnr})
            engines[f"{bits} {variant}"] = OrtEngine(onnx, OrtOptions(threads=1, save_optimized=False))
    x = np.random.default_rng(0).random(engines["fp32"].input_shape, dtype=np.float32)
    raw = time_interleaved(engines, x, args.runs, 3, "engines")
    fp_cpu = Timing(tuple(raw["fp32"][1])).median
    for r in rows:
        cpu = Timing(tuple(raw[f"{r['bits']} {r['beta']}"][1])).median
        r |= {"cpu_ms": cpu, "speedup_cpu": fp_cpu / cpu}
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine(), "model": args.model, "data": args.data, "tile": TILE, "runs": args.runs,
              "fp_psnr_y": fp_psnr, "fp_cpu_ms": fp_cpu, "load_before": load_before,
              "load_after": [round(v, 2) for v in os.getloadavg()], "note": args.note, "rows": rows,
              "command": "python benchmarks/beta_cost.py " + shlex.join(argv if argv is not None else sys.argv[1:])}
    m = result["machine"]
    lines = [f"# Bias correction: engine cost and quality by where beta sits ({args.model})", "",
             f"`{result['command']}`, {result['date']}, {m['cpu']} ({m['logical_cpus']} logical CPUs, "
             f"{', '.join(m['isa'])}), onnxruntime {m['onnxruntime']}; load average before / after "
             f"{load_before} / {result['load_after']} ({args.note}). Recipes as `srq run` makes them (sorted, "
             f"DQC 50, `--qkv fused`, 8-bit symmetric weights), differing only in beta. Y-PSNR of the "
             f"fake-quantized model on `{args.data}` (FP {fp_psnr:.4f} dB); engine speed-up = FP32 ONNX / engine "
             f"thread-CPU median, {TILE} tile, 1 thread, {args.runs} interleaved runs (FP32 {fp_cpu:.0f} ms).", "",
             "| bits | beta | shifted inputs | Y-PSNR dB | engine CPU ms | speed-up vs FP32 |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['bits']} | {r['beta']} | {r['shifted_sites']} | {r['psnr_y']:.4f} | {r['cpu_ms']:.0f} | "
              f"{r['speedup_cpu']:.2f}x |" for r in rows]
    save_result(args.out, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
