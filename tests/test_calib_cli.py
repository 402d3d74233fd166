"""`srq calibrate` end to end (subprocess, real FSRCNN x2 weights) and its argument errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest


def _srq(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "srq.pipeline.cli", *args], capture_output=True, text=True,
                          timeout=300)


def _psnr(stdout: str) -> float:
    return float(re.search(r"^mean\s+([\d.]+)", stdout, re.M).group(1))


FSRCNN_X2_SET5_FP = 37.1341  # docs/fp-numbers.md (srq eval of the FP model)


@pytest.mark.slow
def test_calibrate_writes_a_recipe_that_eval_reads(tmp_path, shared_data):
    weights = str(shared_data / "weights" / "FSRCNN" / "fsrcnn_x2.pth")
    set5 = str(shared_data / "benchmarks" / "Set5")
    out = tmp_path / "fsrcnn_w8a8.json"
    r = _srq("calibrate", weights, "--bits", "w8a8", "--calib-data", set5, "--crops", "6", "--crop-size", "24",
             "--dqc-iters", "3", "--dqc-batch", "2", "--dqc-patch", "16", "--seed", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "W8A8 sorted, policy body" in r.stdout and "DQC: 3/3 iterations" in r.stdout
    doc = json.loads(out.read_text())
    assert out.with_suffix(".safetensors").is_file() and doc["calibration"]["iterations"] == 3
    assert doc["placement"]["w_bits"] == 8 and {s["bits"] for s in doc["sites"]} == {8}
    assert any(s["name"].endswith(".output") for s in doc["sites"])
    q = _srq("eval", weights, "--data", set5, "--recipe", str(out))
    assert q.returncode == 0, q.stderr
    assert f"(recipe {out})" in q.stdout
    # quantized (below FP) but working; FSRCNN's activations are sensitive even at 8 bits (~0.5-1.5 dB
    # here, measured: weights alone cost 0.03 dB, 8-bit inputs 0.5 dB, 8-bit conv outputs 0.8 dB)
    assert 0.01 < FSRCNN_X2_SET5_FP - _psnr(q.stdout) < 2.5


@pytest.mark.parametrize("bits", ["w9a4", "w4", "a4w4", "w1a8"])
def test_bad_bits_exit_2_and_write_nothing(tmp_path, bits):
    out = tmp_path / "r.json"
    r = _srq("calibrate", "fsrcnn", "--bits", bits, "--out", str(out))
    assert r.returncode == 2
    assert f"argument --bits: '{bits}': expected wNaM" in r.stderr and "between 2 and 8" in r.stderr
    assert not list(tmp_path.iterdir())


def test_out_must_be_json(tmp_path, shared_data):
    r = _srq("calibrate", str(shared_data / "weights" / "FSRCNN" / "fsrcnn_x2.pth"), "--out", str(tmp_path / "r.txt"))
    assert r.returncode == 2 and "r.txt: the recipe must be a .json file" in r.stderr
    assert not list(tmp_path.iterdir())


def test_exclude_and_include_globs_override_the_policy(tmp_path, shared_data):
    weights = str(shared_data / "weights" / "FSRCNN" / "fsrcnn_x2.pth")
    common = ["--bits", "w8a8", "--calib-data", str(shared_data / "benchmarks" / "Set5"), "--crops", "2",
              "--crop-size", "16"]

    def layers(*extra: str) -> set[str]:
        out = tmp_path / f"r{len(extra)}.json"
        r = _srq("calibrate", weights, *common, *extra, "--out", str(out))
        assert r.returncode == 0, r.stderr
        return {s["name"].rsplit(".", 1)[0] for s in json.loads(out.read_text())["sites"]}

    body = layers()
    assert "mid_part.0" in body and all(name.startswith("mid_part.") for name in body)
    excluded = layers("--exclude", "mid_part.0", "--exclude", "mid_part.2")
    assert excluded == body - {"mid_part.0", "mid_part.2"}
    assert layers("--include", "first_part.*", "--exclude", "nothing") == body | {"first_part.0"}
    assert layers("--first-conv-bits", "8") == body | {"first_part.0"}


def test_layer_bits_give_matching_layers_other_bits_and_bad_rules_write_nothing(tmp_path, shared_data):
    weights = str(shared_data / "weights" / "FSRCNN" / "fsrcnn_x2.pth")
    common = ["--bits", "w4a4", "--calib-data", str(shared_data / "benchmarks" / "Set5"), "--crops", "2",
              "--crop-size", "16"]
    out = tmp_path / "mixed.json"
    r = _srq("calibrate", weights, *common, "--layer-bits", "mid_part.0=w8a8", "--out", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    bits = {s["name"]: s["bits"] for s in doc["sites"]}
    assert bits["mid_part.0.weight_q"] == bits["mid_part.0.input_q"] == 8 and bits["mid_part.2.weight_q"] == 4
    assert doc["placement"]["layer_bits"] == ["mid_part.0=w8a8"] and "layers by weight bits:" in r.stdout
    for rule, message in (("mid_part.0=w9a8", "expected GLOB=wNaM"), ("nothing=w8a8", "matches no quantized layer")):
        bad = tmp_path / "bad" / "r.json"
        r = _srq("calibrate", weights, *common, "--layer-bits", rule, "--out", str(bad))
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert not (tmp_path / "bad").exists()


def test_cli_choices_name_what_calibration_accepts():
    """The CLI lists its choices without importing torch; they must be calib's own."""
    from srq.calib import search, sites
    from srq.pipeline.commands import calibrate

    assert set(calibrate.METHODS) == set(search.METHODS)
    assert calibrate.BETA_SITES == sites.BETA_SITES
