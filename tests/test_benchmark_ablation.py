"""benchmarks/ablation.py on a tiny real grid: FSRCNN x2 (real weights), W8A8 MinMax, one real 64x64 HR crop."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _ablation():
    spec = importlib.util.spec_from_file_location("ablation", ROOT / "benchmarks" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ablation"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_grid_resumes_and_renders(shared_data, tmp_path, monkeypatch):
    ablation = _ablation()
    hr = np.asarray(Image.open(shared_data / "benchmarks" / "Set5" / "HR" / "baby.png").convert("RGB"))
    data = tmp_path / "Tiny"
    data.mkdir()
    Image.fromarray(hr[200:264, 200:264]).save(data / "crop.png")
    results, report = tmp_path / "r.jsonl", tmp_path / "ablation.md"
    weights = str(shared_data / "weights" / "FSRCNN" / "fsrcnn_x2.pth")
    monkeypatch.chdir(tmp_path)
    argv = ["run", "--models", weights, "--bits", "w8a8", "--methods", "minmax", "--sets", str(data),
            "--results", str(results), "--recipes", str(tmp_path / "recipes")]

    assert ablation.main(argv) == 0
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["method"], r["bits"], r["set"]) for r in rows] == [("fp", "fp", "Tiny"), ("minmax", "w8a8", "Tiny")]
    quant = rows[1]
    assert quant["arch"] == "FSRCNN" and len(quant["fingerprint"]) == 64 and list(quant["images"]) == ["crop"]
    assert quant["calibration"]["recipe_reused"] is False and quant["calibration"]["calibrate_wall_s"] > 0
    assert quant["calibrate_cmd"].startswith(f"srq calibrate {weights} --bits w8a8 --method minmax")
    assert Path(quant["calibrate_cmd"].split("--out ")[1]).exists()
    assert 20 < quant["psnr_y"] < rows[0]["psnr_y"] + 1  # a real score, near FP at 8 bits

    assert ablation.main(argv) == 0  # resume: every cell done, nothing appended
    assert len(results.read_text().splitlines()) == 2

    report.write_text(f"old\n{ablation.NOTES_BEGIN}\nhand-written why\n{ablation.NOTES_END}\nold table\n")
    assert ablation.main(["render", "--results", str(results), "--out", str(report)]) == 0
    text = report.read_text()
    assert "hand-written why" in text and "old table" not in text
    drop = quant["psnr_y"] - rows[0]["psnr_y"]
    assert f"| minmax | — | {quant['psnr_y']:.2f} / {quant['ssim_y']:.4f} ({drop:+.2f}) |" in text
    assert "| FP Tiny | W8A8 Tiny |" in text


def test_new_cell_options_keep_old_keys_and_name_their_rows():
    """Options added to the grid later (conv outputs, float outputs, qkv layout, layer bits) leave the keys of cells run
    before them unchanged, so a resumed grid does not redo them, and show up in the row name and
    the `srq calibrate` command when set."""
    ablation = _ablation()
    plain = ablation.Cell("m.pth", "w8a8", "sorted")
    assert plain.key("f") == ablation.Cell("m.pth", "w8a8", "sorted", conv_output_bits=8, float_output=(),
                                           qkv="split").key("f")
    floats = ablation.Cell("m.pth", "w8a8", "sorted", float_output=("LR_conv",))
    assert floats.key("f") != plain.key("f") and floats.label == "sorted, LR_conv float out"
    assert floats.calibrate_argv(Path("r.json"))[-2:] == ["--float-output", "LR_conv"]
    fused = ablation.Cell("swinir-light-x2", "w4a4", "sorted", qkv="fused")
    assert fused.key("f") != ablation.Cell("swinir-light-x2", "w4a4", "sorted").key("f")
    assert fused.label == "sorted, qkv fused" and fused.calibrate_argv(Path("r.json"))[-2:] == ["--qkv", "fused"]
    mixed = ablation.Cell("m.pth", "w4a4", "sorted", layer_bits=("LR_conv=w8a8",))
    assert plain.key("f") == ablation.Cell("m.pth", "w8a8", "sorted", layer_bits=()).key("f")
    assert mixed.key("f") != ablation.Cell("m.pth", "w4a4", "sorted").key("f")
    assert mixed.label == "sorted, LR_conv=w8a8"
    assert mixed.calibrate_argv(Path("r.json"))[-2:] == ["--layer-bits", "LR_conv=w8a8"]
