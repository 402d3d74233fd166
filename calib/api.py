"""``calibrate(model, CalibConfig(...), batches, info) -> Recipe``: placement, FP observation, phase-1 search,
then (``CalibConfig.dqc.iterations > 0``) phase-2 DQC on the same calibration crops."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn
from tqdm import tqdm

from srq.calib.dqc import DQCConfig, distill
from srq.calib.layers import WeightedQuantLayer
from srq.calib.observe import Observer, attach_observers
from srq.calib.quantizer import FakeQuantizer, check_finite
from srq.calib.recipe import CalibMeta, ModelInfo, Recipe, recipe_from_sites
from srq.calib.search import SearchConfig, search_bounds
from srq.calib.sites import PlacementConfig, place_quantizers, set_mode
from srq.errors import SrqError


@dataclass(frozen=True)
class CalibConfig:
    """Calibration settings: placement, phase-1 search, phase-2 DQC, sample size per activation site, seed.

    ``sample_cap``: values kept per activation site for the search (seeded uniform subsample with
    replacement; 2^17 resolves tail masses down to ~1e-5 while the 384-site SwinIR-light search
    stays ~15-25 CPU-s, see ``benchmarks/calib_phase1_timing.py``). ``data``: a description of
    the calibration data for the recipe.
    """

    placement: PlacementConfig = field(default_factory=PlacementConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    dqc: DQCConfig = field(default_factory=DQCConfig)
    sample_cap: int = 1 << 17
    seed: int = 0
    data: str = ""


def _weight_data(weight: Tensor, q: FakeQuantizer, cap: int, gen: torch.Generator) -> Tensor:
    """``(C, M)`` rows to search: output channels (per-channel) or one row; at most ``cap`` values per row."""
    w = weight.detach().float()
    rows = w.reshape(w.shape[0], -1) if q.axis is not None else w.reshape(1, -1)
    if rows.shape[1] > cap:
        rows = rows[:, torch.randint(rows.shape[1], (cap,), generator=gen)]
    return rows


def _search_site(q: FakeQuantizer, data: Tensor, vmin: Tensor, vmax: Tensor, mean: Tensor | None,
                 cfg: SearchConfig) -> tuple[Tensor, Tensor, Tensor | None]:
    beta = mean if q.beta is not None else None
    if beta is not None:
        data, vmin, vmax = data - beta.reshape(-1, 1), vmin - beta, vmax - beta
    r = search_bounds(data, vmin, vmax, q.fmt, cfg, q.one_direction)
    return r.lb, r.ub, beta


@torch.no_grad()
def init_bounds(model: nn.Module, sites: dict[str, FakeQuantizer], observers: dict[str, Observer],
                cfg: CalibConfig) -> None:
    """Phase 1 on every site: weights from the parameters, activations from their observers."""
    gen = torch.Generator().manual_seed(cfg.seed)
    weights = {m.weight_q.site: m.weight for m in model.modules() if isinstance(m, WeightedQuantLayer)}
    done: dict[tuple, tuple] = {}
    for name, q in tqdm(sites.items(), desc=f"phase 1 ({cfg.search.method})", unit="site", leave=False):
        if q.kind == "weight":
            if name not in weights:
                raise SrqError(f"quantizer site {name}: no weight found for it")
            check_finite(weights[name], name)
            data = _weight_data(weights[name], q, cfg.sample_cap, gen)
            w = weights[name].detach().float().reshape(data.shape[0], -1)
            q.set_bounds(*_search_site(q, data, w.amin(1), w.amax(1), w.mean(1), cfg.search))
            continue
        obs = observers[name]
        key = (id(obs), q.fmt, q.one_direction, q.beta is not None)
        if key not in done:
            if obs.count == 0:
                raise SrqError(f"quantizer site {name}: never reached by the calibration data")
            one = lambda v: torch.tensor([v], dtype=torch.float32)  # noqa: E731
            done[key] = _search_site(q, obs.sample().reshape(1, -1), one(obs.min), one(obs.max), one(obs.mean),
                                     cfg.search)
        q.set_bounds(*done[key])


def calibrate(model: nn.Module, config: CalibConfig, batches: Iterable[Tensor], info: ModelInfo) -> Recipe:
    """Calibrate a copy of ``model`` (the argument stays FP) and return its ``Recipe``.

    ``batches``: LR calibration tensors ``(N, C, h, w)`` float32 in the model's input range,
    observed by one no-grad FP pass and (all batches concatenated, so equal ``h, w``) the DQC crops.
    ``info``: the FP model's identity (``ModelInfo.of(sr_model)``). DQC's record is in
    ``recipe.calibration.settings["dqc_result"]`` (best validation PSNR in dB, step time in s).
    """
    start = time.perf_counter()
    batches = list(batches)
    if not batches:
        raise SrqError("calibration data: no batches")
    teacher = model.eval()
    model = copy.deepcopy(model).eval()
    sites = place_quantizers(model, config.placement, batches[0][:1])
    observers = attach_observers(model, sites, config.sample_cap, config.seed)
    with torch.no_grad():
        for batch in tqdm(batches, desc="observe", unit="batch", leave=False):
            model(batch)
    for q in sites.values():
        q.observer = None
    init_bounds(model, sites, observers, config)
    set_mode(sites, "quant")
    settings = {"search": asdict(config.search), "sample_cap": config.sample_cap}
    loss_curve: tuple[float, ...] = ()
    iterations = 0
    if config.dqc.iterations > 0:
        result = distill(model, teacher, torch.cat(batches), config.dqc, seed=config.seed)
        loss_curve, iterations = tuple(round(v, 7) for v in result.loss_curve), result.iterations_done
        settings["dqc"] = asdict(config.dqc)
        settings["dqc_result"] = {"best_psnr_db": result.best_psnr, "best_iteration": result.best_iteration,
                                  "val_psnr_db": [list(v) for v in result.val_psnr], "interrupted": result.interrupted,
                                  "step_time_s": round(result.step_time_s, 4), "skipped_steps": result.skipped_steps}
    meta = CalibMeta(method=config.search.method, data=config.data, seed=config.seed, iterations=iterations,
                     wall_time_s=round(time.perf_counter() - start, 3), loss_curve=loss_curve, settings=settings)
    return recipe_from_sites(sites, info, config.placement, meta)
