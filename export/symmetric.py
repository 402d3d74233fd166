"""Lowering an asymmetric integer grid to a symmetric one (zero point 0, int8 container): what
TensorRT requires, and how the ORT export stores weights of <= 7 bits (ORT's faster U8S8 kernels).

For ``b < 8`` the lowering is exact: the asymmetric levels ``(q - zp) * s`` for ``q`` in
``[qmin, qmax]`` are the integers ``[qmin - zp, qmax - zp]`` times ``s``, which fit in int8
(``|qmin - zp|, |qmax - zp| <= 127``). The symmetric graph uses the same scale, zero point 0
and an integer ``Clip`` to that shifted range, so it gives the same values (0 effective bits
lost). When the shifted range does not fit int8 (8-bit grids with ``zp`` not 128, per-tensor
or per-channel), the range is widened to ``[-m, m]``, ``m = max(|lo|, |hi|)``, on the full int8
grid (activations ``[-128, 127]``, weights narrow ``[-127, 127]``): the step grows from ``s``
to ``m / 127`` and ``log2(m / 127 / s)`` bits are lost (about 1 bit for a one-sided range).
"""

from __future__ import annotations

import numpy as np

from srq.export.qdq_nodes import IntGrid


def to_symmetric(grid: IntGrid, weight: bool) -> tuple[IntGrid, float]:
    """Symmetric int8 grid representing ``grid`` and the effective bits lost (max over channels).

    ``weight``: TensorRT weights use the narrow range ``[-127, 127]``.
    """
    zp = np.asarray(grid.zero_point, dtype=np.int64)
    lo_q, hi_q = grid.qmin - zp, grid.qmax - zp
    floor = -127 if weight else -128
    if np.all(lo_q >= floor) and np.all(hi_q <= 127):
        qmin, qmax = int(lo_q.min()), int(hi_q.max())
        return IntGrid(np.asarray(grid.scale, np.float32), np.zeros_like(zp), qmin, qmax, "int8", grid.axis), 0.0
    scale = np.asarray(grid.scale, np.float64)
    magnitude = np.maximum(np.abs(lo_q), np.abs(hi_q)) * scale
    new_scale = (magnitude / 127).astype(np.float32)
    lost = float(np.max(np.log2(new_scale / scale)))
    return IntGrid(new_scale, np.zeros_like(zp), floor, 127, "int8", grid.axis), lost


def requantize_weight(q_values: np.ndarray, grid: IntGrid, symmetric: IntGrid) -> np.ndarray:
    """Integer weights of ``grid`` re-expressed on ``symmetric`` (exact when the scales are equal)."""
    axis = grid.axis
    shape = [1] * q_values.ndim
    if axis is not None:
        shape[axis] = -1
    zp = np.asarray(grid.zero_point).reshape(shape)
    values = (q_values - zp) * np.asarray(grid.scale, np.float64).reshape(shape)
    return np.clip(np.round(values / np.asarray(symmetric.scale, np.float64).reshape(shape)),
                   symmetric.qmin, symmetric.qmax).astype(np.int64)
