"""Phase-1 bound search: candidate sets, exactness on gridded data, heavy tails, per-channel rows."""

from __future__ import annotations

import pytest
import torch

from srq.calib.quantizer import QuantFormat, fake_quant, qparams
from srq.calib.search import METHODS, SearchConfig, candidates, search_bounds


def run(v, fmt, method, one_direction=False, **kw):
    v = v.reshape(v.shape[0], -1) if v.ndim > 1 else v.reshape(1, -1)
    return search_bounds(v, v.amin(1), v.amax(1), fmt, SearchConfig(method=method, **kw), one_direction)


def mse(v, lb, ub, fmt):
    s, zp = qparams(lb, ub, fmt)
    return float(((fake_quant(v, s, zp, fmt.qmin, fmt.qmax) - v) ** 2).mean())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("fmt", [QuantFormat(3), QuantFormat(4), QuantFormat(4, symmetric=True, narrow=True)])
def test_every_method_is_exact_on_data_already_on_a_grid(method, fmt):
    g = torch.Generator().manual_seed(0)
    levels = torch.arange(fmt.qmin, fmt.qmax + 1, dtype=torch.float32)
    zp = 0 if fmt.symmetric else 5
    v = (levels[torch.randint(len(levels), (20000,), generator=g)] - zp) * 0.125
    v[:2] = (torch.tensor([fmt.qmin, fmt.qmax], dtype=torch.float32) - zp) * 0.125  # both ends present
    r = run(v, fmt, method)
    assert float(r.sq_error) == 0.0
    assert mse(v, r.lb, r.ub, fmt) == 0.0


def test_candidate_sets_follow_their_definitions():
    g = torch.Generator().manual_seed(1)
    v = torch.randn(1, 4001, generator=g)
    vmin, vmax = v.amin(1), v.amax(1)
    lb, ub = candidates(v, vmin, vmax, SearchConfig(method="minmax"), False)
    assert torch.equal(lb, vmin.reshape(1, 1)) and torch.equal(ub, vmax.reshape(1, 1))
    lb, ub = candidates(v, vmin, vmax, SearchConfig(method="dobi"), False)
    r = vmax - vmin
    assert lb.shape == (100, 1)
    torch.testing.assert_close(lb[37, 0], vmin[0] + 37 * r[0] / 200)
    torch.testing.assert_close(ub[37, 0], vmax[0] - 37 * r[0] / 200)
    lb, ub = candidates(v, vmin, vmax, SearchConfig(method="dobi"), True)
    assert torch.all(lb == vmin) and torch.allclose(ub[99], vmax - 99 * r / 200)
    lb, ub = candidates(v, vmin, vmax, SearchConfig(method="percentile"), False)
    s = torch.sort(v[0]).values  # 4001 values: the 0.01 % quantile lies 0.4 of the way from s[0] to s[1]
    torch.testing.assert_close(lb[0, 0], s[0] + 0.4 * (s[1] - s[0]))
    torch.testing.assert_close(ub[0, 0], s[-1] - 0.4 * (s[-1] - s[-2]))
    lb, ub = candidates(v, vmin, vmax, SearchConfig(method="sorted", sorted_tail_mass=0.2, sorted_gamma=1.0), False)
    assert lb[0, 0] == vmin[0] and ub[0, 0] == vmax[0]
    # the last candidate clips 20 % of the sample from each side: rank 800 of 4001 sorted values
    torch.testing.assert_close(lb[-1, 0], s[800])
    torch.testing.assert_close(ub[-1, 0], s[4000 - 800])
    frac_below = (v[0] < lb[50, 0]).float().mean()
    frac_above = (v[0] > ub[50, 0]).float().mean()
    assert abs(float(frac_below - frac_above)) < 1e-3  # equal mass clipped from each tail


def test_sorted_beats_dobi_on_a_heavy_tailed_asymmetric_tensor():
    g = torch.Generator().manual_seed(2)
    bulk = torch.randn(100000, generator=g)
    tail = -torch.log(torch.rand(2000, generator=g)) * 5.0  # exponential right tail, mean 5
    v = torch.cat([bulk, tail])
    for bits in (2, 3, 4):
        fmt = QuantFormat(bits)
        dobi, srt = run(v, fmt, "dobi"), run(v, fmt, "sorted")
        assert float(srt.sq_error) < 0.85 * float(dobi.sq_error), bits
        assert float(srt.sq_error) < float(run(v, fmt, "minmax").sq_error)


def test_search_reduces_error_versus_minmax_on_a_gaussian():
    v = torch.randn(50000, generator=torch.Generator().manual_seed(3))
    fmt = QuantFormat(4)
    base = float(run(v, fmt, "minmax").sq_error)
    assert float(run(v, fmt, "percentile").sq_error) < base  # 99.99 % clips little of a Gaussian
    for method in ("dobi", "sorted"):
        assert float(run(v, fmt, method).sq_error) < 0.6 * base, method


def test_one_direction_keeps_the_lower_bound_at_the_minimum():
    v = torch.rand(30000, generator=torch.Generator().manual_seed(4)) ** 4  # softmax-like: mass near 0
    for method in ("dobi", "sorted", "percentile"):
        r = run(v, QuantFormat(4), method, one_direction=True)
        assert float(r.lb) == pytest.approx(0.0, abs=1e-6), method  # min ~ 0 -> snapped lower bound 0
        assert float(r.ub) < float(v.max())


def test_reported_bounds_are_the_snapped_grid_and_reproduce_the_error():
    v = torch.randn(1, 20000, generator=torch.Generator().manual_seed(5)) + 3.0  # all positive: the range widens to 0
    fmt = QuantFormat(3)
    r = run(v, fmt, "dobi")
    s, zp = qparams(r.lb, r.ub, fmt)
    torch.testing.assert_close(r.lb, -zp * s)
    torch.testing.assert_close(r.ub, (fmt.qmax - zp) * s)
    assert mse(v, r.lb, r.ub, fmt) * v.numel() == pytest.approx(float(r.sq_error), rel=1e-4)


def test_per_channel_rows_are_searched_independently():
    g = torch.Generator().manual_seed(6)
    rows = torch.stack([torch.randn(3000, generator=g) * 0.01, torch.randn(3000, generator=g) * 5 + 2])
    fmt = QuantFormat(4)
    both = run(rows, fmt, "sorted")
    for c in range(2):
        alone = run(rows[c:c + 1], fmt, "sorted")
        torch.testing.assert_close(both.lb[c], alone.lb[0])
        torch.testing.assert_close(both.ub[c], alone.ub[0])


def test_constant_tensor_is_reproduced_by_every_method():
    v = torch.full((1000,), 0.7)
    for method in METHODS:
        r = run(v, QuantFormat(2), method)
        assert mse(v, r.lb, r.ub, QuantFormat(2)) < 1e-12, method
