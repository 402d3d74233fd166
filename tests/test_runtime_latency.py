"""Interleaved latency on real ORT sessions."""

from __future__ import annotations

import pytest

from srq.errors import SrqError
from srq.runtime.latency import measure_latency
from srq.runtime.ort_engine import OrtEngine, OrtOptions
from test_runtime_nets import make_sr_onnx

OPTS = OrtOptions(threads=1, save_optimized=False)


def test_a_deeper_net_is_measured_slower(tmp_path):
    """Same tile, 2 vs 12 layers of width 32: the timing must see the 6x difference in work."""
    small = make_sr_onnx(tmp_path / "s.onnx", (48, 48), depth=2, width=32)
    big = make_sr_onnx(tmp_path / "b.onnx", (48, 48), depth=12, width=32)
    with OrtEngine(big, OPTS) as fp, OrtEngine(small, OPTS) as q:
        res = measure_latency(fp, q, runs=20, warmup=2)
    assert len(res.fp.runs_ms) == len(res.q.runs_ms) == 20
    assert res.fp.p90 >= res.fp.median > 0
    assert res.speedup == pytest.approx(res.fp.median / res.q.median)
    assert res.speedup > 2.0
    assert res.as_dict()["tile"] == [48, 48]


def test_latency_refuses_different_tiles_and_too_few_runs(tmp_path):
    a = make_sr_onnx(tmp_path / "a.onnx", (16, 16))
    b = make_sr_onnx(tmp_path / "b.onnx", (16, 24))
    with OrtEngine(a, OPTS) as ea, OrtEngine(b, OPTS) as eb:
        with pytest.raises(SrqError, match="same tile size"):
            measure_latency(ea, eb)
        with pytest.raises(SrqError, match="at least 20"):
            measure_latency(ea, ea, runs=5)
