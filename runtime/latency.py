"""Latency of two engines at the same tile size, measured interleaved on the same machine.

After ``warmup`` runs of each, the two engines alternate (A B, then B A, ...) on the same
random tile so that clock-frequency drift, caches and other load hit both alike; each run
is timed with ``time.perf_counter``. Reported: median and p90 in milliseconds, and
``speedup = fp_median / q_median``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from srq.errors import SrqError
from srq.runtime.engine import Engine

MIN_RUNS = 20


@dataclass(frozen=True)
class Timing:
    """One engine's run times in ms (in the order measured) and their median / p90."""

    runs_ms: tuple[float, ...]

    @property
    def median(self) -> float:
        return float(np.median(self.runs_ms))

    @property
    def p90(self) -> float:
        return float(np.percentile(self.runs_ms, 90))


@dataclass(frozen=True)
class LatencyResult:
    fp: Timing
    q: Timing
    tile: tuple[int, int]

    @property
    def speedup(self) -> float:
        return self.fp.median / self.q.median

    def as_dict(self) -> dict:
        return {"tile": list(self.tile), "fp_ms": self.fp.median, "fp_p90_ms": self.fp.p90,
                "q_ms": self.q.median, "q_p90_ms": self.q.p90, "speedup": self.speedup,
                "fp_runs_ms": list(self.fp.runs_ms), "q_runs_ms": list(self.q.runs_ms)}


def _time_ms(engine: Engine, x: np.ndarray) -> float:
    t0 = time.perf_counter()
    engine.run(x)
    return (time.perf_counter() - t0) * 1e3


def measure_latency(fp: Engine, q: Engine, runs: int = MIN_RUNS, warmup: int = 3,
                    seed: int = 0, progress: bool | None = None) -> LatencyResult:
    """Time ``fp`` and ``q`` interleaved on one random tile of their common input shape."""
    if fp.input_shape != q.input_shape:
        raise SrqError(f"{q.path}: input {q.input_shape} differs from the FP model's "
                       f"{fp.input_shape} ({fp.path}); latency must compare the same tile size")
    if runs < MIN_RUNS:
        raise SrqError(f"latency runs {runs}: at least {MIN_RUNS} are needed for a stable median")
    x = np.random.default_rng(seed).random(fp.input_shape, dtype=np.float32)
    for _ in range(warmup):
        fp.run(x)
        q.run(x)
    fp_ms, q_ms = [], []
    for i in tqdm(range(runs), desc="latency", unit="pair", leave=False,
                  disable=None if progress is None else not progress):
        order = ((fp, fp_ms), (q, q_ms)) if i % 2 == 0 else ((q, q_ms), (fp, fp_ms))
        for engine, sink in order:
            sink.append(_time_ms(engine, x))
    return LatencyResult(Timing(tuple(fp_ms)), Timing(tuple(q_ms)), fp.tile)
