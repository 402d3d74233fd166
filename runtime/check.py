"""``run_check``: the whole release check over two engines and a dataset, ending in a report.

FP engine and quantized engine (same tile size, same scale) run tiled over every image;
each output is scored against the ground truth, the engine against FP, and against the
reference float outputs when given (e.g. the fake-quantized PyTorch model); both engines
are timed interleaved; the gates decide ``passed``. The report folder is claimed before
any work and appears only complete. The CLI turns ``passed: false`` into exit code 1.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping

import numpy as np
from tqdm import tqdm

from srq.errors import SrqError
from srq.imaging.metrics import to_uint8
from srq.runtime.compare import mean_of, parity, psnr_y_between, quality_vs_gt
from srq.runtime.engine import Engine
from srq.runtime.gates import Gate, evaluate
from srq.runtime.latency import measure_latency
from srq.runtime.report import Crop, Report, prepare_report_dir, publish_report_dir, write_report
from srq.runtime.sizes import packed_size_bytes
from srq.runtime.tiling import default_overlap, upscale_rgb

CROP = 96  # HR pixels per side of the report's crops
MAX_CROPS = 6


def check_pair(fp: Engine, q: Engine, scale: int) -> None:
    """SrqError unless both engines take the same tile and upscale by ``scale``."""
    if fp.scale != scale:
        raise SrqError(f"{fp.path}: upscales x{fp.scale}, but the data is for x{scale}")
    if q.scale != scale:
        raise SrqError(f"{q.path}: upscales x{q.scale}, but the data is for x{scale}")
    if fp.input_shape != q.input_shape:
        raise SrqError(f"{q.path}: input {q.input_shape} differs from the FP model's "
                       f"{fp.input_shape} ({fp.path}): engine from another model or tile size?")


def worst_window(a: np.ndarray, b: np.ndarray, size: int = CROP) -> tuple[int, int]:
    """Top-left ``(y, x)`` of the ``size`` window (stride size/2) where |a - b| is largest."""
    d = np.abs(a.astype(np.float32) - b.astype(np.float32)).sum(axis=2)
    h, w = d.shape
    ch, cw = min(size, h), min(size, w)
    ys = range(0, h - ch + 1, max(ch // 2, 1))
    xs = range(0, w - cw + 1, max(cw // 2, 1))
    return max(((y, x) for y in ys for x in xs), key=lambda p: d[p[0]:p[0] + ch, p[1]:p[1] + cw].sum())


def run_check(fp: Engine, q: Engine, dataset: Iterable, scale: int, gates: list[Gate],
              report_dir: str | os.PathLike, reference_outputs: Mapping[str, np.ndarray] | None = None,
              sites: list[dict] | None = None, overlap: int | None = None, latency_runs: int = 20,
              inputs: dict | None = None, progress: bool | None = None) -> Report:
    """Check ``q`` against ``fp`` on ``dataset`` (samples with ``name``, ``hr``, ``lr`` uint8).

    ``reference_outputs``: name -> (s*H, s*W, 3) float output the engine must reproduce.
    ``sites``: per-site dicts (the recipe's: name, kind, bits, lb, ub, scale, zero_point,
    ...; arrays summarised) shown as a table. Returns the Report (also written to ``report_dir``).
    """
    tmp = prepare_report_dir(report_dir)
    try:
        check_pair(fp, q, scale)
        overlap = default_overlap(fp.tile) if overlap is None else overlap
        rows, crops = [], []
        for sample in tqdm(dataset, desc="check", unit="image", disable=None if progress is None else not progress):
            lr = sample.lr.astype(np.float32) / 255.0
            fp_out, q_out = upscale_rgb(fp, lr, overlap), upscale_rgb(q, lr, overlap)
            if sample.hr.shape != fp_out.shape:
                raise SrqError(f"{sample.name}: HR {sample.hr.shape} is not x{scale} of LR {sample.lr.shape}")
            fp_gt, q_gt = quality_vs_gt(fp_out, sample.hr, scale), quality_vs_gt(q_out, sample.hr, scale)
            row = {"name": sample.name, "fp_psnr_y": fp_gt["psnr_y"], "fp_ssim_y": fp_gt["ssim_y"],
                   "q_psnr_y": q_gt["psnr_y"], "q_ssim_y": q_gt["ssim_y"],
                   "q_vs_fp_psnr_y": psnr_y_between(q_out, fp_out, scale)}
            if reference_outputs is not None:
                if sample.name not in reference_outputs:
                    raise SrqError(f"{sample.name}: no reference output for this image")
                row.update(parity(q_out, reference_outputs[sample.name]))
            rows.append(row)
            if len(crops) < MAX_CROPS:
                fp8, q8 = to_uint8(fp_out), to_uint8(q_out)
                y, x = worst_window(q8, fp8)
                win = np.s_[y:y + CROP, x:x + CROP]
                crops.append(Crop(sample.name, (y, x), sample.hr[win], fp8[win], q8[win]))
        if not rows:
            raise SrqError("dataset: no images")
        latency = measure_latency(fp, q, runs=latency_runs, progress=progress)
        summary = {k: mean_of(rows, k) for k in ("fp_psnr_y", "fp_ssim_y", "q_psnr_y", "q_ssim_y",
                                                  "q_vs_fp_psnr_y", "parity_psnr", "parity_frac_over")}
        summary.update(
            psnr_drop=summary["fp_psnr_y"] - summary["q_psnr_y"],
            parity_psnr_min=min((r["parity_psnr"] for r in rows if "parity_psnr" in r), default=None),
            fp_ms=latency.fp.median, fp_p90_ms=latency.fp.p90, q_ms=latency.q.median,
            q_p90_ms=latency.q.p90, speedup=latency.speedup, fp_bytes=fp.path.stat().st_size,
            q_bytes=q.path.stat().st_size,
            q_bytes_theoretical=packed_size_bytes(q.path) if q.path.suffix == ".onnx" else None,
            images=len(rows), scale=scale)
        report = Report(summary=summary, per_image=rows, gates=list(gates),
                        failures=evaluate(list(gates), summary), latency=latency,
                        sites=list(sites or []), crops=crops,
                        inputs={"fp": str(fp.path), "engine": str(q.path), "tile": list(fp.tile),
                                "overlap": overlap, **(inputs or {})})
        write_report(report, tmp)
        publish_report_dir(tmp, report_dir)
        return report
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
