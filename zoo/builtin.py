"""Built-in model names -> weight files shipped in ``zoo/weights/<name>.safetensors``.

The files are produced by srq's own training (fp16 storage allowed; loading restores fp32).
"""

from __future__ import annotations

import difflib
from pathlib import Path

from srq.errors import SrqError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

# name -> what it is (SwinIR-light: embed 60, depths 6x4, heads 6x4, window 8, mlp 2, pixelshuffledirect)
BUILTIN: dict[str, str] = {
    "swinir-light-x2": "SwinIR-light x2 trained by benchmarks/train_default_model.py on builtin:calib",
}


def is_builtin_name(spec: str) -> bool:
    return spec in BUILTIN


def builtin_path(name: str) -> Path:
    """The weight file of built-in model ``name``; SrqError if the name is unknown or the file absent."""
    if name not in BUILTIN:
        close = difflib.get_close_matches(name, list(BUILTIN), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise SrqError(f"{name}: no such file and no built-in model of that name; {hint}"
                       f"built-in: {', '.join(BUILTIN)}")
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        raise SrqError(f"{path}: weights of built-in model {name!r} ({BUILTIN[name]}) are not installed "
                       "in this copy of srq; pass a checkpoint file instead")
    return path
