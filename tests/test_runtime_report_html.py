"""report.html is self-contained and renders in headless Chromium (screenshot checked when Chromium exists)."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from srq.imaging.datasets import open_dataset
from srq.imaging.io import read_image
from srq.runtime.check import run_check
from srq.runtime.gates import standard_gates
from srq.runtime.ort_engine import OrtEngine, OrtOptions
from test_runtime_nets import make_sr_onnx, quantize_w8a8

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("html")
    fp = make_sr_onnx(d / "fp.onnx", (32, 32), depth=3, width=16)
    q = quantize_w8a8(fp, d / "q.onnx")
    sites = [{"name": "conv0", "kind": "weight", "bits": 4, "lb": np.array([-0.5, -0.25], np.float32),
              "ub": np.array([0.5, 0.75], np.float32)},
             {"name": "act<1>", "kind": "activation", "bits": 4, "scale": 0.02, "zero_point": 3}]
    with OrtEngine(fp, OrtOptions(threads=1)) as f, OrtEngine(q, OrtOptions(threads=1)) as e:
        run_check(f, e, open_dataset("builtin:demo", 2), 2, standard_gates(0.3, None, 100.0),
                  d / "report", sites=sites)
    return d / "report"


def test_html_is_self_contained(report_dir):
    page = (report_dir / "report.html").read_text()
    assert "<script" not in page and "<link" not in page
    srcs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert len(srcs) == 2 * 4  # two demo images x GT / FP / engine / heat map
    assert "act&lt;1&gt;" in page and "<svg" in page  # site names escaped; latency chart inline
    assert "<td>-0.5..-0.25 (2)</td>" in page  # per-channel bounds summarised
    assert len(list((report_dir / "crops").iterdir())) == 8


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_html_renders_in_headless_chromium(report_dir, tmp_path):
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--window-size=1000,1400", f"--screenshot={shot}",
                    (report_dir / "report.html").as_uri()], capture_output=True, timeout=120, check=True)
    px = np.round(read_image(shot).pixels * 255).astype(int)
    verdict_red = (np.abs(px - [180, 35, 24]).sum(axis=2) < 40).sum()
    assert verdict_red > 200  # the FAILED heading (speedup gate of 100x) is drawn in red
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 2000  # the crops are drawn, not blank boxes
