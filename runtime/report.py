"""The check report: ``report.json`` (stable keys), ``report.md`` (a pull-request comment), ``report.html``.

All three are written into a temporary folder next to the requested one and moved into
place at the end, so a report folder that exists is always complete. ``prepare_report_dir``
runs before any work so an unwritable location fails first.

``report.json`` keys (stable): ``srq_version``, ``passed`` (bool), ``gates`` (list of
``{name, metric, op, threshold, value, passed}``), ``failures`` (one line per failed gate),
``summary`` (``fp_psnr_y``, ``fp_ssim_y``, ``q_psnr_y``, ``q_ssim_y``, ``psnr_drop`` = FP -
engine Y-PSNR vs GT in dB, ``q_vs_fp_psnr_y``, ``parity_psnr``, ``parity_psnr_min``,
``parity_frac_over``, ``fp_ms``, ``fp_p90_ms``, ``q_ms``, ``q_p90_ms``, ``speedup``,
``fp_bytes``, ``q_bytes`` (file sizes), ``q_bytes_theoretical`` (``srq.runtime.sizes``:
weights packed at their bit-width; ONNX engines only), ``images``, ``scale``; a value
not measured is null), ``per_image`` (``name`` and the per-image metrics), ``latency``
(tile and every run in ms), ``sites`` (as given), ``inputs`` (paths and settings).
PSNR of identical images is ``Infinity`` (Python's ``json`` reads it back as ``inf``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from srq import __version__
from srq.errors import SrqError
from srq.runtime.gates import Gate
from srq.runtime.latency import LatencyResult

SUMMARY_KEYS = ("fp_psnr_y", "fp_ssim_y", "q_psnr_y", "q_ssim_y", "psnr_drop", "q_vs_fp_psnr_y",
                "parity_psnr", "parity_psnr_min", "parity_frac_over", "fp_ms", "fp_p90_ms",
                "q_ms", "q_p90_ms", "speedup", "fp_bytes", "q_bytes",
                "q_bytes_theoretical", "images", "scale")
MD_MAX_ROWS = 40


@dataclass(frozen=True)
class Crop:
    """Same window of one image: ``gt``, ``fp``, ``q`` (h, w, 3) uint8; ``box`` = (top, left) in HR pixels."""

    name: str
    box: tuple[int, int]
    gt: np.ndarray
    fp: np.ndarray
    q: np.ndarray


@dataclass
class Report:
    summary: dict
    per_image: list[dict]
    gates: list[Gate]
    failures: list[str]
    latency: LatencyResult | None = None
    sites: list[dict] = field(default_factory=list)
    crops: list[Crop] = field(default_factory=list)
    inputs: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    def gate_rows(self) -> list[dict]:
        return [{**g.as_dict(), "value": self.summary.get(g.metric),
                 "passed": g.check(self.summary) is None} for g in self.gates]

    def to_json(self) -> dict:
        return {"srq_version": __version__, "passed": self.passed, "gates": self.gate_rows(),
                "failures": list(self.failures),
                "summary": {k: _plain(self.summary.get(k)) for k in SUMMARY_KEYS},
                "per_image": [{k: _plain(v) for k, v in row.items()} for row in self.per_image],
                "latency": self.latency.as_dict() if self.latency else None,
                "sites": [{k: _plain(v) for k, v in s.items()} for s in self.sites],
                "inputs": {k: _plain(v) for k, v in self.inputs.items()}}


def _plain(v):
    """numpy scalars / Paths / tuples -> JSON-able Python values."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, tuple):
        return list(v)
    return v


def fmt(v, digits: int = 4) -> str:
    """A table cell: floats to ``digits`` significant digits, None as an en dash, arrays
    (per-channel site values) as ``min..max (n)``."""
    if isinstance(v, np.ndarray) and v.size > 1:
        return f"{fmt(float(v.min()), digits)}..{fmt(float(v.max()), digits)} ({v.size})"
    if isinstance(v, (np.ndarray, np.generic)):
        v = v.item()
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e6 else f"{v:.4e}"
    return str(v)


def to_markdown(report: Report) -> str:
    """``report.md``: verdict, gates, summary, per-image rows (at most MD_MAX_ROWS)."""
    s = report.summary
    lines = [f"## srq check: {'PASSED' if report.passed else 'FAILED'}", ""]
    if report.gates:
        lines += ["| gate | metric | needs | value | |", "|---|---|---|---|---|"]
        lines += [f"| `{g['name']}` | {g['metric']} | {g['op']} {g['threshold']:g} | "
                  f"{fmt(g['value'])} | {'pass' if g['passed'] else '**FAIL**'} |"
                  for g in report.gate_rows()]
        lines.append("")
    lines += ["| | FP | engine |", "|---|---|---|",
              f"| Y-PSNR vs GT (dB) | {fmt(s.get('fp_psnr_y'))} | {fmt(s.get('q_psnr_y'))} |",
              f"| Y-SSIM vs GT | {fmt(s.get('fp_ssim_y'))} | {fmt(s.get('q_ssim_y'))} |",
              f"| latency median / p90 (ms) | {fmt(s.get('fp_ms'))} / {fmt(s.get('fp_p90_ms'))}"
              f" | {fmt(s.get('q_ms'))} / {fmt(s.get('q_p90_ms'))} |",
              f"| file size (bytes) | {fmt(s.get('fp_bytes'))} | {fmt(s.get('q_bytes'))} |", "",
              f"PSNR drop {fmt(s.get('psnr_drop'))} dB · engine vs FP Y-PSNR "
              f"{fmt(s.get('q_vs_fp_psnr_y'))} dB · parity PSNR {fmt(s.get('parity_psnr'))} dB "
              f"(min {fmt(s.get('parity_psnr_min'))}, pixels > 1/255: {fmt(s.get('parity_frac_over'))})"
              f" · speedup {fmt(s.get('speedup'))}x · {s.get('images')} image(s), x{s.get('scale')}", ""]
    if report.per_image:
        cols = list(report.per_image[0])
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |"
                  for r in report.per_image[:MD_MAX_ROWS]]
        if len(report.per_image) > MD_MAX_ROWS:
            lines.append(f"\n({len(report.per_image) - MD_MAX_ROWS} more images in report.json)")
    if report.failures:
        lines += ["", "Failed gates:", *[f"- {line}" for line in report.failures]]
    return "\n".join(lines) + "\n"


def prepare_report_dir(final: str | os.PathLike) -> Path:
    """Create the temporary sibling folder the report is written into; SrqError if impossible."""
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise SrqError(f"{final}: exists and is not a folder")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the report is an ordinary folder
        return tmp
    except OSError as exc:
        raise SrqError(f"{final}: cannot write the report there ({exc.strerror or exc})") from exc


def publish_report_dir(tmp: Path, final: str | os.PathLike) -> Path:
    """Move the finished ``tmp`` folder to ``final``, replacing an older report there."""
    final = Path(final)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex}")
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def write_report(report: Report, folder: Path) -> None:
    """Write ``report.json``, ``report.md``, ``report.html`` (and crop PNGs) into ``folder``."""
    from srq.runtime.report_html import to_html

    (folder / "report.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    (folder / "report.md").write_text(to_markdown(report))
    (folder / "report.html").write_text(to_html(report, folder), encoding="utf-8")
