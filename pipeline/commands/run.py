"""The whole job in one command: calibrate -> export -> check, for each bit setting.

For every --bits setting (default w8a8 and w4a4) it writes OUT/<bits>/recipe.json
(srq calibrate), OUT/<bits>/model.onnx (srq export) and OUT/<bits>/report/ (srq check:
report.html, report.md, report.json), each stage exactly as its own command would, then
prints one verdict line per setting. It exits 1 when any setting fails a gate, 2 on bad input.

Defaults: the built-in SwinIR-light x2, builtin:calib for calibration, builtin:demo for the
check, 2DQuant+ sorted grading with a short DQC (50 iterations, batch 4, 32x32 LR patches;
--dqc-iters 0 = phase 1 only), tile 64x64, ONNX Runtime, and the parity gate (the engine
must compute what calibration simulated). On an idle 2-core x86 machine (Zen 4) the default
job took 4.9 min and 3.8 GB (7.8 min on a Zen 3); each stage prints its wall time. CNN
checkpoints get an integer first conv (--first-conv-bits 8), so the engine reproduces the
calibrated model exactly; SwinIR's qkv stays one Linear with one input quantizer (--qkv fused:
the same phase-1 bounds as 2DQuant's split layout, and one integer GEMM instead of three and a
Concat in the engine, docs/speed.md). 8-bit weights are symmetric (zero point 0, stored as
int8; --no-symmetric-8bit-weights keeps them asymmetric uint8): ONNX Runtime then runs its U8S8
integer kernels, which on an AVX-512 VNNI CPU are exact and made IMDN x2 W8A8 2.2x faster than
FP32 instead of 1.0x with uint8 weights (U8U8 kernels), for 0.0006 dB on Set5 (docs/speed.md).
2DQuant+'s bias correction beta is on (--no-bias-correction turns it off), on the Conv / Linear
inputs only (--beta-sites layers): the export folds W @ beta exactly into their int32 biases
(zero-padded convs pad before the shift in both calibration and export;
docs/export-ort-fusion.md), and what remains is one Sub per shifted input. --beta-sites all
(2DQuant+'s choice) also shifts SwinIR's Q, K and V, whose shift terms are explicit engine
work. benchmarks/beta_cost.py measures both against no beta (docs/beta-cost.md): on SwinIR-light
x2 (64x64 tile, 1 thread, recipes as this command makes them, differing only in beta; Zen 4,
one other job running) the W8A8 / W4A4 engines ran at 1.19x / 1.12x the FP32 model's speed with
beta on layer inputs, 0.93x / 0.94x on all inputs, 1.19x / 1.16x without, and scored Set5 W4A4
35.914 / 35.916 / 35.904 dB (FP 36.014).

examples:
  srq run --out runs/default
  srq run ../shared/data/weights/IMDN/IMDN_x2.pth --bits w8a8 --max-psnr-drop 0.05 --out runs/imdn
  srq run IMDN_x2.pth --bits w4a4 --dqc-iters 100 --check-data ../shared/data/benchmarks/Set5 --out runs/imdn4
"""

from __future__ import annotations

import argparse
from pathlib import Path

from srq.pipeline.commands.calibrate import BETA_SITES, parse_bits


ORT_INTEGER_FLAGS = (  # srq calibrate flags that keep more of an ORT graph integer, each exact; on by default
    ("integer-gates", "sigmoid gates requantized by their own sites, run as QLinearSigmoid / QLinearMul (PAN x4 "
                      "W8A8 policy all: 1.26x -> 2.30x, docs/integer-graph.md; no effect on nets without sigmoid "
                      "gates)"),
    ("integer-residuals", "residual sums requantized by their own sites and run as QLinearAdd, the first conv's "
                          "output requantized (no effect on nets without srq.zoo.Residual blocks)"),
    ("integer-concats", "channel concatenations requantized by their own sites (QLinearConcat), so that IMDN's "
                        "channel attention runs on 8-bit levels (no effect on nets without srq.zoo.Concat)"),
    ("integer-activations", "LeakyReLU outputs on their readers' input grid (QLinearLeakyRelu, uint8 Split; inert "
                            "with --bias-correction, whose shifted inputs are not on that grid)"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default="swinir-light-x2",
                   help="checkpoint or built-in name (default: swinir-light-x2)")
    p.add_argument("--out", type=Path, required=True, help="output folder: one sub-folder per bit setting")
    p.add_argument("--bits", default="w8a8,w4a4", help="comma-separated wNaM settings (default w8a8,w4a4)")
    p.add_argument("--scale", type=int, default=None, help="upscaling factor for multi-scale checkpoints")
    p.add_argument("--target", choices=("ort", "trt"), default="ort", help="engine target (default ort)")
    p.add_argument("--tile", default="64x64", help="engine LR tile HxW (default 64x64)")
    p.add_argument("--method", default="sorted", help="phase-1 bound search (default sorted)")
    p.add_argument("--bias-correction", action=argparse.BooleanOptionalAction, default=True,
                   help="2DQuant+ shift beta on two-sided input sites (default on)")
    p.add_argument("--beta-sites", choices=BETA_SITES, default="layers",
                   help="which inputs beta shifts (see srq calibrate): layers = Conv/Linear inputs only, where it "
                        "folds into the int32 bias (default); all = also SwinIR's Q, K, V (2DQuant+), explicit "
                        "engine work")
    p.add_argument("--first-conv-bits", type=int, default=8, metavar="B",
                   help="CNN policies: integer first conv at B bits, so that the engine reproduces calibration "
                        "exactly (float output, or requantized where --integer-residuals keeps the skip path integer; "
                        "default 8; 0 = FP first conv; see srq calibrate)")
    p.add_argument("--qkv", choices=("split", "fused"), default="fused",
                   help="SwinIR's qkv Linear (see srq calibrate): fused, one input quantizer and one integer GEMM "
                        "(default: the faster engine); split = 2DQuant's three")
    p.add_argument("--symmetric-8bit-weights", action=argparse.BooleanOptionalAction, default=True,
                   help="8-bit weights symmetric, int8 with zero point 0 (srq calibrate --symmetric-8bit-weights; "
                        "also the 8-bit layers of --layer-bits): ONNX Runtime's fast U8S8 kernels, exact on VNNI CPUs "
                        "(default on; <= 7-bit weights are int8 either way)")
    for flag, text in ORT_INTEGER_FLAGS:
        p.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=True,
                       help=f"target ort: {text} (srq calibrate --{flag}; default on)")
    p.add_argument("--shared-inputs", action=argparse.BooleanOptionalAction, default=True,
                   help="one grid per tensor: layers that read one tensor, or a requantized output, read it on one "
                        "grid (srq calibrate --shared-inputs): one Q per tensor in the engine (default on)")
    p.add_argument("--layer-bits", action="append", default=[], metavar="GLOB=wNaM",
                   help="mixed precision: other bits for the layers whose path matches (repeatable; see srq calibrate)")
    p.add_argument("--dqc-iters", type=int, default=50, help="phase-2 DQC iterations (default 50; 0 = phase 1 only)")
    p.add_argument("--dqc-batch", type=int, default=4, help="DQC batch size (default 4)")
    p.add_argument("--dqc-patch", type=int, default=32, help="DQC LR patch side (default 32)")
    p.add_argument("--calib-data", default="builtin:calib", help="calibration images (default builtin:calib)")
    p.add_argument("--crops", type=int, default=32, help="calibration LR crops (default 32)")
    p.add_argument("--check-data", default="builtin:demo", help="check images (default builtin:demo)")
    p.add_argument("--latency-runs", type=int, default=20, help="timed runs per engine (default 20)")
    g = p.add_argument_group("gates (passed to srq check)")
    g.add_argument("--max-psnr-drop", type=float, default=None, metavar="DB")
    g.add_argument("--min-parity-psnr", type=float, default=50.0, metavar="DB", help="default 50")
    g.add_argument("--min-speedup", type=float, default=None, metavar="X")


def _stage_args(args: argparse.Namespace, bits: str, folder: Path) -> list[tuple[str, list[str]]]:
    scale = ["--scale", str(args.scale)] if args.scale else []
    recipe, onnx = str(folder / "recipe.json"), str(folder / "model.onnx")
    flags = (["--symmetric"] if args.target == "trt" else []) + (
        ["--bias-correction", "--beta-sites", args.beta_sites] if args.bias_correction else [])
    if args.target == "ort" and args.symmetric_8bit_weights:
        flags.append("--symmetric-8bit-weights")
    if args.shared_inputs:
        flags.append("--shared-inputs")
    if args.target == "ort":
        flags += [f"--{flag}" for flag, _ in ORT_INTEGER_FLAGS if getattr(args, flag.replace("-", "_"))]
    calibrate = ["calibrate", args.model, *scale, "--bits", bits, "--method", args.method,
                 "--first-conv-bits", str(args.first_conv_bits), "--qkv", args.qkv,
                 "--dqc-iters", str(args.dqc_iters), "--dqc-batch", str(args.dqc_batch),
                 "--dqc-patch", str(args.dqc_patch), "--calib-data", args.calib_data, "--crops", str(args.crops),
                 "--out", recipe, *flags, *(f"--layer-bits={rule}" for rule in args.layer_bits)]
    export = ["export", args.model, *scale, "--recipe", recipe, "--target", args.target, "--tile", args.tile,
              "--out", onnx]
    gates = [f"--{k.replace('_', '-')}={v}" for k, v in
             (("max_psnr_drop", args.max_psnr_drop), ("min_parity_psnr", args.min_parity_psnr),
              ("min_speedup", args.min_speedup)) if v is not None]
    check = ["check", "--fp", args.model, *scale, "--engine", onnx, "--recipe", recipe, "--data", args.check_data,
             "--report", str(folder / "report"), "--latency-runs", str(args.latency_runs), *gates]
    return [("calibrate", calibrate), ("export", export), ("check", check)]


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from srq.errors import SrqError
    from srq.pipeline.cli import main

    settings = [b.strip().lower() for b in args.bits.split(",") if b.strip()]
    if not settings:
        raise SrqError("--bits: give at least one wNaM setting")
    for bits in settings:
        try:
            parse_bits(bits)
        except argparse.ArgumentTypeError as e:
            raise SrqError(f"--bits: {e}") from None
    verdicts = []
    for i, bits in enumerate(settings, 1):
        folder = args.out / bits
        folder.mkdir(parents=True, exist_ok=True)
        for j, (stage, argv) in enumerate(_stage_args(args, bits, folder), 1):
            print(f"[{bits} {i}/{len(settings)}] {j}/3 {stage}", flush=True)
            start = time.perf_counter()
            code = main(argv)
            print(f"[{bits} {i}/{len(settings)}] {j}/3 {stage}: {time.perf_counter() - start:.1f} s", flush=True)
            if code == 2 or (code != 0 and stage != "check"):
                return code
        report = json.loads((folder / "report" / "report.json").read_text())
        verdicts.append((bits, report))
    print()
    for bits, report in verdicts:
        s = report["summary"]
        print(f"{bits}: {'PASSED' if report['passed'] else 'FAILED'}  Y-PSNR {s['fp_psnr_y']:.3f} -> "
              f"{s['q_psnr_y']:.3f} dB, parity {s.get('parity_psnr') or float('nan'):.2f} dB, "
              f"x{s['speedup']:.2f}  {args.out / bits / 'report' / 'report.html'}")
    return 0 if all(r["passed"] for _, r in verdicts) else 1
