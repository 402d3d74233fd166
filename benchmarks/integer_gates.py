"""PAN x4 with integer gates: what ``srq calibrate --integer-gates`` buys in engine speed and costs in quality.

One command (~10 min on 2 idle cores; recipes and ONNX files are cached in --work):

    .venv/bin/python benchmarks/integer_gates.py --data ../shared/data/benchmarks/Set5

For W8A8 and W4A4 it calibrates PAN x4 twice with ``--policy all --first-conv-bits 8
--symmetric-8bit-weights`` (phase 1, sorted, the default 32 crops of ``builtin:calib``), once with the
sigmoid gates as float tables of their input levels (``Cast -> Gather``, the default) and once with
``--integer-gates`` (each gate requantized by its own site: ORT's ``QLinearSigmoid`` and, for the 16
PAConv products, ``QLinearMul``). Each recipe is exported for ONNX Runtime at a 128x128 LR tile,
scored fake-quantized on ``--data`` (``srq eval``'s Y-PSNR, which the engine reproduces level for
level: ``tests/test_integer_gates.py``), and all engines are timed interleaved against the FP32
ONNX model and ONNX Runtime's own ``quantize_static`` W8A8 (1 intra-op thread, thread CPU time;
``benchmarks/speed.py``'s loop). Writes ``docs/integer-gates.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import _cli, machine, ort_quantized, save_result, time_interleaved  # noqa: E402  (sibling script)

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT.parent / "shared" / "data" / "weights" / "PAN" / "PANx4_DF2K.pth"
FLAGS = ["--policy", "all", "--first-conv-bits", "8", "--symmetric-8bit-weights"]
VARIANTS = {"tables": [], "integer gates": ["--integer-gates"]}
TILE = "128x128"


def recipe_and_onnx(model: Path, bits: str, variant: str, work: Path) -> tuple[Path, Path]:
    stem = f"{bits}-{variant.replace(' ', '-')}"
    recipe, onnx = work / f"{stem}.json", work / f"{stem}.onnx"
    if not recipe.exists():
        _cli("calibrate", str(model), "--bits", bits, *FLAGS, *VARIANTS[variant], "--out", str(recipe))
    if not onnx.exists():
        _cli("export", str(model), "--recipe", str(recipe), "--target", "ort", "--tile", TILE, "--out", str(onnx))
    return recipe, onnx


def main(argv: list[str] | None = None) -> int:
    from srq.export.fp_onnx import export_fp_onnx
    from srq.export.ort_fusion import optimized_op_counts
    from srq.pipeline.evaluation import evaluate_model
    from srq.runtime.latency import Timing
    from srq.runtime.ort_engine import OrtEngine, OrtOptions
    from srq.zoo.loader import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--data", required=True, help="scoring images, e.g. ../shared/data/benchmarks/Set5")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--work", type=Path, default=Path("/tmp/srq-integer-gates"))
    ap.add_argument("--note", default="no note", help="load situation, e.g. 'one ablation job running'")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "integer-gates")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    load_before = [round(v, 2) for v in os.getloadavg()]
    fp = args.work / "fp.onnx"
    if not fp.exists():
        export_fp_onnx(load_model(str(args.model)), tuple(map(int, TILE.split("x"))), fp)
    options = OrtOptions(threads=1, save_optimized=False)
    engines = {"fp32": OrtEngine(fp, options),
               "ORT qs W8A8": OrtEngine(ort_quantized(fp, args.work / "ortqs.onnx"),
                                        OrtOptions(threads=1, save_optimized=False, exact_integer=False))}
    fp_psnr = evaluate_model(str(args.model), args.data)["psnr_y"]
    rows = []
    for bits in ("w8a8", "w4a4"):
        for variant in VARIANTS:
            recipe, onnx = recipe_and_onnx(args.model, bits, variant, args.work)
            ops = optimized_op_counts(onnx)
            rows.append({"bits": bits, "gates": variant,
                         "psnr_y": evaluate_model(str(args.model), args.data, recipe=recipe)["psnr_y"],
                         "ops": {k: ops[k] for k in ("QLinearSigmoid", "QLinearMul", "Gather", "Mul") if ops[k]}})
            engines[f"{bits} {variant}"] = OrtEngine(onnx, options)
    x = np.random.default_rng(0).random(engines["fp32"].input_shape, dtype=np.float32)
    raw = time_interleaved(engines, x, args.runs, 3, "engines")
    cpu = {name: Timing(tuple(times[1])).median for name, times in raw.items()}
    for r in rows:
        r |= {"cpu_ms": cpu[f"{r['bits']} {r['gates']}"], "speedup_cpu": cpu["fp32"] / cpu[f"{r['bits']} {r['gates']}"]}
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine(), "model": str(args.model), "data": args.data, "tile": TILE, "runs": args.runs,
              "flags": FLAGS, "fp_psnr_y": fp_psnr, "fp_cpu_ms": cpu["fp32"], "ort_qs_cpu_ms": cpu["ORT qs W8A8"],
              "load_before": load_before, "load_after": [round(v, 2) for v in os.getloadavg()], "note": args.note,
              "rows": rows,
              "command": "python benchmarks/integer_gates.py " + shlex.join(argv if argv is not None else sys.argv[1:])}
    m = result["machine"]
    lines = ["# PAN x4: integer gates (`srq calibrate --integer-gates`)", "",
             f"`{result['command']}`, {result['date']}, {m['cpu']} ({m['logical_cpus']} logical CPUs, "
             f"{', '.join(m['isa'])}), onnxruntime {m['onnxruntime']}; load average before / after "
             f"{load_before} / {result['load_after']} ({args.note}). Recipes: phase 1 sorted, "
             f"`{' '.join(FLAGS)}`, with or without `--integer-gates`. Y-PSNR of the fake-quantized model on "
             f"`{args.data}` (FP {fp_psnr:.4f} dB; the engine computes the same levels); engine speed-up = FP32 "
             f"ONNX / engine thread-CPU median, {TILE} LR tile, 1 thread, {args.runs} interleaved runs (FP32 "
             f"{cpu['fp32']:.0f} ms; ONNX Runtime's quantize_static W8A8 {cpu['ORT qs W8A8']:.0f} ms, "
             f"{cpu['fp32'] / cpu['ORT qs W8A8']:.2f}x). Ops: gate-related op types in ORT's optimized graph.", "",
             "| bits | gates | Y-PSNR dB | engine CPU ms | speed-up vs FP32 | ops |", "|---|---|---:|---:|---:|---|"]
    lines += [f"| {r['bits']} | {r['gates']} | {r['psnr_y']:.4f} | {r['cpu_ms']:.0f} | {r['speedup_cpu']:.2f}x | "
              f"{', '.join(f'{k} {v}' for k, v in r['ops'].items())} |" for r in rows]
    save_result(args.out, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
