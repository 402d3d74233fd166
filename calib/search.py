"""Phase 1: bound initialisation by batched candidate search, minimising ||v - Q(v)||_2.

Every method builds ``K`` candidate ``(lb, ub)`` pairs per channel and scores them all in one
batched evaluation of the *same* snapped quantizer as the forward pass
(``srq.calib.quantizer.qparams`` + ``fake_quant`` on a ``(K, C, M)`` tensor); the first
candidate with the lowest error wins (ties go to the widest range) and is returned as the
bounds the engine applies (``snapped_bounds``: same scale and zero point). Data ``v`` is ``(C, M)``:
``C = 1`` for a per-tensor site, ``C`` output channels for per-channel weights. ``vmin`` /
``vmax`` are the exact extremes over all observed data (the sample may miss them).

Methods:

* ``minmax``: ``[vmin, vmax]``.
* ``percentile``: ``[q(0.01 %), q(99.99 %)]`` of the sample (ORT's / ModelOpt's customary
  99.99); one-direction sites keep ``lb = vmin``.
* ``dobi`` (2DQuant): ``R = vmax - vmin``, ``i = 0..K-1``; symmetric shrink
  ``[vmin + iR/2K, vmax - iR/2K]``; one-direction ``[vmin, vmax - iR/2K]`` (paper's Algorithm 1).
* ``sorted`` (2DQuant+ sorted grading): candidates at quantiles of the sample, clipping the
  same probability mass ``m_i`` from each tail (one-direction: the upper tail only), so they
  are dense in value where the data are dense and follow asymmetric tails:
  ``lb_i = Q(m_i)``, ``ub_i = Q(1 - m_i)`` (linear interpolation between order statistics),
  ``m_i = p (i / (K-1))^gamma``, ``i = 0..K-1``; ``i = 0`` is ``[vmin, vmax]``.

  Schedule ``K = 100, p = 0.2, gamma = 3``, chosen by measurement
  (``benchmarks/calib_sorted_schedule.py``: real IMDN x2 and PAN x4 weights per channel and
  their ``body`` activations on Set5 LR crops, 46 sites / 830 rows, excess MSE over an oracle
  that takes the best of a 40 x 40 tail-mass grid and a 50 x 50 value grid). The oracle's
  clipped mass per side is tiny at 8 bits (median 1.6e-5) and large at 2 bits (median 0.04,
  90th percentile 0.16), so the schedule must reach ~0.2 yet be dense near 0: a cubic power
  does both. Mean excess (weights / activations): 2-bit 0.45 % / 2.9 %, 4-bit 0.81 % / 2.9 %,
  8-bit 0.28 % / 0.92 %; DOBI: 2.9 % / 4.2 %, 0.99 % / 29 %, 2.2 % / 0.37 %. A linear schedule
  (gamma 1) or p = 0.05 loses at 2 or 8 bits. The remaining ~3 % on activations is optimum
  asymmetry in clipped mass (equal-mass pairs cannot express it); DOBI stays better on 8-bit
  activations, whose optimum sits in the sparse extreme tail where value steps are finer.

Scoring: with more than ``2 * prescreen`` values per row, all candidates are scored on a
strided ``prescreen``-value subset and the ``finalists`` best rescored on all values (5x less
work; on 32 synthetic Gaussian / Laplace / ReLU-like / heavy-tailed cases at 2-8 bits the
error is within 0.8 % of single-stage scoring, identical in most; exact on gridded data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from srq.calib.quantizer import QuantFormat, fake_quant, qparams, snapped_bounds

Method = Literal["minmax", "percentile", "dobi", "sorted"]
METHODS: tuple[str, ...] = ("minmax", "percentile", "dobi", "sorted")
_EVAL_CHUNK = 1 << 24  # elements of the (K, C, M) scoring buffer evaluated at once


@dataclass(frozen=True)
class SearchConfig:
    """Phase-1 search settings (see the module docstring for each method)."""

    method: Method = "sorted"
    candidates: int = 100
    percentile: float = 99.99
    sorted_tail_mass: float = 0.2
    sorted_gamma: float = 3.0
    prescreen: int = 1 << 14  # values per channel for the first scoring stage
    finalists: int = 8  # candidates per channel rescored on all values

    def __post_init__(self) -> None:
        from srq.errors import SrqError

        if self.method not in METHODS:
            raise SrqError(f"search method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.candidates < 1 or not 0 < self.sorted_tail_mass < 0.5 or not 50 < self.percentile < 100:
            raise SrqError(f"search settings out of range: {self}")


@dataclass(frozen=True)
class SearchResult:
    """Chosen bounds and their squared error per channel, all ``(C,)``."""

    lb: Tensor
    ub: Tensor
    sq_error: Tensor


def tail_quantiles(v: Tensor, mass: Tensor) -> tuple[Tensor, Tensor]:
    """``(K, C)`` lower / upper quantiles of ``v`` ``(C, M)`` clipping ``mass[k]`` from each tail.

    Linear interpolation between order statistics (tiny masses still move the bounds
    continuously into the tail); only the tails are ordered (``topk``, ~5x cheaper than a sort).
    """
    m = v.shape[1]
    pos = (mass * (m - 1)).clamp(0, (m - 1) / 2)
    depth = min(m, int(pos.max()) + 2)
    low = torch.topk(v, depth, dim=1, largest=False).values  # ascending: low[:, j] = v_(j)
    high = torch.topk(v, depth, dim=1).values  # descending: high[:, j] = v_(M-1-j)
    k = pos.floor().long().clamp(max=depth - 1)
    k1 = (k + 1).clamp(max=depth - 1)
    frac = (pos - k).reshape(-1, 1)
    lo = low[:, k].T + frac * (low[:, k1].T - low[:, k].T)
    hi = high[:, k].T + frac * (high[:, k1].T - high[:, k].T)
    return lo, hi


def candidates(v: Tensor, vmin: Tensor, vmax: Tensor, cfg: SearchConfig, one_direction: bool) -> tuple[Tensor, Tensor]:
    """Candidate bounds ``(lb, ub)``, each ``(K, C)``, for data ``v`` ``(C, M)``."""
    vmin, vmax = vmin.reshape(1, -1), vmax.reshape(1, -1)
    if cfg.method == "minmax":
        return vmin, vmax
    if cfg.method == "percentile":
        lo, hi = tail_quantiles(v, torch.tensor([1 - cfg.percentile / 100]))
        return (vmin if one_direction else lo), hi
    k = cfg.candidates
    i = torch.arange(k, dtype=v.dtype).reshape(-1, 1)
    if cfg.method == "dobi":
        step = (vmax - vmin) / (2 * k)
        lb = vmin.expand(k, -1) if one_direction else vmin + i * step
        return lb, vmax - i * step
    mass = cfg.sorted_tail_mass * (i.reshape(-1) / max(k - 1, 1)) ** cfg.sorted_gamma
    lo, hi = tail_quantiles(v, mass)
    lo[0], hi[0] = vmin[0], vmax[0]
    return (vmin.expand(k, -1) if one_direction else lo), hi


def quant_error(v: Tensor, lb: Tensor, ub: Tensor, fmt: QuantFormat) -> Tensor:
    """``(K, C)`` squared errors ``||v_c - Q_{lb_kc, ub_kc}(v_c)||^2`` for ``v`` ``(C, M)``."""
    scale, zero_point = qparams(lb, ub, fmt)
    out = torch.empty(lb.shape, dtype=torch.float64)
    rows = max(1, _EVAL_CHUNK // max(v.numel(), 1))
    for s in range(0, lb.shape[0], rows):
        sl = slice(s, s + rows)
        err = fake_quant(v, scale[sl, :, None], zero_point[sl, :, None], fmt.qmin, fmt.qmax).sub_(v)
        out[sl] = torch.linalg.vector_norm(err, dim=2).double() ** 2
    return out


@torch.no_grad()
def search_bounds(v: Tensor, vmin: Tensor, vmax: Tensor, fmt: QuantFormat, cfg: SearchConfig,
                  one_direction: bool = False) -> SearchResult:
    """Best candidate bounds per channel for data ``v`` ``(C, M)`` with exact extremes ``vmin``/``vmax`` ``(C,)``.

    Scoring is two-stage when ``v`` is large: all candidates on a strided ``cfg.prescreen`` column
    subset (``v`` is already a random sample, so any column subset is one too), then the
    ``cfg.finalists`` best per channel on all of ``v``.
    """
    v = v.float()
    lb, ub = candidates(v, vmin.float(), vmax.float(), cfg, one_direction)
    cols = torch.arange(lb.shape[1])
    if v.shape[1] > 2 * cfg.prescreen and lb.shape[0] > cfg.finalists:
        rough = quant_error(v[:, :: v.shape[1] // cfg.prescreen], lb, ub, fmt)
        keep = torch.sort(torch.topk(rough, cfg.finalists, dim=0, largest=False).indices, dim=0).values
        lb, ub = lb.gather(0, keep), ub.gather(0, keep)
    err = quant_error(v, lb, ub, fmt)
    best = torch.argmin(err, dim=0)
    lb, ub = snapped_bounds(lb[best, cols], ub[best, cols], fmt)
    return SearchResult(lb, ub, err[best, cols])
