"""Speed of srq's ORT engines vs the FP32 ONNX model, and vs ONNX Runtime's own quantizer (issue #6).

One command:

    .venv/bin/python benchmarks/speed.py            # IMDN x2, PAN x4, SwinIR-light x2; ~20-60 min loaded

For each net, at one 128x128 LR tile, 1 intra-op thread, ``ORT_ENABLE_ALL``, through
``srq.runtime.ort_engine.OrtEngine`` (the shipped session options):

* ``fp32``: ``srq.export.fp_onnx.export_fp_onnx``;
* ``srq W8A8`` / ``srq W4A4``: ``srq calibrate`` (phase 1; few small crops, since calibration
  quality does not change the graph or its speed) then ``srq export --target ort``;
* SwinIR's srq rows use ``--qkv fused`` (one qkv GEMM, one input quantizer); ``srq W8A8 qkv split``
  is 2DQuant's layout (three GEMMs and a Concat), the default of ``srq calibrate``;
* ``srq W8A8 sw``: ``--symmetric-weights`` at 8 bits, the format ``srq run`` ships (its
  ``--symmetric-8bit-weights`` gives the same grids at W8A8): int8 weights with zero
  point 0, so ORT runs its U8S8 kernels (exact on AVX-512 VNNI / AVX-VNNI CPUs; elsewhere the engine
  sets ``x64quantprecision`` and runs the exact U8U8 ones);
* PAN's ``srq W8A8 sw all``: the same with ``--policy all`` (its HR-side convs quantized too), and
  ``... gates`` with ``--integer-gates`` as well (QLinearSigmoid / QLinearMul);
* ``srq W8A8 int`` / ``srq W4A4 int``: the most integer graph srq calibrates exactly (docs/integer-graph.md):
  ``--first-conv-bits 8 --integer-gates --shared-inputs --integer-residuals``, for PAN with ``--policy all``,
  for IMDN with ``--integer-concats --integer-activations`` (its blocks' LeakyReLU / Split / Concat and
  channel attention on 8-bit levels), and the conv before the PixelShuffle quantized too (``--include
  conv_last`` / ``upsampler.0``; IMDN's at 8 bits in the W4A4 model, ``--layer-bits upsampler.0=w8a8``: at 4
  bits it costs 5 dB); 8-bit weights symmetric;
* ``srq W7A8 sw``: ``srq calibrate --bits w7a8 --symmetric-weights``: 8-bit asymmetric activations,
  symmetric 7-bit weights (``|q| <= 63``), the format for which ORT's fast U8S8 x86 kernels are
  exact without VNNI (srq's W<=7 weights are stored as int8 ``q - zp``, zp 0; 8-bit asymmetric
  weights cannot be, so ``srq W8A8`` runs ORT's U8U8 kernels, docs/speed.md);
* ``ORT qs W8A8``: ``onnxruntime.quantization.quantize_static`` on the FP ONNX (QDQ, uint8
  activations, int8 per-tensor weights: ORT's recommended x86 setting; 4 random tiles to
  calibrate), run with ORT's default kernels (``exact_integer=False``) as its users run it.

All engines of a net are timed interleaved (after ``--warmup`` runs each, round after round,
the order reversed every other round) on one random tile: wall time (``perf_counter``) and the
calling thread's CPU time (``thread_time``; with one intra-op thread ORT computes on the caller,
so this discounts time spent waiting for a core on a loaded machine). Own loop rather than
``srq.runtime.latency.measure_latency``: that one times exactly two engines, wall clock only.
Median and p90 over ``--runs`` (>= 20) via ``srq.runtime.latency.Timing``.

Writes ``docs/speed.json`` (every run time, machine, ORT version, threads, load averages
before/after) and the table between the ``speed-table`` markers of ``docs/speed.md`` (the rest of
that file, the analysis, is kept). Work files (ONNX, recipes) are cached in ``--work``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT.parent / "shared" / "data" / "weights"
INTEGER = ("--first-conv-bits", "8", "--integer-gates", "--shared-inputs", "--integer-residuals")
INTEGER_BLOCKS = ("--integer-concats", "--integer-activations")  # IMDN's blocks (PAN has no Concat / Split)
NETS = {  # label, model, extra `srq calibrate` flags of the srq rows, extra rows {engine: (bits, flags)}
    "imdn": ("IMDN x2", str(WEIGHTS / "IMDN" / "IMDN_x2.pth"), (),
             {"srq W8A8 int": ("w8a8", ("--symmetric-weights", *INTEGER, *INTEGER_BLOCKS, "--include", "upsampler.0")),
              "srq W4A4 int": ("w4a4", (*INTEGER, *INTEGER_BLOCKS, "--include", "upsampler.0",
                                        "--layer-bits", "upsampler.0=w8a8"))}),
    "pan": ("PAN x4", str(WEIGHTS / "PAN" / "PANx4_DF2K.pth"), (),
            {"srq W8A8 sw all": ("w8a8", ("--symmetric-weights", "--policy", "all")),
             "srq W8A8 sw all gates": ("w8a8", ("--symmetric-weights", "--policy", "all", "--integer-gates")),
             "srq W8A8 int": ("w8a8", ("--symmetric-weights", "--policy", "all", *INTEGER, "--include", "conv_last")),
             "srq W4A4 int": ("w4a4", ("--policy", "all", *INTEGER, "--include", "conv_last"))}),
    "swinir": ("SwinIR-light x2", "swinir-light-x2", ("--qkv", "fused"), {"srq W8A8 qkv split": ("w8a8", ())}),
}
TILE = (128, 128)
BEGIN, END = "<!-- speed-table:begin -->", "<!-- speed-table:end -->"
PROFILE_BEGIN, PROFILE_END = "<!-- speed-profile:begin -->", "<!-- speed-profile:end -->"


def _cli(*argv: str) -> None:
    from srq.pipeline.cli import main

    if main(list(argv)) != 0:
        raise SystemExit(f"srq {' '.join(argv)} failed")


def fp_onnx(spec: str, out: Path) -> Path:
    if not out.exists():
        from srq.export.fp_onnx import export_fp_onnx
        from srq.zoo.loader import load_model

        export_fp_onnx(load_model(spec, None), TILE, out)
    return out


def flags_tag(bits: str, flags) -> str:
    """A work-file name for a recipe of ``bits`` and ``srq calibrate`` ``flags`` (``w8a8_integer-gates...``)."""
    return bits + "".join(f.replace("--", "_") if f.startswith("--") else f"-{f}" for f in flags)


def srq_onnx(spec: str, bits: str, work: Path, stem: str, *flags: str) -> Path:
    tag = flags_tag(bits, flags)
    recipe, out = work / f"{stem}_{tag}.json", work / f"{stem}_{tag}.onnx"
    if not recipe.exists():
        _cli("calibrate", spec, "--bits", bits, *flags, "--crops", "8", "--crop-size", "48", "--out", str(recipe))
    if not out.exists():
        _cli("export", spec, "--recipe", str(recipe), "--target", "ort",
             "--tile", f"{TILE[0]}x{TILE[1]}", "--out", str(out))
    return out


def ort_quantized(fp: Path, out: Path) -> Path:
    """ONNX Runtime's ``quantize_static``: QDQ, u8 activations, s8 per-tensor weights."""
    if not out.exists():
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        rng = np.random.default_rng(0)
        shape = (1, 3, *TILE)

        class Tiles(CalibrationDataReader):
            def __init__(self):
                self.feeds = iter([{"lr": rng.random(shape, dtype=np.float32)} for _ in range(4)])

            def get_next(self):
                return next(self.feeds, None)

        quantize_static(str(fp), str(out), Tiles(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def time_interleaved(engines: dict, x: np.ndarray, runs: int, warmup: int, desc: str) -> dict[str, tuple]:
    """{name: (wall ms list, thread-CPU ms list)}, all engines interleaved on tile ``x``."""
    names = list(engines)
    for _ in range(warmup):
        for n in names:
            engines[n].run(x)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for i in tqdm(range(runs), desc=desc, unit="round"):
        for n in (names if i % 2 == 0 else names[::-1]):
            w0, c0 = time.perf_counter(), time.thread_time()
            engines[n].run(x)
            cpu[n].append((time.thread_time() - c0) * 1e3)
            wall[n].append((time.perf_counter() - w0) * 1e3)
    return {n: (wall[n], cpu[n]) for n in names}


def machine() -> dict:
    import onnxruntime as ort

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", cpuinfo)
    flags = set((re.search(r"flags\s*:\s*(.*)", cpuinfo) or [None, ""])[1].split())
    return {"cpu": model.group(1) if model else platform.processor(), "logical_cpus": os.cpu_count(),
            "isa": sorted(f for f in flags if f in {"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"}),
            "onnxruntime": ort.__version__, "python": platform.python_version()}


def op_profile(paths: dict[str, Path], x: np.ndarray, runs: int) -> dict[str, dict[str, list]]:
    """{engine: {op type: [kernel ms per run, nodes]}} from ONNX Runtime's profiler, ``runs`` runs after
    one warm-up each, with the same session options as the timed engines (kept out of the timing:
    profiling slows every node down)."""
    from srq.runtime.ort_engine import OrtEngine, OrtOptions

    out = {}
    for name, path in paths.items():
        engine = OrtEngine(path, OrtOptions(threads=1, save_optimized=False, profile=True,
                                            exact_integer=name != "ORT qs W8A8"))
        for _ in range(runs + 1):
            engine.run(x)
        totals = engine.op_times()  # includes the warm-up run: scale by runs + 1
        out[name] = {op: [round(ms / (runs + 1), 2), n // (runs + 1)] for op, (ms, n) in totals.items()}
        engine.close()
    return out


def bench_net(key: str, work: Path, runs: int, warmup: int, profile_runs: int) -> dict:
    from srq.runtime.latency import Timing
    from srq.runtime.ort_engine import OrtEngine, OrtOptions

    label, spec, flags, extra = NETS[key]
    fp = fp_onnx(spec, work / f"{key}_fp.onnx")
    paths = {"fp32": fp, "srq W8A8": srq_onnx(spec, "w8a8", work, key, *flags),
             "srq W8A8 sw": srq_onnx(spec, "w8a8", work, key, "--symmetric-weights", *flags),
             "srq W7A8 sw": srq_onnx(spec, "w7a8", work, key, "--symmetric-weights", *flags),
             "srq W4A4": srq_onnx(spec, "w4a4", work, key, *flags)}
    paths |= {name: srq_onnx(spec, bits, work, key, *more) for name, (bits, more) in extra.items()}
    paths["ORT qs W8A8"] = ort_quantized(fp, work / f"{key}_ortqs_w8a8.onnx")
    shipped = OrtOptions(threads=1, save_optimized=False)
    engines = {n: OrtEngine(p, shipped if n != "ORT qs W8A8" else OrtOptions(threads=1, save_optimized=False,
                                                                             exact_integer=False))
               for n, p in paths.items()}
    x = np.random.default_rng(0).random(engines["fp32"].input_shape, dtype=np.float32)
    raw = time_interleaved(engines, x, runs, warmup, label)
    rows = []
    fp_wall, fp_cpu = Timing(tuple(raw["fp32"][0])), Timing(tuple(raw["fp32"][1]))
    for n, (wall_ms, cpu_ms) in raw.items():
        wall, cpu = Timing(tuple(wall_ms)), Timing(tuple(cpu_ms))
        rows.append({"engine": n, "file": paths[n].name, "u8u8_kernels": engines[n].u8u8_kernels,
                     "wall_ms": wall.median, "wall_p90_ms": wall.p90, "cpu_ms": cpu.median, "cpu_p90_ms": cpu.p90,
                     "speedup_wall": fp_wall.median / wall.median, "speedup_cpu": fp_cpu.median / cpu.median,
                     "wall_runs_ms": wall_ms, "cpu_runs_ms": cpu_ms})
    for e in engines.values():
        e.close()
    profile = op_profile(paths, x, profile_runs) if profile_runs else {}
    return {"net": label, "tile": list(TILE), "rows": rows, "op_profile": profile}


def profile_table(result: dict, top: int = 6) -> str:
    """Where each engine's time goes: kernel time per run by op type (ONNX Runtime's profiler)."""
    lines = [f"ONNX Runtime's profiler, same run and machine as the table above, {result['profile_runs']} "
             f"runs per engine after one warm-up: kernel time per run summed by op type (node count in "
             f"brackets), the {top} largest, and the rest.", "",
             "| net | engine | kernel ms / run | largest op types: ms (nodes, share) |", "|---|---|---:|---|"]
    for net in result["nets"]:
        for engine, ops in net.get("op_profile", {}).items():
            total = sum(ms for ms, _ in ops.values())
            items = list(ops.items())
            parts = [f"{op} {ms:.0f} ({n}, {ms / total:.0%})" for op, (ms, n) in items[:top]]
            rest = sum(ms for _, (ms, _) in items[top:])
            if rest:
                parts.append(f"rest {rest:.0f} ({rest / total:.0%})")
            lines.append(f"| {net['net']} | {engine} | {total:.0f} | {', '.join(parts)} |")
    return "\n".join(lines)


def table(result: dict) -> str:
    m = result["machine"]
    lines = [f"Measured {result['date']} on {m['cpu']} ({m['logical_cpus']} logical CPUs, "
             f"{', '.join(m['isa'])}), onnxruntime {m['onnxruntime']}, {result['threads']} intra-op thread, "
             f"ORT_ENABLE_ALL, LR tile {TILE[0]}x{TILE[1]}, {result['runs']} interleaved runs per engine after "
             f"{result['warmup']} warm-up. Load average before / after: {result['load_before']} / "
             f"{result['load_after']} ({result['note']}).", "",
             "| net | engine | wall median ms | wall p90 ms | speed-up (wall) | CPU median ms | speed-up (CPU) | x64quantprecision |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for net in result["nets"]:
        for r in net["rows"]:
            lines.append(f"| {net['net']} | {r['engine']} | {r['wall_ms']:.0f} | {r['wall_p90_ms']:.0f} | "
                         f"{r['speedup_wall']:.2f}x | {r['cpu_ms']:.0f} | {r['speedup_cpu']:.2f}x | "
                         f"{'yes' if r['u8u8_kernels'] else 'no'} |")
    lines += ["", "Speed-up = FP32 median / engine median. CPU = the calling thread's CPU time. "
              "x64quantprecision: whether the engine set it (exact U8U8 kernels for int8 weights that could "
              "saturate; uint8-weight models run U8U8 without it). `sw`: symmetric weights."]
    return "\n".join(lines)


def save_result(out: Path, result: dict, lines: list[str]) -> None:
    """Write ``out.json`` (the whole result) and ``out.md`` (``lines``), and print the lines
    (for the smaller benchmark scripts that write a whole report of their own)."""
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def write_docs(result: dict, md: Path, js: Path) -> None:
    js.write_text(json.dumps(result, indent=1) + "\n")
    text = md.read_text() if md.exists() else f"# Speed of the ORT engines\n\n{BEGIN}\n{END}\n"
    blocks = [(BEGIN, END, table(result))]
    if result["profile_runs"]:
        blocks.append((PROFILE_BEGIN, PROFILE_END, profile_table(result)))
    for begin, end, body in blocks:
        if begin not in text or end not in text:
            raise SystemExit(f"{md}: no {begin} ... {end} markers to replace")
        text = text[:text.index(begin)] + f"{begin}\n{body}\n{end}" + text[text.index(end) + len(end):]
    md.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", nargs="+", choices=list(NETS), default=list(NETS))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--profile-runs", type=int, default=10,
                    help="runs per engine under ONNX Runtime's profiler, after the timing (0: no profile)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/srq-speed"))
    ap.add_argument("--note", default="", help="load situation, e.g. 'training job running'")
    ap.add_argument("--md", type=Path, default=ROOT / "docs" / "speed.md")
    ap.add_argument("--json", type=Path, default=ROOT / "docs" / "speed.json")
    args = ap.parse_args(argv)
    if args.runs < 20:
        ap.error("--runs: at least 20 for a stable median")
    args.work.mkdir(parents=True, exist_ok=True)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine(), "threads": 1, "runs": args.runs, "warmup": args.warmup,
              "profile_runs": args.profile_runs,
              "load_before": [round(v, 2) for v in os.getloadavg()], "note": args.note or "no note", "nets": []}
    for key in args.nets:
        result["nets"].append(bench_net(key, args.work, args.runs, args.warmup, args.profile_runs))
    result["load_after"] = [round(v, 2) for v in os.getloadavg()]
    write_docs(result, args.md, args.json)
    print(table(result))
    if args.profile_runs:
        print("\n" + profile_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
