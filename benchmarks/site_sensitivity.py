"""Where a quantized model loses its PSNR: leave-one-group-FP sensitivity of a recipe (issue #4).

Calibrates ``MODEL`` with ``srq calibrate`` (every argument after ``--`` is passed to it; the recipe
is cached in ``--work``) or reads ``--recipe``, fake-quantizes the model exactly as ``srq eval
--recipe`` does, then for each group of quantizer sites puts only that group back to FP (the
quantizers pass their input through) and scores ``--data``: the PSNR a group gives back is what it
costs. Groups, from the site names: by role (weights, layer inputs, conv-output requantizations),
by layer with block numbers folded (``IMDB*.c1``: the same conv in every block), by layer and role,
and by block (the first path component). Writes a JSON and a Markdown table.

    .venv/bin/python benchmarks/site_sensitivity.py ../shared/data/weights/IMDN/IMDN_x2.pth \
        --data ../shared/data/benchmarks/Set5 --md docs/site-sensitivity-imdn-w4a4.md -- \
        --bits w4a4 --method sorted --first-conv-bits 8

One evaluation per group (IMDN x2 on Set5: ~5 s each on one core of this machine).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROLES = {"weight_q": "weights", "input_q": "inputs", "output": "conv outputs"}


def _role(site: str) -> str:
    leaf = site.rsplit(".", 1)[1]
    return ROLES.get(leaf, "inputs" if leaf.startswith("input") else leaf)


def groups(sites: list[str]) -> dict[str, list[str]]:
    """``{group label: site names}``: roles, layers across blocks, layers x roles, blocks (only groups
    that differ from a group already listed)."""
    out: dict[str, list[str]] = defaultdict(list)
    for s in sites:
        layer = s.rsplit(".", 1)[0]
        folded = re.sub(r"\d+", "*", layer.split(".", 1)[0]) + ("." + layer.split(".", 1)[1] if "." in layer else "")
        out[f"role: {_role(s)}"].append(s)
        out[f"layer: {folded}"].append(s)
        out[f"layer x role: {folded} {_role(s)}"].append(s)
        out[f"block: {s.split('.', 1)[0]}"].append(s)
    seen, unique = set(), {}
    for label, members in out.items():
        key = tuple(sorted(members))
        if key not in seen and len(members) < len(sites):
            seen.add(key)
            unique[label] = members
    return unique


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    calib_args = raw[raw.index("--") + 1:] if "--" in raw else []
    argv = raw[: raw.index("--")] if "--" in raw else raw
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data", required=True, help="benchmark folder (HR images; LR made by MATLAB bicubic)")
    ap.add_argument("--recipe", type=Path, help="an existing recipe (else srq calibrate with the args after --)")
    ap.add_argument("--work", type=Path, default=Path("build/sensitivity"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, help="results (default: --md with .json)")
    ap.add_argument("--md", type=Path, required=True)
    args = ap.parse_args(argv)

    import torch
    from tqdm import tqdm

    from srq.calib.recipe import Recipe, apply_recipe
    from srq.imaging.datasets import open_dataset
    from srq.pipeline.cli import main as srq
    from srq.pipeline.evaluation import score_images
    from srq.zoo.loader import load_model

    torch.set_num_threads(args.threads)
    recipe_path = args.recipe
    if recipe_path is None:
        args.work.mkdir(parents=True, exist_ok=True)
        tag = re.sub(r"[^A-Za-z0-9_.+-]+", "_", " ".join(calib_args)).strip("_") or "default"
        recipe_path = args.work / f"{Path(args.model).stem}_{tag}.json"
        if not recipe_path.exists() and srq(["calibrate", args.model, *calib_args, "--out", str(recipe_path)]) != 0:
            raise SystemExit("srq calibrate failed")
    model = load_model(args.model, None)
    recipe = Recipe.load(recipe_path)
    recipe.check_matches(model)
    samples = list(open_dataset(args.data, model.scale))

    def score() -> float:
        return float(np.mean([r["psnr_y"] for r in score_images(model, samples)]))

    start = time.perf_counter()
    fp = score()
    sites = apply_recipe(model.module, recipe)
    quant = score()
    rows = []
    for label, members in tqdm(groups(list(sites)).items(), desc="groups", unit="group"):
        for s in members:
            sites[s].mode = "fp"
        psnr = score()
        for s in members:
            sites[s].mode = "quant"
        rows.append({"group": label, "sites": len(members), "psnr_y": round(psnr, 4), "recovered_db": round(psnr - quant, 4)})
    rows.sort(key=lambda r: -r["recovered_db"])
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "command": shlex.join([".venv/bin/python", "benchmarks/site_sensitivity.py", *raw]),
              "model": args.model, "arch": model.arch, "scale": model.scale, "data": args.data,
              "recipe": str(recipe_path), "calibrate_args": calib_args, "calibration": {"method": recipe.calibration.method,
                                                          "iterations": recipe.calibration.iterations},
              "sites": len(sites), "fp_psnr_y": round(fp, 4), "quant_psnr_y": round(quant, 4),
              "wall_s": round(time.perf_counter() - start, 1), "rows": rows}
    (args.json or args.md.with_suffix(".json")).write_text(json.dumps(result, indent=1) + "\n")
    args.md.write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(r: dict) -> str:
    made = f"`srq calibrate {shlex.join(r['calibrate_args'])}`" if r["calibrate_args"] else Path(r["recipe"]).name
    lines = [f"# Site sensitivity: {r['arch']} x{r['scale']}, {made}", "",
             f"Measured {r['date']} by `benchmarks/site_sensitivity.py` (command in its JSON) on `{r['data']}`: "
             f"FP {r['fp_psnr_y']:.4f} dB, all {r['sites']} sites quantized {r['quant_psnr_y']:.4f} dB "
             f"({r['quant_psnr_y'] - r['fp_psnr_y']:+.3f}). Each row puts one group of sites back to FP "
             "and rescores; \"gives back\" = that PSNR minus the all-quantized one (what the group costs). "
             "Groups overlap; their costs do not add up exactly.", "",
             "| group | sites | PSNR-Y | gives back (dB) | share of the drop |", "|---|---:|---:|---:|---:|"]
    drop = r["fp_psnr_y"] - r["quant_psnr_y"]
    for row in r["rows"]:
        share = f"{row['recovered_db'] / drop:.0%}" if drop > 0 else "-"
        lines.append(f"| {row['group']} | {row['sites']} | {row['psnr_y']:.4f} | {row['recovered_db']:+.4f} | {share} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
