"""How integer srq's ORT graphs get, option by option: speed against FP32 and ONNX Runtime's own quantizer,
and what each option costs in quality (PAN x4 and IMDN x2, W8A8 and W4A4).

One command (~25 min on 2 idle cores; recipes and ONNX files are cached in --work):

    .venv/bin/python benchmarks/integer_graph.py --data ../shared/data/benchmarks/Set5

Each net is calibrated (phase 1, sorted, the default 32 crops of ``builtin:calib``, ``--first-conv-bits 8
--symmetric-8bit-weights``; PAN with ``--policy all``) once per cumulative variant:

* ``tables``: sigmoid gates as float tables of their input levels (the default);
* ``+ integer gates``: ``--integer-gates`` (QLinearSigmoid, QLinearMul; docs/speed.md);
* ``+ shared inputs``: ``--shared-inputs`` (one grid per tensor: layers reading one tensor, or a requantized
  output, read it on one grid);
* ``+ integer residuals``: ``--integer-residuals`` (QLinearAdd on the residual sums; the first conv
  requantized, so the skip path is integer);
* ``+ integer concats``: ``--integer-concats`` (QLinearConcat on IMDN's distilled features, whose channel
  attention then sums 8-bit levels and gates by QLinearMul; inert on PAN, which has no ``srq.zoo.Concat``);
* ``+ integer activations``: ``--integer-activations`` (IMDN's block LeakyReLUs on their readers' grids:
  QLinearLeakyRelu, uint8 Split; inert on PAN, whose LeakyReLU module runs more than once per forward);
* ``+ last conv``: the last conv quantized too, with a requantized output (``--include`` it).

Each recipe is exported for ONNX Runtime at a 128x128 LR tile and scored fake-quantized on ``--data``
(``srq eval``'s Y-PSNR; the engine computes the same levels, which ``tests/`` asserts for every option);
all engines of a net are timed interleaved with the FP32 ONNX model and ``quantize_static`` W8A8 (1 intra-op
thread, thread CPU time; ``benchmarks/speed.py``'s loop). Writes ``docs/integer-graph.md`` and ``.json``.
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
from speed import _cli, flags_tag, machine, ort_quantized, save_result, time_interleaved  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT.parent / "shared" / "data" / "weights"
NETS = {  # label: (weights, flags of every variant, the last conv's path)
    "PAN x4": (WEIGHTS / "PAN" / "PANx4_DF2K.pth", ["--policy", "all"], "conv_last"),
    "IMDN x2": (WEIGHTS / "IMDN" / "IMDN_x2.pth", [], "upsampler.0"),
}
FLAGS = ["--first-conv-bits", "8", "--symmetric-8bit-weights"]
VARIANTS = {"tables": [], "+ integer gates": ["--integer-gates"], "+ shared inputs": ["--shared-inputs"],
            "+ integer residuals": ["--integer-residuals"], "+ integer concats": ["--integer-concats"],
            "+ integer activations": ["--integer-activations"], "+ last conv": []}
TILE = "128x128"
OPS = ("QLinearConv", "QLinearAdd", "QLinearMul", "QLinearLeakyRelu", "QLinearConcat", "Conv", "Transpose",
       "QuantizeLinear", "DequantizeLinear")


def variant_flags(variant: str, last: str) -> list[str]:
    """The flags of ``variant`` and of every variant before it."""
    names = list(VARIANTS)
    flags = [f for name in names[:names.index(variant) + 1] for f in VARIANTS[name]]
    return flags + (["--include", last] if variant == "+ last conv" else [])


def recipe_and_onnx(model: Path, bits: str, flags: list[str], stem: str, work: Path) -> tuple[Path, Path]:
    recipe, onnx = work / f"{stem}.json", work / f"{stem}.onnx"
    if not recipe.exists():
        _cli("calibrate", str(model), "--bits", bits, *FLAGS, *flags, "--out", str(recipe))
    if not onnx.exists():
        _cli("export", str(model), "--recipe", str(recipe), "--target", "ort", "--tile", TILE, "--out", str(onnx))
    return recipe, onnx


def bench_net(label: str, args: argparse.Namespace) -> dict:
    from srq.export.fp_onnx import export_fp_onnx
    from srq.export.ort_fusion import optimized_op_counts
    from srq.pipeline.evaluation import evaluate_model
    from srq.runtime.latency import Timing
    from srq.runtime.ort_engine import OrtEngine, OrtOptions
    from srq.zoo.loader import load_model

    model, net_flags, last = NETS[label]
    work = args.work / label.split()[0].lower()
    work.mkdir(parents=True, exist_ok=True)
    fp = work / "fp.onnx"
    if not fp.exists():
        export_fp_onnx(load_model(str(model)), tuple(map(int, TILE.split("x"))), fp)
    options = OrtOptions(threads=1, save_optimized=False)
    engines = {"fp32": OrtEngine(fp, options),
               "ORT qs W8A8": OrtEngine(ort_quantized(fp, work / "ortqs.onnx"),
                                        OrtOptions(threads=1, save_optimized=False, exact_integer=False))}
    rows = []
    for bits in ("w8a8", "w4a4"):
        for variant in VARIANTS:
            flags = net_flags + variant_flags(variant, last)
            # named by its flags, so that a cache made with another variant list is never taken for this one
            recipe, onnx = recipe_and_onnx(model, bits, flags, flags_tag(bits, flags), work)
            ops = optimized_op_counts(onnx)
            rows.append({"bits": bits, "variant": variant, "flags": flags,
                         "psnr_y": evaluate_model(str(model), args.data, recipe=recipe)["psnr_y"],
                         "ops": {k: ops[k] for k in OPS}})
            engines[f"{bits} {variant}"] = OrtEngine(onnx, options)
    x = np.random.default_rng(0).random(engines["fp32"].input_shape, dtype=np.float32)
    raw = time_interleaved(engines, x, args.runs, 3, label)
    cpu = {name: Timing(tuple(times[1])).median for name, times in raw.items()}
    for r in rows:
        name = f"{r['bits']} {r['variant']}"
        r |= {"cpu_ms": cpu[name], "speedup_cpu": cpu["fp32"] / cpu[name]}
    return {"net": label, "model": str(model), "flags": FLAGS + net_flags, "rows": rows,
            "fp_psnr_y": evaluate_model(str(model), args.data)["psnr_y"], "fp_cpu_ms": cpu["fp32"],
            "ort_qs_cpu_ms": cpu["ORT qs W8A8"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="scoring images, e.g. ../shared/data/benchmarks/Set5")
    ap.add_argument("--nets", nargs="+", choices=list(NETS), default=list(NETS))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--work", type=Path, default=Path("/tmp/srq-integer-graph"))
    ap.add_argument("--note", default="no note", help="load situation, e.g. 'one ablation job running'")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "integer-graph")
    args = ap.parse_args(argv)
    load_before = [round(v, 2) for v in os.getloadavg()]
    nets = [bench_net(label, args) for label in args.nets]
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine(), "data": args.data, "tile": TILE, "runs": args.runs, "nets": nets,
              "load_before": load_before, "load_after": [round(v, 2) for v in os.getloadavg()], "note": args.note,
              "command": "python benchmarks/integer_graph.py " + shlex.join(argv if argv is not None else sys.argv[1:])}
    m = result["machine"]
    lines = ["# How integer the ORT graph gets: speed and quality, option by option", "",
             f"`{result['command']}`, {result['date']}, {m['cpu']} ({m['logical_cpus']} logical CPUs, "
             f"{', '.join(m['isa'])}), onnxruntime {m['onnxruntime']}; load average before / after "
             f"{load_before} / {result['load_after']} ({args.note}). Recipes: phase 1 sorted, `{' '.join(FLAGS)}`, "
             "variants cumulative (each adds its flags to the ones above it; see the script). Y-PSNR of the "
             f"fake-quantized model on `{args.data}` (the engine computes the same levels); speed-up = FP32 ONNX / "
             f"engine thread-CPU median, {TILE} LR tile, 1 thread, {args.runs} interleaved runs per net. Ops: "
             f"counts in ORT's optimized graph ({', '.join(('float ' if op == 'Conv' else '') + op for op in OPS)})."]
    for net in nets:
        fp_ms, qs_ms = net["fp_cpu_ms"], net["ort_qs_cpu_ms"]
        lines += ["", f"## {net['net']} (`{' '.join(net['flags'])}`)", "",
                  f"FP {net['fp_psnr_y']:.4f} dB; FP32 {fp_ms:.0f} ms; ONNX Runtime's quantize_static W8A8 "
                  f"{qs_ms:.0f} ms = {fp_ms / qs_ms:.2f}x in the same run.", "",
                  "| bits | variant | Y-PSNR dB | engine CPU ms | speed-up vs FP32 | ops |",
                  "|---|---|---:|---:|---:|---|"]
        lines += [f"| {r['bits']} | {r['variant']} | {r['psnr_y']:.4f} | {r['cpu_ms']:.0f} | {r['speedup_cpu']:.2f}x | "
                  f"{' / '.join(str(v) for v in r['ops'].values())} |" for r in net["rows"]]
    save_result(args.out, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
