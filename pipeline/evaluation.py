"""Score a PyTorch SR model (FP, or fake-quantized by a recipe) on a dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from srq.imaging.datasets import open_dataset
from srq.runtime.compare import quality_vs_gt


def evaluate_model(model_spec: str, data: str, scale: int | None = None,
                   recipe: Path | None = None) -> dict:
    """``{"model", "scale", "dataset", "recipe", "psnr_y", "ssim_y", "images": [{"name", "psnr_y", "ssim_y"}]}``.

    PSNR in dB, SSIM in [0, 1], both on BT.601 Y with a border of ``scale`` pixels cropped.
    """
    from srq.zoo.loader import load_model

    model = load_model(model_spec, scale)
    if recipe is not None:
        from srq.calib.recipe import Recipe, apply_recipe

        rec = Recipe.load(recipe)
        rec.check_matches(model)
        apply_recipe(model.module, rec)
    rows = score_images(model, open_dataset(data, model.scale))
    return {
        "model": model.source,
        "arch": model.arch,
        "scale": model.scale,
        "dataset": data,
        "recipe": None if recipe is None else str(recipe),
        "psnr_y": float(np.mean([r["psnr_y"] for r in rows])),
        "ssim_y": float(np.mean([r["ssim_y"] for r in rows])),
        "images": rows,
    }


def score_images(model, samples) -> list[dict]:
    """``[{"name", "psnr_y", "ssim_y"}]`` of ``model`` (an ``SRModel``, FP or fake-quantized) on each
    sample (``srq.imaging.datasets`` items: LR uint8 RGB in, HR ground truth), SR-paper convention."""
    from srq.zoo.infer import upscale_image

    rows = []
    for sample in tqdm(samples, desc=f"eval {Path(model.source).name}", unit="img", leave=False):
        sr = upscale_image(model, sample.lr.astype(np.float32) / 255.0)
        rows.append({"name": sample.name, **quality_vs_gt(sr, sample.hr, model.scale)})
    return rows


def print_table(result: dict) -> None:
    """Per-image rows and the mean, as a plain-text table."""
    width = max([len(r["name"]) for r in result["images"]] + [7])
    print(f"{result['arch']} x{result['scale']} on {result['dataset']}"
          + (f" (recipe {result['recipe']})" if result["recipe"] else ""))
    print(f"{'image':<{width}}  {'PSNR-Y':>8}  {'SSIM-Y':>7}")
    for r in result["images"]:
        print(f"{r['name']:<{width}}  {r['psnr_y']:8.4f}  {r['ssim_y']:7.5f}")
    print(f"{'mean':<{width}}  {result['psnr_y']:8.4f}  {result['ssim_y']:7.5f}")
