"""What srq supports, per architecture: scales, colour mode, input size multiple, where the code lives.

One row per architecture; ``tests/test_zoo_catalog.py`` checks each row against real loaded models.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from srq.errors import SrqError


@dataclass(frozen=True)
class ArchInfo:
    name: str  # spandrel architecture id, as in SRModel.arch
    scales: tuple[int, ...]
    in_channels: int  # 3 = RGB, 1 = Y (BT.601 luma) only
    size_multiple: int  # input H and W must be multiples (SwinIR: window size)
    source: str  # "srq" (zoo/archs/) or "spandrel"
    scale_rule: str  # how the scale of a checkpoint is decided
    paper: str


ARCHS: tuple[ArchInfo, ...] = (
    ArchInfo("IMDN", (2, 3, 4), 3, 1, "srq", "fixed by the weights", "Hui et al., ACM MM 2019"),
    ArchInfo("PAN", (2, 3, 4), 3, 1, "srq",
             "x4 fixed by the weights; x2/x3 weights look alike: file name x<N> or scale=",
             "Zhao et al., ECCVW 2020"),
    ArchInfo("RFDN", (2, 3, 4), 3, 1, "srq", "fixed by the weights", "Liu et al., AIM 2020"),
    ArchInfo("CARN-M", (2, 3, 4), 3, 1, "srq", "one net for all scales: scale= required",
             "Ahn et al., ECCV 2018"),
    ArchInfo("FSRCNN", (2, 3, 4), 1, 1, "srq", "not in the weights: file name x<N> or scale=",
             "Dong et al., ECCV 2016"),
    ArchInfo("EDSR", (2, 3, 4), 3, 1, "srq", "fixed by the weights (EDSR and EDSR-baseline)",
             "Lim et al., CVPRW 2017"),
    ArchInfo("SwinIR", (2, 3, 4, 8), 3, 8, "spandrel",
             "fixed by the weights (classical, lightweight, real-SR)", "Liang et al., ICCVW 2021"),
)


def arch_names() -> list[str]:
    return [a.name for a in ARCHS]


def arch_info(name: str) -> ArchInfo:
    """The row for ``name`` (case-insensitive); SrqError naming the closest known names otherwise."""
    by_lower = {a.name.lower(): a for a in ARCHS}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(by_lower[c].name for c in close)}? " if close else ""
    raise SrqError(f"unknown architecture {name!r}: {hint}known: {', '.join(arch_names())}")
