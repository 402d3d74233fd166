"""`srq run` end to end on a real checkpoint (reduced budget): calibrate -> export -> check, and its gates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _run(shared_data: Path, out: Path, *gates: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "srq", "run", str(shared_data / "weights/FSRCNN/fsrcnn_x2.pth"),
           "--bits", "w8a8", "--dqc-iters", "0", "--crops", "8", "--tile", "32x32",
           "--out", str(out), *gates]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=out.parent)


def test_run_passes_and_fails_on_gates(shared_data, tmp_path):
    ok = _run(shared_data, tmp_path / "ok", "--max-psnr-drop", "1.0")
    assert ok.returncode == 0, ok.stderr[-2000:]
    folder = tmp_path / "ok" / "w8a8"
    assert {p.name for p in folder.iterdir()} >= {"recipe.json", "recipe.safetensors", "model.onnx", "report"}
    report = json.loads((folder / "report" / "report.json").read_text())
    assert report["passed"] is True
    s = report["summary"]
    for key in ("fp_psnr_y", "q_psnr_y", "psnr_drop", "parity_psnr", "fp_ms", "q_ms", "speedup"):
        assert isinstance(s[key], float), key
    assert s["psnr_drop"] <= 1.0 and s["parity_psnr"] >= 50.0
    assert "PASSED" in ok.stdout and "report.html" in ok.stdout
    recipe = json.loads((folder / "recipe.json").read_text())  # 8-bit weights: symmetric int8 by default
    weights = [site for site in recipe["sites"] if site["kind"] == "weight"]
    assert recipe["placement"]["weight_symmetric_8bit"] is True and weights
    assert recipe["placement"]["integer_gates"] is True  # srq run's ORT default (FSRCNN has no gate to requantize)
    assert all(site["symmetric"] and site["qmin"] == -127 and site["qmax"] == 127 for site in weights)

    bad = _run(shared_data, tmp_path / "bad", "--min-speedup", "100")
    assert bad.returncode == 1
    assert "--min-speedup" in bad.stderr
    report = json.loads((tmp_path / "bad" / "w8a8" / "report" / "report.json").read_text())
    assert report["passed"] is False and len(report["failures"]) == 1


def test_default_run_on_builtin_model_and_data(tmp_path):
    """`srq run` with the defaults that need no files (built-in SwinIR-light x2, builtin:calib, builtin:demo),
    at a reduced budget: one bit setting, few crops, a 3-step DQC, few timed runs."""
    out = tmp_path / "default"
    cmd = [sys.executable, "-m", "srq", "run", "--bits", "w4a4", "--crops", "8", "--dqc-iters", "3",
           "--dqc-batch", "2", "--latency-runs", "20", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert (out / "w4a4" / "report" / "report.json").is_file(), done.stderr[-2000:]
    report = json.loads((out / "w4a4" / "report" / "report.json").read_text())
    assert done.returncode == (0 if report["passed"] else 1), done.stderr[-2000:]
    assert report["passed"] is True, report["failures"]
    s = report["summary"]
    assert s["parity_psnr"] >= 50.0
    assert s["psnr_drop"] < 3.0  # W4A4 phase 1 (sorted + beta) on a 4-crop budget: a sanity bound, not a quality claim
    recipe = json.loads((out / "w4a4" / "recipe.json").read_text())
    assert recipe["model"]["arch"].startswith("SwinIR")
    assert recipe["calibration"]["iterations"] == 3 and recipe["calibration"]["settings"]["dqc"]["patch"] == 32
    assert any(site["name"].endswith("matmul_av.input_a") for site in recipe["sites"])
    assert recipe["placement"]["qkv"] == "fused" and any(site["name"].endswith("attn.qkv.input_q")
                                                         for site in recipe["sites"])
    shifted = [site for site in recipe["sites"] if site["beta"] is not None]  # beta on layer inputs only
    assert recipe["placement"]["beta_sites"] == "layers" and len(shifted) == 24 * 3
    assert all(site["op"] == "linear" for site in shifted)
    assert "w4a4: PASSED" in done.stdout and "report.html" in done.stdout


def test_run_refuses_bad_bits_before_writing(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "srq", "run", "--bits", "w8a8,w9a9", "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert "--bits" in done.stderr and "w9a9" in done.stderr
    assert not out.exists()
