"""PTQ ablation grid (issue #4): models x bits x methods x {phase 1, +DQC(N)} x sets -> JSONL -> docs/ablation.md.

``run`` calibrates each cell with `srq calibrate` (its own parser and ``run``, in-process) into a
recipe cached under ``--recipes`` (reused when the same cell is asked again, e.g. for another
set), scores it with ``srq.pipeline.evaluation.evaluate_model`` (what `srq eval --recipe` does:
fake-quant, Y-PSNR/SSIM, border = scale) and appends one line per (cell, set) to the JSONL.
Cells already in the JSONL are skipped, so a killed run resumes where it stopped. The FP model
is scored once per (model, set) as the reference. ``render`` turns the JSONL into the report;
the hand-written block between ``<!-- notes -->`` and ``<!-- /notes -->`` of an existing report
is kept.

    nice -n 15 .venv/bin/python benchmarks/ablation.py run \
        --models ../shared/data/weights/IMDN/IMDN_x2.pth --bits w8a8 w4a4 \
        --methods minmax dobi sorted+beta --dqc 0 --sets ../shared/data/benchmarks/Set5
    .venv/bin/python benchmarks/ablation.py render
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import signal
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ablation.jsonl"
REPORT = ROOT / "docs" / "ablation.md"
RECIPES = Path("build/ablation")  # relative to the working directory (the repository root)
NOTES_BEGIN, NOTES_END = "<!-- notes -->", "<!-- /notes -->"
METHOD_ORDER = ("fp", "minmax", "percentile", "dobi", "sorted", "sorted+beta")
BITS_ORDER = ("fp", "w8a8", "w6a6", "w4a4", "w3a3", "w2a2")
SET_ORDER = ("Set5", "Set14", "B100")
# issue #4's grid per architecture: its bit widths, and the DQC setting run for every method (besides phase 1)
GRID = {"IMDN": (("w8a8", "w4a4", "w3a3", "w2a2"), "+DQC(100, b4, p32)"),
        "PAN": (("w8a8", "w4a4", "w3a3", "w2a2"), "+DQC(100, b4, p32)"),
        "SwinIR": (("w4a4", "w2a2"), "+DQC(40, b4, p48)")}

# Published Y-PSNR / SSIM of the same model family and bits ({(arch, scale): {row: {(bits, set): (psnr, ssim)}}}).
# FP of IMDN x2 (paper) and PAN x4 (authors' logs): ../shared/data/README.md. SwinIR-light x2: 2DQuant paper
# Table 3 (/work/shared/notes/methods.md, section 5) -- the official checkpoint, not srq's self-trained one.
PUBLISHED: dict[tuple[str, int], dict[str, dict[tuple[str, str], tuple[float, float | None]]]] = {
    ("IMDN", 2): {"FP, IMDN paper": {("fp", "Set5"): (38.00, 0.9605), ("fp", "Set14"): (33.63, 0.9177),
                                     ("fp", "B100"): (32.19, 0.8996)}},
    ("PAN", 4): {"FP, PAN authors' logs": {("fp", "Set5"): (32.1311, 0.89481), ("fp", "Set14"): (28.6107, 0.78215),
                                           ("fp", "B100"): (27.5914, 0.73627)}},
    ("SwinIR", 2): {
        "FP, official SwinIR-light (2DQuant T3)": {("fp", "Set5"): (38.15, 0.9611), ("fp", "Set14"): (33.86, 0.9206),
                                                  ("fp", "B100"): (32.31, 0.9012)},
        "MinMax (2DQuant T3)": {("w4a4", "Set5"): (34.39, None), ("w3a3", "Set5"): (28.19, None),
                                ("w2a2", "Set5"): (33.88, None)},
        "Percentile (2DQuant T3)": {("w4a4", "Set5"): (37.37, None), ("w3a3", "Set5"): (34.37, None),
                                    ("w2a2", "Set5"): (30.82, None)},
        "DOBI (2DQuant T3)": {("w4a4", "Set5"): (37.44, 0.9568), ("w4a4", "Set14"): (33.15, 0.9132),
                              ("w4a4", "B100"): (31.75, 0.8937), ("w3a3", "Set5"): (36.37, 0.9496),
                              ("w3a3", "Set14"): (32.33, 0.9041), ("w3a3", "B100"): (31.12, 0.8836),
                              ("w2a2", "Set5"): (35.25, 0.9361), ("w2a2", "Set14"): (31.72, 0.8917),
                              ("w2a2", "B100"): (30.62, 0.8699)},
        "2DQuant = DOBI + DQC (2DQuant T3)": {
            ("w4a4", "Set5"): (37.87, 0.9594), ("w4a4", "Set14"): (33.41, 0.9161), ("w4a4", "B100"): (32.02, 0.8971),
            ("w3a3", "Set5"): (37.32, 0.9567), ("w3a3", "Set14"): (32.85, 0.9106), ("w3a3", "B100"): (31.60, 0.8911),
            ("w2a2", "Set5"): (36.00, 0.9497), ("w2a2", "Set14"): (31.98, 0.9012), ("w2a2", "B100"): (30.91, 0.8810)},
    },
}


@dataclass(frozen=True)
class Cell:
    """One calibration of the grid: ``bits`` "w4a4" (or "fp"), ``method`` "dobi" / "sorted+beta" (or "fp")."""

    model: str  # checkpoint path or built-in name, as given
    bits: str
    method: str
    dqc_iters: int = 0
    dqc_batch: int = 8
    dqc_patch: int = 48
    seed: int = 0
    conv_output_bits: int = 8  # `srq calibrate --conv-output-bits` (0 = conv outputs not requantized)
    float_output: tuple[str, ...] = ()  # `srq calibrate --float-output` globs
    qkv: str = "split"  # `srq calibrate --qkv` (SwinIR)
    layer_bits: tuple[str, ...] = ()  # `srq calibrate --layer-bits` rules (mixed precision)

    @property
    def label(self) -> str:
        """Table row name: the method, ``+DQC(N, bB, pP)`` when phase 2 ran."""
        label = self.method if self.conv_output_bits == 8 else f"{self.method}, conv out {self.conv_output_bits or 'FP'}"
        if self.float_output:
            label += f", {' '.join(self.float_output)} float out"
        if self.qkv != "split":
            label += f", qkv {self.qkv}"
        if self.layer_bits:
            label += f", {' '.join(self.layer_bits)}"
        if not self.dqc_iters:
            return label
        return f"{label}+DQC({self.dqc_iters}, b{self.dqc_batch}, p{self.dqc_patch})"

    def calibrate_argv(self, recipe: Path) -> list[str]:
        """Arguments of `srq calibrate` for this cell (writing ``recipe``)."""
        method, _, beta = self.method.partition("+")
        argv = [self.model, "--bits", self.bits, "--method", method, "--seed", str(self.seed), "--out", str(recipe)]
        if beta:
            argv.append("--bias-correction")
        if self.conv_output_bits != 8:
            argv += ["--conv-output-bits", str(self.conv_output_bits)]
        for glob in self.float_output:
            argv += ["--float-output", glob]
        if self.qkv != "split":
            argv += ["--qkv", self.qkv]
        for rule in self.layer_bits:
            argv += ["--layer-bits", rule]
        if self.dqc_iters:
            argv += ["--dqc-iters", str(self.dqc_iters), "--dqc-batch", str(self.dqc_batch),
                     "--dqc-patch", str(self.dqc_patch)]
        return argv

    def key(self, fingerprint: str) -> str:
        """Identity of the calibration: the settings that change the recipe, and the weights' fingerprint."""
        fields = asdict(self) | {"model": fingerprint}
        for name, default in (("conv_output_bits", 8), ("float_output", ()), ("qkv", "split"), ("layer_bits", ())):
            if fields[name] == default:  # keys of cells from before the option stay valid
                del fields[name]
        if not self.dqc_iters:
            fields |= {"dqc_batch": 0, "dqc_patch": 0}
        if self.method == "fp":
            fields |= {"seed": 0}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def parse_method(text: str) -> str:
    from srq.pipeline.commands.calibrate import METHODS

    method, _, extra = text.partition("+")
    if method not in METHODS or extra not in ("", "beta"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected one of {', '.join(METHODS)}, optionally +beta")
    return text


def parse_bits(text: str) -> str:
    from srq.pipeline.commands.calibrate import parse_bits as bits

    w, a = bits(text)
    return f"w{w}a{a}"


def machine() -> dict:
    import torch

    return {"node": platform.node(), "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()}


def done_keys(results: Path) -> set[tuple[str, str]]:
    """``(cell key, set)`` pairs already in the JSONL."""
    if not results.exists():
        return set()
    return {(r["key"], r["set"]) for r in read_results(results)}


def read_results(results: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(results.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SystemExit(f"{results}:{n}: not JSON ({exc.msg}); remove the line and run again") from None
    return rows


def append(results: Path, row: dict) -> None:
    """One line, one ``write`` on an O_APPEND descriptor (parallel runs do not interleave lines)."""
    results.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(results, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(row) + "\n").encode())
    finally:
        os.close(fd)


def calibrate_cell(cell: Cell, recipe: Path) -> tuple[float, bool]:
    """Run `srq calibrate` for ``cell`` unless ``recipe`` exists; (wall s of that run or 0, reused?)."""
    from srq.pipeline.commands import calibrate

    if recipe.exists() and recipe.with_suffix(".safetensors").exists():
        return 0.0, True
    parser = argparse.ArgumentParser(prog="srq calibrate")
    calibrate.add_arguments(parser)
    recipe.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    calibrate.run(parser.parse_args(cell.calibrate_argv(recipe)))
    return time.perf_counter() - start, False


def run_grid(args: argparse.Namespace) -> int:
    import torch

    from srq.calib.recipe import Recipe
    from srq.pipeline.evaluation import evaluate_model
    from srq.zoo.loader import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    invocation = "python benchmarks/ablation.py " + shlex.join(sys.argv[1:])
    done = done_keys(args.results)
    for spec in args.models:
        model = load_model(spec)
        cells = [Cell(spec, "fp", "fp")] if not args.no_fp else []
        cells += [Cell(spec, bits, method, n, args.dqc_batch if n else 8, args.dqc_patch if n else 48, args.seed,
                       args.conv_output_bits, tuple(args.float_output), args.qkv, tuple(args.layer_bits))
                  for bits in args.bits for method in args.methods for n in args.dqc]
        for cell in cells:
            key = cell.key(model.fingerprint)
            todo = [s for s in args.sets if (key, Path(s).name) not in done]
            if not todo:
                continue
            recipe_path, calib_wall, reused, meta = None, 0.0, False, None
            if cell.method != "fp":
                recipe_path = args.recipes / f"{model.arch}x{model.scale}-{cell.bits}-{cell.method}-{key}.json"
                calib_wall, reused = calibrate_cell(cell, recipe_path)
                meta = Recipe.load(recipe_path).calibration
            for data in todo:
                start = time.perf_counter()
                result = evaluate_model(spec, data, recipe=recipe_path)
                eval_wall = time.perf_counter() - start
                row = {
                    "key": key, "model": spec, "arch": model.arch, "scale": model.scale,
                    "fingerprint": model.fingerprint, "bits": cell.bits, "method": cell.method, "label": cell.label,
                    "dqc": None if not cell.dqc_iters else {"iterations": cell.dqc_iters, "batch": cell.dqc_batch,
                                                            "patch": cell.dqc_patch},
                    "seed": cell.seed, "set": Path(data).name, "data": str(data),
                    "psnr_y": round(result["psnr_y"], 4), "ssim_y": round(result["ssim_y"], 5),
                    "images": {r["name"]: [round(r["psnr_y"], 4), round(r["ssim_y"], 5)] for r in result["images"]},
                    "eval_wall_s": round(eval_wall, 2),
                    "calibrate_cmd": None if recipe_path is None else "srq calibrate " + shlex.join(
                        cell.calibrate_argv(recipe_path)),
                    "eval_cmd": "srq eval " + shlex.join([spec, "--data", str(data)] + (
                        ["--recipe", str(recipe_path)] if recipe_path else [])),
                    "invocation": invocation, "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "load_avg_1m": round(os.getloadavg()[0], 2), "machine": machine(),
                }
                if meta is not None:
                    row["calibration"] = {
                        "cli_wall_s": round(calib_wall, 2) if not reused else None, "recipe_reused": reused,
                        "calibrate_wall_s": meta.wall_time_s, "iterations": meta.iterations, "data": meta.data,
                        "dqc_result": {k: v for k, v in meta.settings.get("dqc_result", {}).items()
                                       if k != "val_psnr_db"} or None,
                        "dqc_val_psnr_db": meta.settings.get("dqc_result", {}).get("val_psnr_db")}
                append(args.results, row)
                done.add((key, row["set"]))
                print(f"{model.arch} x{model.scale} {cell.bits} {cell.label} {row['set']}: "
                      f"{row['psnr_y']:.4f} dB / {row['ssim_y']:.5f} (eval {eval_wall:.0f} s)", flush=True)
    return 0


# ---------------------------------------------------------------- report


def _model_name(r: dict) -> str:
    name = f"{'SwinIR-light' if r['arch'] == 'SwinIR' else r['arch']} x{r['scale']}"
    return f"{name} ({r['model']}, weights sha256 {r['fingerprint'][:12]})"


def _order(values, order) -> list:
    return sorted(values, key=lambda v: (order.index(v) if v in order else len(order), v))


def _row_order(label: str) -> tuple:
    method, _, dqc = label.partition("+DQC")
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), dqc != "", dqc, label)


def _fmt(psnr: float, ssim: float | None, fp: float | None) -> str:
    text = f"{psnr:.2f}" + (f" / {ssim:.4f}" if ssim is not None else "")
    return text + (f" ({psnr - fp:+.2f})" if fp is not None else "")


def _missing(arch: str, cells: dict) -> str:
    """One line: the cells of issue #4's grid (``GRID``: every method, phase 1 and its DQC setting, on
    Set5 / Set14 / B100; FP on each set) that ``cells`` ((label, bits, set) -> record) lacks. Rows
    beyond the grid (other DQC settings, conv outputs FP, float outputs) were measured where useful."""
    if arch not in GRID:
        return ""
    bits, dqc = GRID[arch]
    want = [("fp", "fp", s) for s in SET_ORDER] + [
        (m + extra, b, s) for b in bits for m in METHOD_ORDER[1:] for extra in ("", dqc) for s in SET_ORDER]
    gaps = [f"{label} {b.upper()} {s}" for label, b, s in want if (label, b, s) not in cells]
    return (f"Issue #4's grid here: {', '.join(b.upper() for b in bits)} x {len(METHOD_ORDER) - 1} methods x "
            f"{{phase 1, {dqc[1:]}}} x {', '.join(SET_ORDER)}: " + (
                f"**{len(gaps)} of {len(want)} cells missing**: {'; '.join(gaps)}." if gaps else
                f"all {len(want)} cells measured."))


def render(rows: list[dict], notes: str) -> str:
    """The markdown report of ``rows`` (JSONL records; a later record of the same (key, set) wins)."""
    latest = {(r["key"], r["set"]): r for r in rows}
    for r in latest.values():  # DQC stopped by Ctrl-C (best state so far kept): say so in the row name
        done = (r.get("calibration") or {}).get("iterations", 0)
        if r["dqc"] and done < r["dqc"]["iterations"]:
            r["label"] += f" stopped at {done}"
    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in latest.values():
        by_model[_model_name(r)].append(r)
    out = ["# PTQ ablation on real weights (issue #4)", "",
           "Y-PSNR dB / SSIM (BT.601 Y, border = scale), fake-quantized exactly as `srq eval --recipe` scores it; "
           "in brackets the PSNR change vs our FP number of the same set. Produced by `benchmarks/ablation.py` from "
           "`benchmarks/results/ablation.jsonl` (one line per cell and set: settings, per-image scores, wall times, "
           "machine, load). Calibration data: `srq calibrate`'s default (32 LR crops 64x64 of builtin:calib, "
           "seed 0); `+beta` = `--bias-correction` (on every two-sided input, `--beta-sites all`, 2DQuant+; "
           "`srq run` shifts layer inputs only, docs/beta-cost.md); "
           "`+DQC(N, bB, pP)` = N DQC iterations, batch B, LR patch P. "
           "Timings come from a 2-core box that ran two benchmark jobs at once (one thread each): "
           "they are inflated, the load average is in each record.", "",
           NOTES_BEGIN, notes.strip(), NOTES_END, ""]
    out += ["## Acceptance (issue #4)", "", *acceptance(latest.values()), ""]
    for name in sorted(by_model):
        recs = by_model[name]
        fp = {r["set"]: r["psnr_y"] for r in recs if r["method"] == "fp"}
        bits = _order({r["bits"] for r in recs}, BITS_ORDER)
        sets = _order({r["set"] for r in recs}, SET_ORDER)
        cols = [(b, s) for b in bits for s in sets]
        cells = {(r["label"], r["bits"], r["set"]): r for r in recs}
        labels = sorted({r["label"] for r in recs}, key=_row_order)
        out += [f"## {name}", "", "| method | " + " | ".join(f"{b.upper()} {s}" for b, s in cols) + " |",
                "|---|" + "---|" * len(cols)]
        for label in labels:
            line = ["—" if (label, b, s) not in cells else
                    _fmt(cells[label, b, s]["psnr_y"], cells[label, b, s]["ssim_y"], fp.get(s) if label != "fp" else None)
                    for b, s in cols]
            out.append(f"| {label} | " + " | ".join(line) + " |")
        arch, scale = recs[0]["arch"], recs[0]["scale"]
        for label, pub in PUBLISHED.get((arch, scale), {}).items():
            line = [(_fmt(*pub[c], None) if c in pub else "") for c in cols]
            if any(line):
                out.append(f"| *published: {label}* | " + " | ".join(line) + " |")
        out += ["", _missing(recs[0]["arch"], cells), ""]
        out += timing_table(recs)
    out += ["## Commands", "", "Grid runs, in the order they were started (repository root, `.venv/bin/python`):", "",
            "```"]
    seen: list[str] = []
    for r in sorted(latest.values(), key=lambda r: r["time_utc"]):
        if r["invocation"] not in seen:
            seen.append(r["invocation"])
    out += seen + ["```", "",
                   "Each cell is the `srq calibrate` run below (recipes under `build/ablation/`, not committed) "
                   "followed by `srq eval MODEL --data SET --recipe RECIPE` per set:", "",
                   "<details><summary>calibrate commands</summary>", "", "```"]
    cmds = sorted({r["calibrate_cmd"] for r in latest.values() if r.get("calibrate_cmd")})
    out += cmds + ["```", "", "</details>", ""]
    return "\n".join(out)


def timing_table(recs: list[dict]) -> list[str]:
    """Per calibration: wall time of `srq calibrate`, of calibrate() itself, DQC s/step, eval wall per set."""
    by_key: dict[str, list[dict]] = defaultdict(list)
    for r in recs:
        if r["method"] != "fp":
            by_key[r["key"]].append(r)
    if not by_key:
        return []
    out = ["Wall times (s; loaded shared box, see the intro): `srq calibrate` run (load, crops, calibrate, save), "
           "of which calibrate() (observe + phase 1 [+ DQC]), DQC s/step and best iteration, eval per set; "
           "load = 1-min load average at the first eval.", "",
           "| bits | method | calibrate run | calibrate() | DQC s/step (best it.) | eval | load |", "|---|---|---|---|---|---|---|"]
    for key, rs in sorted(by_key.items(), key=lambda kv: (_order([kv[1][0]["bits"]], BITS_ORDER)[0],
                                                          _row_order(kv[1][0]["label"]))):
        rs.sort(key=lambda r: r["time_utc"])
        cal = next((r["calibration"] for r in rs if not r["calibration"]["recipe_reused"]), rs[0]["calibration"])
        dqc = cal.get("dqc_result")
        dqc_text = f"{dqc['step_time_s']:.2f} ({dqc['best_iteration']})" if dqc else ""
        evals = ", ".join(f"{r['set']} {r['eval_wall_s']:.0f}" for r in sorted(rs, key=lambda r: _order(
            [r["set"]], SET_ORDER)[0] if r["set"] in SET_ORDER else 9))
        run_wall = f"{cal['cli_wall_s']:.0f}" if cal.get("cli_wall_s") else "?"
        out.append(f"| {rs[0]['bits'].upper()} | {rs[0]['label']} | {run_wall} | {cal['calibrate_wall_s']:.0f} | "
                   f"{dqc_text} | {evals} | {rs[0]['load_avg_1m']} |")
    return out + [""]


def acceptance(rows) -> list[str]:
    """Issue #4's acceptance points, each with its numbers or 'not measured'."""
    rows = list(rows)

    def get(arch, scale, bits, label, s):
        return next((r for r in rows if (r["arch"], r["scale"], r["bits"], r["label"], r["set"])
                     == (arch, scale, bits, label, s)), None)

    out = []
    for arch, scale in (("IMDN", 2), ("PAN", 4)):
        fp = get(arch, scale, "fp", "fp", "Set5")
        best = [r for r in rows if (r["arch"], r["scale"], r["bits"], r["set"]) == (arch, scale, "w8a8", "Set5")]
        if fp is None or not best:
            out.append(f"- W8A8 drop <= 0.05 dB on Set5, {arch} x{scale}: not measured.")
            continue
        drops = ", ".join(f"{r['label']} {r['psnr_y'] - fp['psnr_y']:+.3f}" for r in sorted(
            best, key=lambda r: _row_order(r["label"])))
        ok = [r["label"] for r in best if fp["psnr_y"] - r["psnr_y"] <= 0.05]
        out.append(f"- W8A8 drop <= 0.05 dB on Set5, {arch} x{scale} (FP {fp['psnr_y']:.4f}): "
                   f"{'holds for ' + ', '.join(ok) if ok else 'does not hold'} (dB vs FP: {drops}).")
    for arch, scale in (("IMDN", 2), ("PAN", 4), ("SwinIR", 2)):
        full = sorted({r["label"] for r in rows if (r["arch"], r["scale"], r["bits"]) == (arch, scale, "w4a4")
                       and r["label"].startswith("sorted+beta+DQC")})
        sets = _order({r["set"] for r in rows if (r["arch"], r["scale"]) == (arch, scale)}, SET_ORDER)
        if not full:
            out.append(f"- W4A4 full method (sorted+beta+DQC) beats DOBI and MinMax on every set, {arch} x{scale}: "
                       "not measured (no sorted+beta+DQC cell).")
            continue
        for label in full:
            parts, verdict = [], True
            for s in sets:
                f, d, m = (get(arch, scale, "w4a4", lab, s) for lab in (label, "dobi", "minmax"))
                if f is None or d is None or m is None:
                    parts.append(f"{s}: incomplete")
                    verdict = None if verdict is not False else False
                    continue
                win = f["psnr_y"] > d["psnr_y"] and f["psnr_y"] > m["psnr_y"]
                verdict = verdict and win if verdict is not None else verdict
                parts.append(f"{s} {f['psnr_y']:.2f} vs DOBI {d['psnr_y']:.2f} / MinMax {m['psnr_y']:.2f}")
            status = {True: "holds", False: "does not hold", None: "partly measured"}[verdict]
            out.append(f"- W4A4 {label} beats DOBI and MinMax on every set, {arch} x{scale}: {status} "
                       f"({'; '.join(parts)}).")
    fp = get("IMDN", 2, "fp", "fp", "Set5")
    cands = [r for r in rows if (r["arch"], r["scale"], r["bits"], r["set"]) == ("IMDN", 2, "w4a4", "Set5")]
    if fp and cands:
        best = max(cands, key=lambda r: r["psnr_y"])
        cal = best["calibration"]
        ok = fp["psnr_y"] - best["psnr_y"] <= 0.4 and cal["calibrate_wall_s"] <= 1800
        out.append(f"- IMDN x2 W4A4 within 0.4 dB of FP on Set5 with <= 30 min calibration: "
                   f"{'holds' if ok else 'does not hold'}; best cell {best['label']} {best['psnr_y']:.4f} dB "
                   f"({best['psnr_y'] - fp['psnr_y']:+.3f} dB vs FP {fp['psnr_y']:.4f}), calibrate() "
                   f"{cal['calibrate_wall_s']:.0f} s on the loaded box.")
    else:
        out.append("- IMDN x2 W4A4 within 0.4 dB of FP on Set5: not measured.")
    for arch, scale in (("IMDN", 2), ("SwinIR", 2)):
        p1 = [r["calibration"] for r in rows if (r["arch"], r["scale"]) == (arch, scale) and r["method"] != "fp"
              and not r["dqc"] and not r["calibration"]["recipe_reused"]]
        if p1:
            walls = sorted(c["calibrate_wall_s"] for c in p1)
            out.append(f"- Phase 1 (observe + search, all sites) <= 60 s on 2 cores, {arch} x{scale}: "
                       f"{'holds' if walls[0] <= 60 else 'not shown'}: calibrate() took {walls[0]:.0f} s at best, "
                       f"median {walls[len(walls) // 2]:.0f} s, worst {walls[-1]:.0f} s over {len(walls)} phase-1 "
                       "calibrations, wall time on the loaded box (two jobs on 2 cores) with 1 torch thread (an unloaded run is "
                       "no slower than its fastest loaded one; the slow ones were starved by other jobs).")
        else:
            out.append(f"- Phase 1 <= 60 s on 2 cores, {arch} x{scale}: not measured.")
    return out


def render_report(args: argparse.Namespace) -> int:
    notes = "(none yet)"
    if args.out.exists():
        text = args.out.read_text()
        if NOTES_BEGIN in text and NOTES_END in text:
            notes = text.split(NOTES_BEGIN, 1)[1].split(NOTES_END, 1)[0]
    report = render(read_results(args.results), notes)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(report)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("run", help="run the grid (resumable), appending to the JSONL")
    g.add_argument("--models", nargs="+", required=True, help="checkpoints or built-in names")
    g.add_argument("--bits", nargs="+", type=parse_bits, required=True, metavar="wNaM")
    g.add_argument("--methods", nargs="+", type=parse_method, required=True,
                   metavar="METHOD[+beta]", help="minmax, percentile, dobi, sorted; +beta = --bias-correction")
    g.add_argument("--dqc", nargs="+", type=int, default=[0], metavar="N", help="DQC iterations per cell (0 = phase 1)")
    g.add_argument("--dqc-batch", type=int, default=8)
    g.add_argument("--dqc-patch", type=int, default=48)
    g.add_argument("--sets", nargs="+", required=True, metavar="DIR", help="benchmark folders (Set5, Set14, B100)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--conv-output-bits", type=int, default=8, metavar="B",
                   help="srq calibrate --conv-output-bits (default 8; 0 = conv outputs stay FP)")
    g.add_argument("--float-output", nargs="+", default=[], metavar="GLOB",
                   help="srq calibrate --float-output globs (convs that keep a float output, e.g. LR_conv)")
    g.add_argument("--qkv", choices=("split", "fused"), default="split", help="srq calibrate --qkv (SwinIR)")
    g.add_argument("--layer-bits", nargs="+", default=[], metavar="GLOB=wNaM",
                   help="srq calibrate --layer-bits rules (mixed precision, e.g. LR_conv=w8a8)")
    g.add_argument("--no-fp", action="store_true", help="skip the FP reference rows")
    g.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    g.add_argument("--results", type=Path, default=RESULTS)
    g.add_argument("--recipes", type=Path, default=RECIPES, help="recipe cache folder (default build/ablation)")
    r = sub.add_parser("render", help="write the markdown report from the JSONL")
    r.add_argument("--results", type=Path, default=RESULTS)
    r.add_argument("--out", type=Path, default=REPORT)
    args = p.parse_args(argv)
    # Ctrl-C (or `kill -INT` of a background run, where the shell ignores SIGINT) stops DQC with its best state kept
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return run_grid(args) if args.command == "run" else render_report(args)


if __name__ == "__main__":
    sys.exit(main())
