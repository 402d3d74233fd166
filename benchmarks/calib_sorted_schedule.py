"""Measure the 2DQuant+ sorted-grading schedule (K, tail mass p, power gamma) on real tensors.

For real IMDN x2 and PAN x4 weights (``../shared/data/weights``) and their activations on Set5
LR crops, every ``body`` quantizer site is searched with each schedule and with DOBI; the error
is compared with an oracle (the best of a dense 2-D grid of lower x upper tail masses, all
through the same snapped quantizer). Prints the mean / max excess MSE over the oracle per
bit width, and where the oracle's clipped tail masses lie.

    .venv/bin/python benchmarks/calib_sorted_schedule.py [--sites-every 3] [--sample 16384]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch

from srq.calib.observe import attach_observers
from srq.calib.quantizer import QuantFormat
from srq.calib.search import SearchConfig, quant_error, tail_quantiles, search_bounds
from srq.calib.sites import PlacementConfig, place_quantizers
from srq.imaging.datasets import open_dataset
from srq.zoo import load_model

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODELS = [("IMDN/IMDN_x2.pth", 2), ("PAN/PANx4_DF2K.pth", 4)]
SCHEDULES = [(p, g) for p in (0.05, 0.1, 0.2, 0.3, 0.45) for g in (1.0, 2.0, 3.0)]
ORACLE_MASS = torch.cat([torch.zeros(1), torch.logspace(-6, np.log10(0.45), 39)])


def site_data(model_path: str, scale: int, sample: int, seed: int) -> list[tuple[str, torch.Tensor]]:
    """``(site, (C, M) data)`` for weights (per channel) and activations (one row) of the body sites."""
    sr = load_model(DATA / "weights" / model_path, scale)
    lrs = [torch.from_numpy(s.lr).permute(2, 0, 1).float().div(255) for s in open_dataset(str(DATA / "benchmarks" / "Set5"), scale)]
    g = torch.Generator().manual_seed(seed)
    crops = []
    for lr in lrs:
        for _ in range(2):
            y = int(torch.randint(lr.shape[1] - 48, (1,), generator=g))
            x = int(torch.randint(lr.shape[2] - 48, (1,), generator=g))
            crops.append(lr[:, y:y + 48, x:x + 48])
    batch = torch.stack(crops)
    model = sr.module
    sites = place_quantizers(model, PlacementConfig(policy="body"), batch[:1])
    observers = attach_observers(model, sites, sample, seed)
    with torch.no_grad():
        model(batch)
    out = []
    for name, q in sites.items():
        if q.kind == "activation":
            out.append((name, observers[name].sample().reshape(1, -1)))
        else:
            w = model.get_submodule(name.rsplit(".", 1)[0]).weight.detach()
            out.append((name, w.reshape(w.shape[0], -1)))
    return out


def oracle(v: torch.Tensor, fmt: QuantFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """Best squared error per channel over 2-D grids: 40 x 40 (lower, upper) tail masses and
    50 x 50 value steps (lb in [min, min + R/2], ub in [max - R/2, max]); and the best tail masses."""
    lo, hi = tail_quantiles(v, ORACLE_MASS)
    n = len(ORACLE_MASS)
    err_m = quant_error(v, lo.repeat_interleave(n, dim=0), hi.repeat(n, 1), fmt)
    best = err_m.argmin(0)
    masses = torch.stack([ORACLE_MASS[best // n], ORACLE_MASS[best % n]], 1)
    vmin, vmax = v.amin(1, keepdim=True).T, v.amax(1, keepdim=True).T
    step = torch.linspace(0, 0.5, 50).reshape(-1, 1) * (vmax - vmin)
    err_v = quant_error(v, (vmin + step).repeat_interleave(50, dim=0), (vmax - step).repeat(50, 1), fmt)
    return torch.minimum(err_m.min(0).values, err_v.min(0).values), masses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites-every", type=int, default=3)
    ap.add_argument("--sample", type=int, default=16384)
    ap.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 8])
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = []
    for path, scale in MODELS:
        data += site_data(path, scale, args.sample, seed=0)[:: args.sites_every]
    names = [f"sorted p={p} g={g:g}" for p, g in SCHEDULES] + ["dobi"]
    for bits in args.bits:
        fmt = QuantFormat(bits)
        excess: dict[tuple[str, str], list[float]] = {(k, kind): [] for k in names for kind in ("weight", "act")}
        masses = []
        for site, v in data:
            kind = "weight" if site.endswith("weight_q") else "act"
            v = v.float()
            vmin, vmax = v.amin(1), v.amax(1)
            best, m = oracle(v, fmt)
            masses.append(m)
            cfgs = [SearchConfig(method="sorted", sorted_tail_mass=p, sorted_gamma=g) for p, g in SCHEDULES]
            for name, cfg in zip(names, cfgs + [SearchConfig(method="dobi")]):
                err = search_bounds(v, vmin, vmax, fmt, cfg).sq_error
                excess[name, kind] += ((err / best.clamp_min(1e-30)) - 1).clamp_min(0).tolist()
        m = torch.cat(masses)
        print(f"\n{bits}-bit: {len(data)} sites, {m.shape[0]} rows; oracle tail mass per side: "
              f"median {m.median():.2e}, 90% {m.quantile(0.9):.2e}, max {m.max():.2e}")
        for name in names:
            line = f"  {name:20s} excess MSE over oracle"
            for kind in ("weight", "act"):
                e = np.array(excess[name, kind])
                line += (f" | {kind}: mean {100 * e.mean():5.2f} % p90 {100 * np.quantile(e, 0.9):5.2f} %"
                         f" max {100 * e.max():6.2f} %")
            print(line)


if __name__ == "__main__":
    main()
