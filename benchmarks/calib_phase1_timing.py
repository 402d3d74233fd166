"""Time phase 1 (placement + FP observation + bound search) for every site of SwinIR-light.

SwinIR-light x2 (embed 60, depths/heads 6x4, window 8, mlp 2, pixelshuffledirect), random
init (timing does not depend on the weights), 2dquant placement (384 sites), W4A4, on a
batch of N random 64x64 LR crops (2DQuant uses 32). Prints wall and process CPU seconds.

    .venv/bin/python benchmarks/calib_phase1_timing.py --batch 32 --method sorted
"""

from __future__ import annotations

import argparse
import time

import torch
from spandrel.architectures.SwinIR.__arch.SwinIR import SwinIR

from srq.calib.api import CalibConfig, init_bounds
from srq.calib.observe import attach_observers
from srq.calib.search import SearchConfig
from srq.calib.sites import PlacementConfig, place_quantizers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--method", default="sorted")
    ap.add_argument("--sample-cap", type=int, default=1 << 17)
    ap.add_argument("--bias-correction", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = SwinIR(upscale=2, img_size=64, window_size=8, img_range=1.0, depths=[6, 6, 6, 6], embed_dim=60,
                   num_heads=[6, 6, 6, 6], mlp_ratio=2, upsampler="pixelshuffledirect",
                   resi_connection="1conv").eval()
    batch = torch.rand(args.batch, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    cfg = CalibConfig(placement=PlacementConfig(policy="2dquant", bias_correction=args.bias_correction),
                      search=SearchConfig(method=args.method), sample_cap=args.sample_cap)
    marks = [("start", time.perf_counter(), time.process_time())]
    sites = place_quantizers(model, cfg.placement, batch[:1])
    observers = attach_observers(model, sites, cfg.sample_cap, cfg.seed)
    marks.append(("place", time.perf_counter(), time.process_time()))
    with torch.no_grad():
        model(batch)
    marks.append(("observe", time.perf_counter(), time.process_time()))
    init_bounds(model, sites, observers, cfg)
    marks.append(("search", time.perf_counter(), time.process_time()))
    print(f"SwinIR-light, {len(sites)} sites, batch {args.batch}x3x64x64, {args.method}, cap {args.sample_cap}")
    for (_, w0, c0), (name, w1, c1) in zip(marks, marks[1:]):
        print(f"  {name:8s} wall {w1 - w0:7.2f} s   cpu {c1 - c0:7.2f} s")
    print(f"  total    wall {marks[-1][1] - marks[0][1]:7.2f} s   cpu {marks[-1][2] - marks[0][2]:7.2f} s")


if __name__ == "__main__":
    main()
