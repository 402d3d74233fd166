"""The shipped SwinIR-light x2: loads through the zoo as an official checkpoint would, and scores
what its model card says (zoo/weights/swinir-light-x2.md, measured when it was trained)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from srq.pipeline.evaluation import evaluate_model

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "zoo" / "weights" / "swinir-light-x2.safetensors"
CARD = WEIGHTS.with_suffix(".md")

pytestmark = pytest.mark.skipif(not WEIGHTS.exists(), reason=f"{WEIGHTS} not trained yet (issue 3)")


def _card_metrics() -> dict:
    block = re.search(r"```json\n(.*?)\n```", CARD.read_text(), re.S)
    assert block, f"{CARD}: no ```json metrics block"
    return json.loads(block.group(1))


def test_shipped_file_is_small_parameters_only_and_detected_as_swinir_light():
    from safetensors import safe_open

    from srq.zoo.loader import load_model

    assert WEIGHTS.stat().st_size < 4 * 1024 * 1024
    with safe_open(str(WEIGHTS), "pt") as f:
        keys = list(f.keys())
    assert not any(k.endswith(("attn_mask", "relative_position_index")) for k in keys)
    model = load_model("swinir-light-x2")
    assert (model.arch, model.scale, model.size_multiple) == ("SwinIR", 2, 8)
    assert model.module.embed_dim == 60 and len(model.module.layers) == 4
    assert sum(p.numel() for p in model.module.parameters()) == pytest.approx(910_152, abs=5_000)


def test_builtin_demo_psnr_matches_model_card():
    got = evaluate_model("swinir-light-x2", "builtin:demo")["psnr_y"]
    assert got == pytest.approx(_card_metrics()["builtin:demo"]["psnr_y"], abs=0.01)


def test_set5_psnr_matches_model_card(shared_data):
    got = evaluate_model("swinir-light-x2", str(shared_data / "benchmarks" / "Set5"))["psnr_y"]
    assert got == pytest.approx(_card_metrics()["Set5"]["psnr_y"], abs=0.01)
    assert got >= 36.0  # issue 3's floor for the shipped model (bicubic: 33.66)
