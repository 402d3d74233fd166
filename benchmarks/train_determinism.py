"""Compare the training losses of two runs of train_default_model.py step by step.

Issue 3's determinism check: a rerun from scratch with the same config and seed must give
the same loss at every one of the first N steps. Reads ``<run>/curve.json`` of both runs.

  python benchmarks/train_determinism.py runs/train_default runs/determinism --steps 100
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_a", type=Path)
    p.add_argument("run_b", type=Path)
    p.add_argument("--steps", type=int, default=100)
    args = p.parse_args(argv)
    a, b = (json.loads((r / "curve.json").read_text())["losses"][: args.steps] for r in (args.run_a, args.run_b))
    if min(len(a), len(b)) < args.steps:
        print(f"only {len(a)} / {len(b)} steps recorded, need {args.steps}", file=sys.stderr)
        return 2
    diffs = [abs(x - y) for x, y in zip(a, b)]
    same = sum(d == 0.0 for d in diffs)
    print(f"first {args.steps} steps: {same} identical losses, max |diff| {max(diffs):.3e} "
          f"(loss at step 1 {a[0]:.6f} / {b[0]:.6f}, at step {args.steps} {a[-1]:.6f} / {b[-1]:.6f})")
    return 0 if same == args.steps else 1


if __name__ == "__main__":
    sys.exit(main())
