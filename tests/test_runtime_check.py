"""run_check end to end: real ORT sessions, a real W8A8 model, real images, gates, report files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from srq.errors import SrqError
from srq.imaging.datasets import open_dataset
from srq.imaging.metrics import psnr_y, to_uint8
from srq.runtime.check import run_check
from srq.runtime.gates import standard_gates
from srq.runtime.ort_engine import OrtEngine, OrtOptions
from srq.runtime.report import SUMMARY_KEYS
from test_runtime_nets import make_sr_onnx, quantize_w8a8

NET = dict(depth=4, width=16, seed=7)
OPTS = OrtOptions(threads=1)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    fp = make_sr_onnx(d / "fp.onnx", (32, 32), **NET)
    return fp, quantize_w8a8(fp, d / "q.onnx")


def full_size_outputs(samples, folder):
    """The FP network exported at each image's own size, run untiled: (2H, 2W, 3) float32."""
    refs = {}
    for s in samples:
        h, w = s.lr.shape[:2]
        with OrtEngine(make_sr_onnx(folder / f"{s.name}.onnx", (h, w), **NET), OPTS) as eng:
            refs[s.name] = eng.run((s.lr.astype(np.float32) / 255).transpose(2, 0, 1)[None])[0].transpose(1, 2, 0)
    return refs


def test_check_passes_gates_on_set5(models, shared_data, tmp_path):
    fp_path, q_path = models
    samples = list(open_dataset(str(shared_data / "benchmarks" / "Set5"), 2))
    refs = full_size_outputs(samples, tmp_path)
    sites = [{"name": "conv0.weight_q", "kind": "weight", "bits": 8, "granularity": "channel",
              "lb": np.linspace(-0.5, -0.1, 16, dtype=np.float32), "ub": np.linspace(0.1, 0.5, 16, dtype=np.float32)},
             {"name": "conv1.input_q", "kind": "activation", "bits": 8, "lb": 0.0, "ub": 2.5,
              "scale": np.float32(0.0098), "zero_point": np.int32(0), "beta": None}]
    with OrtEngine(fp_path, OPTS) as fp, OrtEngine(q_path, OPTS) as q:
        report = run_check(fp, q, samples, 2, standard_gates(0.3, 35.0, 0.5), tmp_path / "rep",
                           reference_outputs=refs, sites=sites, overlap=4)
    assert report.passed, report.failures
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert {"gates", "passed", "per_image", "summary"} <= set(data)
    assert list(data["summary"]) == list(SUMMARY_KEYS) and data["passed"] is True
    assert [r["name"] for r in data["per_image"]] == ["baby", "bird", "butterfly", "head", "woman"]
    assert all(g["passed"] for g in data["gates"]) and len(data["gates"]) == 3
    # FP quality as scored independently on the untiled FP network's outputs
    for row, s in zip(data["per_image"], samples):
        assert row["fp_psnr_y"] == pytest.approx(psnr_y(to_uint8(refs[s.name]), s.hr, 2), abs=0.01)
    summ = data["summary"]
    assert summ["psnr_drop"] == pytest.approx(summ["fp_psnr_y"] - summ["q_psnr_y"])
    assert summ["fp_bytes"] == fp_path.stat().st_size and summ["q_bytes"] == q_path.stat().st_size
    assert 0 < summ["q_bytes_theoretical"] < summ["q_bytes"]
    assert data["sites"][0]["lb"][0] == -0.5 and data["sites"][1]["zero_point"] == 0
    assert summ["speedup"] == pytest.approx(summ["fp_ms"] / summ["q_ms"])
    assert len(data["latency"]["fp_runs_ms"]) == len(data["latency"]["q_runs_ms"]) == 20
    for name in ("report.md", "report.html"):
        assert (tmp_path / "rep" / name).stat().st_size > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".rep.")]


def test_check_fails_gates_with_one_line_each(models, tmp_path):
    fp_path, q_path = models
    samples = list(open_dataset("builtin:demo", 2))
    refs = full_size_outputs(samples, tmp_path)
    with OrtEngine(fp_path, OPTS) as fp, OrtEngine(q_path, OPTS) as q:
        report = run_check(fp, q, samples, 2, standard_gates(0.3, 80.0, 100.0), tmp_path / "rep",
                           reference_outputs=refs, overlap=4)
    assert not report.passed
    assert len(report.failures) == 2
    assert report.failures[0].startswith("--min-parity-psnr: parity_psnr = ")
    assert report.failures[1].startswith("--min-speedup: speedup = ")
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["passed"] is False and [g["passed"] for g in data["gates"]] == [True, False, False]
    assert "FAILED" in (tmp_path / "rep" / "report.md").read_text()


def test_unwritable_report_location_fails_before_any_work(models, tmp_path):
    fp_path, q_path = models
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    consumed = []
    samples = (consumed.append(s) or s for s in open_dataset("builtin:demo", 2))
    with OrtEngine(fp_path, OPTS) as fp, OrtEngine(q_path, OPTS) as q:
        with pytest.raises(SrqError, match="cannot write the report"):
            run_check(fp, q, samples, 2, [], blocker / "rep")
    assert not consumed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_parent_is_an_error(models, tmp_path):
    fp_path, q_path = models
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with OrtEngine(fp_path, OPTS) as fp, OrtEngine(q_path, OPTS) as q:
        with pytest.raises(SrqError, match="cannot write the report"):
            run_check(fp, q, open_dataset("builtin:demo", 2), 2, [], ro / "rep")


def test_failure_midway_leaves_the_old_report_and_no_partial_one(models, tmp_path):
    fp_path, q_path = models
    old = tmp_path / "rep"
    old.mkdir()
    (old / "report.json").write_text('{"old": true}')
    samples = list(open_dataset("builtin:demo", 2))
    refs = {samples[0].name: np.zeros((2, 2, 3), np.float32)}  # no reference for the 2nd image
    with OrtEngine(fp_path, OPTS) as fp, OrtEngine(q_path, OPTS) as q:
        with pytest.raises(SrqError, match=f"{samples[1].name}: no reference output"):
            run_check(fp, q, samples[1:], 2, [], old, reference_outputs=refs)
    assert (old / "report.json").read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


def test_wrong_scale_and_engine_from_another_model(models, tmp_path):
    fp_path, q_path = models
    other = make_sr_onnx(tmp_path / "other.onnx", (24, 24), **NET)
    with OrtEngine(fp_path, OPTS) as fp, OrtEngine(q_path, OPTS) as q, OrtEngine(other, OPTS) as o:
        with pytest.raises(SrqError, match="upscales x2, but the data is for x3"):
            run_check(fp, q, open_dataset("builtin:demo", 3), 3, [], tmp_path / "a")
        with pytest.raises(SrqError, match="differs from the FP model"):
            run_check(fp, o, open_dataset("builtin:demo", 2), 2, [], tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
