"""Gates as data and the compare functions, on hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from srq.runtime.compare import parity, psnr_y_between, quality_vs_gt
from srq.runtime.gates import Gate, evaluate, standard_gates


def test_standard_gates_from_cli_flags():
    assert standard_gates(0.3, 50, 1.0) == [
        Gate("--max-psnr-drop", "psnr_drop", "<=", 0.3),
        Gate("--min-parity-psnr", "parity_psnr", ">=", 50.0),
        Gate("--min-speedup", "speedup", ">=", 1.0)]
    assert standard_gates(min_speedup=2) == [Gate("--min-speedup", "speedup", ">=", 2.0)]


def test_evaluate_one_line_per_failed_gate():
    gates = standard_gates(0.3, 50, 1.0)
    assert evaluate(gates, {"psnr_drop": 0.3, "parity_psnr": 50.0, "speedup": 1.0}) == []
    assert evaluate(gates, {"psnr_drop": 0.31, "parity_psnr": math.inf, "speedup": 0.9}) == [
        "--max-psnr-drop: psnr_drop = 0.31, needs <= 0.3",
        "--min-speedup: speedup = 0.9, needs >= 1"]


def test_a_gate_on_an_unmeasured_metric_fails():
    lines = evaluate(standard_gates(min_parity_psnr=50), {"parity_psnr": None})
    assert lines == ["--min-parity-psnr: parity_psnr was not measured (needs >= 50)"]
    assert evaluate([Gate("g", "x", ">=", 1)], {"x": float("nan")}) == ["g: x was not measured (needs >= 1)"]
    with pytest.raises(ValueError, match="op"):
        Gate("g", "x", "==", 1)


def test_parity_psnr_and_fraction_over_one_level():
    ref = np.zeros((4, 4, 3), np.float32)
    out = ref.copy()
    out[0, 0, 0] = 2 / 255   # over 1/255
    out[1, 1, 1] = 0.5 / 255  # within
    mse = ((2 / 255) ** 2 + (0.5 / 255) ** 2) / 48
    got = parity(out, ref)
    assert got["parity_psnr"] == pytest.approx(10 * math.log10(1 / mse))
    assert got["parity_frac_over"] == 1 / 16
    assert parity(ref, ref)["parity_psnr"] == math.inf


def test_quality_vs_gt_rounds_like_basicsr_and_crops_the_border():
    hr = np.full((16, 16, 3), 100, np.uint8)
    sr = np.full((16, 16, 3), 100 / 255, np.float32)
    sr[0, :, :] = 0.0  # ruined border row: cropped away at scale 2
    sr[5, 5, :] = 101 / 255  # one pixel one level up in R, G, B -> Y up by (65.481+128.553+24.966)/255
    dy = (65.481 + 128.553 + 24.966) / 255
    expected = 10 * math.log10(255**2 / (dy**2 / 144))
    got = quality_vs_gt(sr, hr, 2)
    assert got["psnr_y"] == pytest.approx(expected)
    assert 0.99 < got["ssim_y"] < 1.0
    assert quality_vs_gt(sr[:14, :14], hr[:14, :14], 2)["ssim_y"] is None  # 10x10 after the crop
    assert psnr_y_between(sr, hr.astype(np.float32) / 255, 2) == pytest.approx(expected)
