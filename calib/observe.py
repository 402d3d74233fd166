"""FP statistics of one activation site, gathered during the no-grad observation pass.

Exact running min / max / mean over everything seen, plus a seeded uniform subsample
(with replacement) of at most ``cap`` values for the bound search.
"""

from __future__ import annotations

import math
import weakref

import torch
from torch import Tensor

from srq.calib.quantizer import check_finite


class Observer:
    """Accumulates ``min``, ``max``, ``mean`` and a ``(cap,)`` float32 sample of the observed values."""

    def __init__(self, cap: int, seed: int, site: str = "") -> None:
        self.cap, self.site = cap, site
        self.generator = torch.Generator().manual_seed(seed)
        self.min = float("inf")
        self.max = float("-inf")
        self.total = 0.0
        self.count = 0
        self._chunks: list[Tensor] = []
        self._last: weakref.ref | None = None

    def update(self, x: Tensor) -> None:
        """Add ``x`` (any shape, float); ``SrqError`` naming ``site`` if it holds NaN or inf."""
        last = None if self._last is None else self._last()
        if last is not None and (x is last or x._base is last):  # the same tensor or a slice of it (quantizers
            return  # sharing this observer: an activation's output and the layer reading part of it)
        self._last = weakref.ref(x)
        x = x.detach()
        lo, hi = torch.aminmax(x)  # NaN propagates into min/max, inf shows in them: one pass checks both
        if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
            check_finite(x, self.site)
        self.min = min(self.min, float(lo))
        self.max = max(self.max, float(hi))
        self.total += float(x.sum())  # float32 pairwise sum: ~1e-7 relative, no float64 copy
        self.count += x.numel()
        if x.numel() > self.cap:  # torch.take reads a non-contiguous tensor without copying it
            sample = torch.take(x, torch.randint(x.numel(), (self.cap,), generator=self.generator))
        else:
            sample = x.reshape(-1).clone()
        self._chunks.append(sample.float())

    @property
    def mean(self) -> float:
        return self.total / max(self.count, 1)

    def sample(self) -> Tensor:
        """``(M,)`` values, ``M <= cap``: everything seen when it fits, else a seeded subsample."""
        if not self._chunks:
            raise RuntimeError("observer saw no data")
        flat = torch.cat(self._chunks)
        if flat.numel() > self.cap:
            flat = flat[torch.randint(flat.numel(), (self.cap,), generator=self.generator)]
        return flat


def attach_observers(model: torch.nn.Module, sites: dict, cap: int, seed: int) -> dict[str, Observer]:
    """One ``Observer`` per activation quantizer (the three qkv inputs of a split qkv share one: they see
    the same tensor; so do the site names of one shared quantizer); quantizers switch to ``"observe"``.
    Returns ``{site: observer}``."""
    from srq.calib.layers import QuantQKV

    shared: dict[str, Observer] = {}
    for m in model.modules():
        if isinstance(m, QuantQKV):
            obs = Observer(cap, seed + len(shared), m.q.input_q.site)
            for part in (m.q, m.k, m.v):
                shared[part.input_q.site] = obs
    observers: dict[str, Observer] = {}
    for i, (name, q) in enumerate(sites.items()):
        if q.kind != "activation":
            continue
        if q.observer is None:  # a quantizer under two site names (shared inputs) keeps its first observer
            q.observer = shared.get(name) or Observer(cap, seed + 1000 + i, name)
        q.mode = "observe"
        observers[name] = q.observer
    return observers
