"""Release gates as data: ``Gate(name, metric, op, threshold)`` checked against a report summary.

A gate whose metric was not measured fails (a release cannot pass on a number nobody
took). ``evaluate`` returns one line per failed gate; the CLI raises
``srq.errors.GateFailure`` with them (exit code 1).
"""

from __future__ import annotations

import math
import operator
from dataclasses import asdict, dataclass

OPS = {"<=": operator.le, ">=": operator.ge}


@dataclass(frozen=True)
class Gate:
    """``summary[metric] op threshold`` must hold; ``name`` is the CLI flag it came from."""

    name: str
    metric: str
    op: str
    threshold: float

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"gate {self.name}: op {self.op!r} not in {sorted(OPS)}")

    def check(self, summary: dict) -> str | None:
        """None when the gate holds, else one line saying what failed."""
        value = summary.get(self.metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return f"{self.name}: {self.metric} was not measured (needs {self.op} {self.threshold:g})"
        if not OPS[self.op](value, self.threshold):
            return f"{self.name}: {self.metric} = {value:.4g}, needs {self.op} {self.threshold:g}"
        return None

    def as_dict(self) -> dict:
        return asdict(self)


def standard_gates(max_psnr_drop: float | None = None, min_parity_psnr: float | None = None,
                   min_speedup: float | None = None) -> list[Gate]:
    """Gates from the CLI flags ``--max-psnr-drop DB --min-parity-psnr DB --min-speedup X``."""
    specs = [("--max-psnr-drop", "psnr_drop", "<=", max_psnr_drop),
             ("--min-parity-psnr", "parity_psnr", ">=", min_parity_psnr),
             ("--min-speedup", "speedup", ">=", min_speedup)]
    return [Gate(name, metric, op, float(t)) for name, metric, op, t in specs if t is not None]


def evaluate(gates: list[Gate], summary: dict) -> list[str]:
    """One line per failed gate (empty: all passed)."""
    return [line for g in gates if (line := g.check(summary)) is not None]
