"""Full-precision Y-PSNR/SSIM of every shared-data checkpoint on Set5, Set14, B100.

Writes docs/fp-numbers.md (and a JSON beside it) with the published numbers next to ours.

    .venv/bin/python benchmarks/fp_numbers.py [--shared ../shared/data] [--out docs/fp-numbers.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from srq import __version__
from srq.pipeline.evaluation import evaluate_model

# (label, weights file relative to weights/, scale, published {set: (psnr, ssim)} or None, source)
MODELS = [
    ("PAN x2", "PAN/PANx2_DF2K.pth", 2, {"Set5": (38.0007, 0.96049), "Set14": (33.5927, 0.91805), "B100": (32.1812, 0.89973)}, "authors' logs"),
    ("PAN x3", "PAN/PANx3_DF2K.pth", 3, {"Set5": (34.4003, 0.92717), "Set14": (30.3553, 0.84220), "B100": (29.1045, 0.80491)}, "authors' logs"),
    ("PAN x4", "PAN/PANx4_DF2K.pth", 4, {"Set5": (32.1311, 0.89481), "Set14": (28.6107, 0.78215), "B100": (27.5914, 0.73627)}, "authors' logs"),
    ("IMDN x2", "IMDN/IMDN_x2.pth", 2, {"Set5": (38.00, 0.9605), "Set14": (33.63, 0.9177), "B100": (32.19, 0.8996)}, "paper"),
    ("IMDN x3", "IMDN/IMDN_x3.pth", 3, None, ""),
    ("IMDN x4", "IMDN/IMDN_x4.pth", 4, None, ""),
    ("RFDN x4", "RFDN/RFDN_AIM.pth", 4, None, ""),
    ("CARN-M x2", "CARN/carn_m.pth", 2, None, ""),
    ("CARN-M x3", "CARN/carn_m.pth", 3, None, ""),
    ("CARN-M x4", "CARN/carn_m.pth", 4, None, ""),
    ("FSRCNN x2", "FSRCNN/fsrcnn_x2.pth", 2, None, ""),
    ("FSRCNN x3", "FSRCNN/fsrcnn_x3.pth", 3, None, ""),
    ("FSRCNN x4", "FSRCNN/fsrcnn_x4.pth", 4, None, ""),
]
SETS = ["Set5", "Set14", "B100"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path("docs/fp-numbers.md"))
    ap.add_argument("--only", default=None, help="comma-separated labels to run (default: all)")
    args = ap.parse_args()
    only = None if args.only is None else set(args.only.split(","))
    results, start = [], time.time()
    for label, rel, scale, published, source in MODELS:
        if only and label not in only:
            continue
        row = {"model": label, "weights": rel, "scale": scale, "source": source, "sets": {}}
        for name in SETS:
            r = evaluate_model(str(args.shared / "weights" / rel), str(args.shared / "benchmarks" / name), scale)
            pub = (published or {}).get(name)
            row["sets"][name] = {"psnr_y": r["psnr_y"], "ssim_y": r["ssim_y"],
                                 "published": None if pub is None else {"psnr_y": pub[0], "ssim_y": pub[1]}}
            print(f"{label:10s} {name:6s} {r['psnr_y']:.4f} / {r['ssim_y']:.5f}"
                  + (f"   published {pub[0]} / {pub[1]}" if pub else ""), flush=True)
        results.append(row)
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    args.out.with_suffix(".json").write_text(json.dumps(
        {"srq": __version__, "machine": machine, "seconds": time.time() - start, "models": results}, indent=2) + "\n")
    lines = ["# Full-precision numbers (Y-PSNR dB / SSIM, crop border = scale)", "",
             f"Produced by `.venv/bin/python benchmarks/fp_numbers.py` (srq {__version__}; {machine}). "
             "Ours on the left; published in brackets with the difference in PSNR.", "",
             "| model | " + " | ".join(SETS) + " | reference |", "|---|" + "---|" * len(SETS) + "---|"]
    for row in results:
        cells = []
        for name in SETS:
            s = row["sets"][name]
            cell = f"{s['psnr_y']:.4f} / {s['ssim_y']:.5f}"
            if s["published"]:
                p = s["published"]
                cell += f" ({p['psnr_y']} / {p['ssim_y']}; {s['psnr_y'] - p['psnr_y']:+.4f})"
            cells.append(cell)
        lines.append(f"| {row['model']} | " + " | ".join(cells) + f" | {row['source'] or '—'} |")
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
