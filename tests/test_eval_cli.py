"""`srq eval` end to end on a real checkpoint and benchmark, against the authors' published log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _srq(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "srq", *args], capture_output=True, text=True, cwd=cwd)


def test_eval_reproduces_pan_x2_set5_log(shared_data, tmp_path):
    out_json = tmp_path / "pan.json"
    res = _srq("eval", str(shared_data / "weights/PAN/PANx2_DF2K.pth"), "--data",
               str(shared_data / "benchmarks/Set5"), "--json", str(out_json), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    data = json.loads(out_json.read_text())
    assert {"model", "scale", "dataset", "psnr_y", "ssim_y", "images"} <= set(data)
    assert [im["name"] for im in data["images"]] == ["baby", "bird", "butterfly", "head", "woman"]
    # PAN authors' own test log (shared/data/README.md): Set5 x2 38.0007 / 0.96049
    assert abs(data["psnr_y"] - 38.0007) <= 0.02
    assert abs(data["ssim_y"] - 0.96049) <= 0.0005
    assert "mean" in res.stdout


def test_eval_bad_inputs_exit_2_naming_the_file(shared_data, tmp_path):
    missing = tmp_path / "nope.pth"
    res = _srq("eval", str(missing), "--data", "builtin:demo", cwd=tmp_path)
    assert res.returncode == 2 and str(missing) in res.stderr
    res = _srq("eval", str(shared_data / "weights/PAN/PANx2_DF2K.pth"), "--data", str(tmp_path / "nodata"),
               cwd=tmp_path)
    assert res.returncode == 2 and "nodata" in res.stderr
    res = _srq("eval", str(shared_data / "weights/IMDN/IMDN_x2.pth"), "--scale", "4", "--data", "builtin:demo",
               cwd=tmp_path)
    assert res.returncode == 2 and "x4" in res.stderr
