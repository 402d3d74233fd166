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
* ``sorted`` (2DQuant+ sorted grading): candidates at order statistics of the sorted sample,
  clipping the same probability mass ``m_i`` from each tail (one-direction: the upper tail
  only): ``lb_i = v_(floor(m_i (M-1)))``, ``ub_i = v_(M-1-floor(m_i (M-1)))``, with the power
  schedule ``m_i = p (i / (K-1))^gamma``; ``i = 0`` is ``[vmin, vmax]``. Candidates are dense in
  value where the data are dense and follow asymmetric tails.

  Schedule ``K = 100, p = 0.2, gamma = 2`` chosen by measurement (``benchmarks/sorted_schedule.py``)
  on real IMDN x2 / PAN x4 activations (Set5 LR) and weights at 2/3/4/8 bits: the optimal clipped
  tail mass ranges from ~1e-5 (8-bit, light tails) to ~0.1 (2-bit, post-activation inputs), so
  a quadratic schedule spends most candidates on small masses while still reaching 20 %.
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
    sorted_gamma: float = 2.0
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


def _order_stats(v_sorted: Tensor, mass: Tensor) -> tuple[Tensor, Tensor]:
    """``(K, C)`` lower / upper quantiles clipping ``mass[k]`` from each tail (linear interpolation
    between order statistics, so tiny masses still move the bounds continuously into the tail)."""
    m = v_sorted.shape[1]
    pos = (mass * (m - 1)).clamp(0, (m - 1) / 2)
    k = pos.floor().long().clamp(max=m - 1)
    k1 = (k + 1).clamp(max=m - 1)
    frac = (pos - k).reshape(-1, 1)
    lo = v_sorted[:, k].T + frac * (v_sorted[:, k1].T - v_sorted[:, k].T)
    hi = v_sorted[:, m - 1 - k].T + frac * (v_sorted[:, m - 1 - k1].T - v_sorted[:, m - 1 - k].T)
    return lo, hi


def candidates(v: Tensor, vmin: Tensor, vmax: Tensor, cfg: SearchConfig, one_direction: bool) -> tuple[Tensor, Tensor]:
    """Candidate bounds ``(lb, ub)``, each ``(K, C)``, for data ``v`` ``(C, M)``."""
    vmin, vmax = vmin.reshape(1, -1), vmax.reshape(1, -1)
    if cfg.method == "minmax":
        return vmin, vmax
    if cfg.method == "percentile":
        q = torch.tensor([1 - cfg.percentile / 100, cfg.percentile / 100], dtype=v.dtype)
        lo, hi = torch.quantile(v, q, dim=1)
        return (vmin if one_direction else lo.reshape(1, -1)), hi.reshape(1, -1)
    k = cfg.candidates
    i = torch.arange(k, dtype=v.dtype).reshape(-1, 1)
    if cfg.method == "dobi":
        step = (vmax - vmin) / (2 * k)
        lb = vmin.expand(k, -1) if one_direction else vmin + i * step
        return lb, vmax - i * step
    mass = cfg.sorted_tail_mass * (i.reshape(-1) / max(k - 1, 1)) ** cfg.sorted_gamma
    lo, hi = _order_stats(torch.sort(v, dim=1).values, mass)
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
