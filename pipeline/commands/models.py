"""List the SR architectures srq can load, quantize and export, and what each supports.

Columns: scales, colour mode (RGB, or Y = BT.601 luma only with Cb/Cr upscaled by bicubic),
the multiple that input height and width must have, where the network code lives (srq's own
zoo/archs/ or the spandrel library) and how a checkpoint's scale is decided.
Built-in model names (weights shipped with srq) are listed below the table.

Example:
  srq models
  srq models SwinIR      # one architecture
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("arch", nargs="?", help="show only this architecture (case-insensitive)")


def run(args: argparse.Namespace) -> int:
    from srq.zoo.builtin import BUILTIN, WEIGHTS_DIR
    from srq.zoo.catalog import ARCHS, arch_info

    rows = [arch_info(args.arch)] if args.arch else list(ARCHS)
    header = ("arch", "scales", "colour", "multiple", "source", "scale of a checkpoint")
    table = [header] + [
        (a.name, "/".join(f"x{s}" for s in a.scales), "RGB" if a.in_channels == 3 else "Y",
         str(a.size_multiple), a.source, a.scale_rule)
        for a in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    if not args.arch:
        print("\nbuilt-in models:")
        for name, what in BUILTIN.items():
            state = "installed" if (WEIGHTS_DIR / f"{name}.safetensors").is_file() else "not installed"
            print(f"  {name:<18} {what} ({state})")
    return 0
