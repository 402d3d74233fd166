"""FP statistics of one activation site, gathered during the no-grad observation pass.

Exact running min / max / mean over everything seen, plus a seeded uniform subsample
(with replacement) of at most ``cap`` values for the bound search.
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor


class Observer:
    """Accumulates ``min``, ``max``, ``mean`` and a ``(cap,)`` float32 sample of the observed values."""

    def __init__(self, cap: int, seed: int) -> None:
        self.cap = cap
        self.generator = torch.Generator().manual_seed(seed)
        self.min = float("inf")
        self.max = float("-inf")
        self.total = 0.0
        self.count = 0
        self._chunks: list[Tensor] = []
        self._last: weakref.ref | None = None

    def update(self, x: Tensor) -> None:
        if self._last is not None and self._last() is x:  # same tensor, quantizers sharing this observer
            return
        self._last = weakref.ref(x)
        flat = x.detach().reshape(-1).float()
        self.min = min(self.min, float(flat.min()))
        self.max = max(self.max, float(flat.max()))
        self.total += float(flat.double().sum())
        self.count += flat.numel()
        if flat.numel() > self.cap:
            idx = torch.randint(flat.numel(), (self.cap,), generator=self.generator)
            flat = flat[idx]
        self._chunks.append(flat.clone())

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
    """One ``Observer`` per activation site (the three qkv inputs of a split qkv share one: they see the
    same tensor); quantizers switch to ``"observe"``. Returns ``{site: observer}``."""
    from srq.calib.layers import QuantQKV

    shared: dict[str, Observer] = {}
    for m in model.modules():
        if isinstance(m, QuantQKV):
            obs = Observer(cap, seed + len(shared))
            for part in (m.q, m.k, m.v):
                shared[part.input_q.site] = obs
    observers: dict[str, Observer] = {}
    for i, (name, q) in enumerate(sites.items()):
        if q.kind != "activation":
            continue
        q.observer = shared.get(name) or Observer(cap, seed + 1000 + i)
        q.mode = "observe"
        observers[name] = q.observer
    return observers
