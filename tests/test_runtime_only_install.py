"""The torch-free deploy install (`scripts/install.sh --extras ""`) runs `srq check` and `srq upscale`.

CI (.ci/run) builds that venv at `.venv-runtime`; the test skips with a reason where it is absent.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from srq.imaging.io import write_image
from test_runtime_nets import make_sr_onnx, quantize_w8a8

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-runtime"


@pytest.fixture(scope="module")
def runtime_venv() -> Path:
    if not (VENV / "bin" / "srq").exists():
        pytest.skip(f"{VENV} absent: create it with `bash scripts/install.sh --venv .venv-runtime --extras \"\"`")
    return VENV


def test_runtime_venv_has_no_torch(runtime_venv):
    out = subprocess.run([runtime_venv / "bin" / "python", "-c", "import importlib.util as u; "
                          "print(u.find_spec('torch'), u.find_spec('spandrel'))"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None", "None"]


def test_check_and_upscale_without_torch(runtime_venv, tmp_path):
    fp = make_sr_onnx(tmp_path / "fp.onnx", (32, 32))
    q = quantize_w8a8(fp, tmp_path / "w8a8.onnx")
    srq = str(runtime_venv / "bin" / "srq")
    report = tmp_path / "report"
    out = subprocess.run([srq, "check", "--fp", str(fp), "--engine", str(q), "--data", "builtin:demo",
                          "--report", str(report), "--max-psnr-drop", "3"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads((report / "report.json").read_text())
    assert data["passed"] is True and data["summary"]["images"] == 2
    img = tmp_path / "in.png"
    write_image(img, np.random.default_rng(0).random((40, 50, 3)).astype(np.float32))
    out = subprocess.run([srq, "upscale", str(q), str(img), "--out", str(tmp_path / "up")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (result,) = (tmp_path / "up").glob("*.png")
    from srq.imaging.io import read_image

    assert read_image(result).pixels.shape == (80, 100, 3)
