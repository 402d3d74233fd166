"""Release check of a quantized engine: quality, parity, latency and size against FP.

Runs the FP model and the engine tiled over every image of --data, scores both against the
ground truth (Y-PSNR/SSIM, SR-paper convention), the engine against FP, and, with --recipe,
the engine against the fake-quantized PyTorch model it was exported from (parity: the
engine must compute what calibration optimised). Times both interleaved at the same tile.
Writes REPORT/report.json, report.md (for a pull request) and report.html (self-contained).
Any failed gate prints one line and exits 1: use it as a CI release gate.

--fp takes the FP ONNX at the engine's tile (torch-free), or a checkpoint / built-in name,
which is then exported to FP ONNX at the engine's tile (needs the calib extra, as --recipe).

examples:
  srq check --fp fp.onnx --engine w8a8.onnx --data builtin:demo --report out/report \\
            --max-psnr-drop 0.3 --min-speedup 1.5
  srq check --fp IMDN_x2.pth --engine w4a4.onnx --recipe w4a4.json \\
            --data ../shared/data/benchmarks/Set5 --report out/w4a4 --min-parity-psnr 50
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fp", required=True, metavar="MODEL",
                   help="FP reference: .onnx at the engine's tile, or a checkpoint / built-in name")
    p.add_argument("--engine", required=True, type=Path, help="quantized engine (.onnx, or TensorRT .engine/.plan)")
    p.add_argument("--recipe", type=Path, default=None,
                   help="recipe the engine was exported from: adds engine-vs-fake-quant parity")
    p.add_argument("--model", default=None,
                   help="checkpoint / built-in name for --recipe when --fp is an .onnx")
    p.add_argument("--data", required=True, metavar="DIR|builtin:NAME", help="benchmark folder or builtin:demo")
    p.add_argument("--scale", type=int, default=None, help="default: the engine's scale")
    p.add_argument("--report", required=True, type=Path, metavar="DIR", help="report folder (replaced atomically)")
    p.add_argument("--overlap", type=int, default=None, help="tile overlap in LR pixels (default: by tile size)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: one per core)")
    p.add_argument("--latency-runs", type=int, default=20, help="timed runs per engine (>= 20)")
    g = p.add_argument_group("gates (each failing gate: one line, exit 1)")
    g.add_argument("--max-psnr-drop", type=float, default=None, metavar="DB", help="FP Y-PSNR minus engine Y-PSNR")
    g.add_argument("--min-parity-psnr", type=float, default=None, metavar="DB", help="engine vs fake-quant PSNR")
    g.add_argument("--min-speedup", type=float, default=None, metavar="X", help="FP latency / engine latency")


def run(args: argparse.Namespace) -> int:
    import tempfile

    from tqdm import tqdm

    from srq.errors import GateFailure, SrqError
    from srq.imaging.datasets import open_dataset
    from srq.runtime.check import run_check
    from srq.runtime.engine import open_engine
    from srq.runtime.gates import standard_gates

    gates = standard_gates(args.max_psnr_drop, args.min_parity_psnr, args.min_speedup)
    if args.min_parity_psnr is not None and args.recipe is None:
        raise SrqError("--min-parity-psnr needs --recipe (the fake-quantized model to compare with)")
    torch_model = args.model or (None if str(args.fp).endswith(".onnx") else args.fp)
    if args.recipe is not None and torch_model is None:
        raise SrqError("--recipe needs the FP checkpoint: pass --fp CHECKPOINT or --model CHECKPOINT")
    with tempfile.TemporaryDirectory(prefix="srq-check-") as work, \
            open_engine(args.engine, threads=args.threads) as q:
        scale = args.scale or q.scale
        fp_path = Path(args.fp)
        model = None
        if torch_model is not None:
            from srq.zoo.loader import load_model

            model = load_model(torch_model, scale)
        if not str(args.fp).endswith(".onnx"):
            from srq.export.fp_onnx import export_fp_onnx

            fp_path = export_fp_onnx(model, q.tile, Path(work) / "fp.onnx")
        dataset = open_dataset(args.data, scale)
        reference, sites = None, None
        if args.recipe is not None:
            from srq.calib.recipe import Recipe, asdict_shallow
            from srq.pipeline.torch_engine import TorchEngine
            from srq.runtime.tiling import default_overlap, upscale_rgb

            recipe = Recipe.load(args.recipe)
            fq = TorchEngine(model, q.tile, recipe)
            overlap = default_overlap(q.tile) if args.overlap is None else args.overlap
            reference = {s.name: upscale_rgb(fq, s.lr.astype("float32") / 255.0, overlap)
                         for s in tqdm(dataset, desc="fake-quant reference", unit="image", disable=None)}
            sites = [asdict_shallow(s) for s in recipe.sites]
        with open_engine(fp_path, threads=args.threads) as fp:
            report = run_check(fp, q, dataset, scale, gates, args.report, reference_outputs=reference,
                               sites=sites, overlap=args.overlap, latency_runs=args.latency_runs,
                               inputs={"data": args.data, "recipe": None if args.recipe is None else str(args.recipe)})
    s = report.summary
    print(f"FP {s['fp_psnr_y']:.3f} dB, engine {s['q_psnr_y']:.3f} dB (drop {s['psnr_drop']:.3f}), "
          f"latency {s['fp_ms']:.1f} -> {s['q_ms']:.1f} ms (x{s['speedup']:.2f})"
          + (f", parity {s['parity_psnr']:.2f} dB" if s.get("parity_psnr") is not None else ""))
    print(f"report: {args.report / 'report.html'}  verdict: {'PASSED' if report.passed else 'FAILED'}")
    if not report.passed:
        raise GateFailure(report.failures)
    return 0
