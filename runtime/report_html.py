"""``report.html``: one self-contained page (inline CSS and SVG, images as ``data:`` URIs, no network).

Sections: verdict and gates, summary, per-image table, side-by-side crops (GT / FP /
engine / heat map of |engine - FP|), per-site table (whatever keys the recipe's sites
carry), latency chart (every run as a dot, median bar, p90 tick) and the inputs.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import numpy as np

from srq.imaging.io import write_image
from srq.runtime.report import SUMMARY_KEYS, Crop, Report, fmt

HEAT_FULL_SCALE = 8.0 / 255.0  # |engine - FP| at which the heat map saturates

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1 .pass{color:#17803d} h1 .fail{color:#b42318}
table{border-collapse:collapse;margin:8px 0 20px} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
tr.fail td{background:#fde8e8} figure{display:inline-block;margin:0 8px 8px 0;text-align:center}
figure img{width:192px;image-rendering:pixelated;border:1px solid #999;display:block}
figcaption{font-size:12px;color:#555} .crop{margin-bottom:12px}
"""


def _table(rows: list[dict], columns: list[str] | None = None, fail_key: str | None = None) -> str:
    if not rows:
        return "<p>(none)</p>"
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cls = ' class="fail"' if fail_key and r.get(fail_key) is False else ""
        cells = "".join(f"<td>{html.escape(fmt(r.get(c)))}</td>" for c in cols)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def heat_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel max |a - b| over channels (uint8 images) as an RGB 'hot' map, uint8 (h, w, 3)."""
    d = np.abs(a.astype(np.float32) - b.astype(np.float32)).max(axis=2) / 255.0
    t = np.clip(d / HEAT_FULL_SCALE, 0.0, 1.0)
    rgb = np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], axis=2)
    return np.round(rgb * 255).astype(np.uint8)


def _png_uri(img: np.ndarray, path: Path) -> str:
    write_image(path, img)
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _crops_html(crops: list[Crop], folder: Path) -> str:
    if not crops:
        return "<p>(none)</p>"
    out_dir = folder / "crops"
    out_dir.mkdir(exist_ok=True)
    parts = []
    for i, c in enumerate(crops):
        stem = f"{i:02d}_{re.sub(r'[^A-Za-z0-9_.-]', '_', c.name)}"
        figs = []
        for key, label, img in (("gt", "ground truth", c.gt), ("fp", "FP", c.fp), ("engine", "engine", c.q),
                                ("diff", "|engine − FP|", heat_map(c.q, c.fp))):
            uri = _png_uri(img, out_dir / f"{stem}_{key}.png")
            figs.append(f'<figure><img src="{uri}" alt="{html.escape(label)}">'
                        f"<figcaption>{html.escape(label)}</figcaption></figure>")
        h, w = c.gt.shape[:2]
        parts.append(f'<div class="crop"><b>{html.escape(c.name)}</b> – {w}x{h} HR pixels at '
                     f"(top {c.box[0]}, left {c.box[1]})<br>{''.join(figs)}</div>")
    return (f"<p>Heat map: black = equal, white = |engine − FP| ≥ {HEAT_FULL_SCALE * 255:.0f}/255 "
            "(max over channels). Window: where the engine differs most from FP.</p>" + "".join(parts))


def latency_svg(report: Report) -> str:
    """Inline SVG: each run as a dot, the median as a bar, p90 as a tick, for FP and engine."""
    lat = report.latency
    if lat is None:
        return "<p>(not measured)</p>"
    width, left, row_h = 640, 70, 40
    top = max(max(lat.fp.runs_ms), max(lat.q.runs_ms)) * 1.1
    x = lambda ms: left + (width - left - 20) * ms / top  # noqa: E731
    items = []
    for row, (label, t, colour) in enumerate((("FP", lat.fp, "#888"), ("engine", lat.q, "#2b6cb0"))):
        y = 20 + row * row_h
        items.append(f'<text x="{left - 8}" y="{y + 14}" text-anchor="end">{label}</text>')
        items.append(f'<rect x="{left}" y="{y + 4}" width="{x(t.median) - left:.1f}" height="14" '
                     f'fill="{colour}" opacity="0.35"><title>median {t.median:.3f} ms</title></rect>')
        items.append(f'<line x1="{x(t.p90):.1f}" x2="{x(t.p90):.1f}" y1="{y}" y2="{y + 22}" '
                     f'stroke="{colour}" stroke-width="2"><title>p90 {t.p90:.3f} ms</title></line>')
        items += [f'<circle cx="{x(ms):.1f}" cy="{y + 11}" r="2.5" fill="{colour}" opacity="0.6"/>'
                  for ms in t.runs_ms]
        items.append(f'<text x="{x(t.p90) + 6:.1f}" y="{y + 15}" font-size="11">'
                     f"median {t.median:.2f} ms · p90 {t.p90:.2f} ms</text>")
    axis_y = 20 + 2 * row_h
    step = _nice_step(top / 5)
    ticks = np.arange(0, top, step)
    items.append(f'<line x1="{left}" x2="{width - 20}" y1="{axis_y}" y2="{axis_y}" stroke="#444"/>')
    items += [f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{axis_y}" y2="{axis_y + 4}" stroke="#444"/>'
              f'<text x="{x(v):.1f}" y="{axis_y + 16}" text-anchor="middle" font-size="11">{v:g}</text>'
              for v in ticks]
    items.append(f'<text x="{(width + left) / 2}" y="{axis_y + 32}" text-anchor="middle" '
                 f'font-size="11">ms per {lat.tile[0]}x{lat.tile[1]} tile '
                 f"({len(lat.fp.runs_ms)} interleaved runs each)</text>")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{axis_y + 40}" '
            f'font-family="system-ui,sans-serif" font-size="13">{"".join(items)}</svg>')


def _nice_step(raw: float) -> float:
    mag = 10 ** np.floor(np.log10(raw))
    return float(next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw))


def to_html(report: Report, folder: Path) -> str:
    """The page; crop PNGs are also left in ``folder/crops``."""
    verdict = ('<span class="pass">PASSED</span>' if report.passed
               else '<span class="fail">FAILED</span>')
    failures = "".join(f"<li>{html.escape(line)}</li>" for line in report.failures)
    summary = [{"metric": k, "value": report.summary.get(k)} for k in SUMMARY_KEYS]
    inputs = [{"input": k, "value": v} for k, v in report.inputs.items()]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>srq check report</title>
<style>{CSS}</style></head><body>
<h1>srq check: {verdict}</h1>
{f'<ul>{failures}</ul>' if failures else ''}
<h2>Gates</h2>{_table(report.gate_rows(), ["name", "metric", "op", "threshold", "value", "passed"], "passed")}
<h2>Summary</h2>{_table(summary)}
<h2>Per image</h2>{_table(report.per_image)}
<h2>Crops</h2>{_crops_html(report.crops, folder)}
<h2>Quantization sites</h2>{_table(report.sites)}
<h2>Latency</h2>{latency_svg(report)}
<h2>Inputs</h2>{_table(inputs)}
</body></html>
"""
