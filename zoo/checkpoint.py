"""Read an untrusted checkpoint file into a plain fp32 state dict, with errors that name the file and cause.

``.pth``/``.pt`` go through ``torch.load(weights_only=True)`` (refuses pickled code), ``.safetensors``
through safetensors. Training containers (``params_ema``, ``params``, ``state_dict``) are unwrapped
and a DataParallel ``module.`` prefix is stripped; fp16/bf16 storage is restored to fp32.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from srq.errors import SrqError

TORCH_SUFFIXES = (".pth", ".pt")
SUFFIXES = (*TORCH_SUFFIXES, ".safetensors")
CONTAINER_KEYS = ("params_ema", "params", "state_dict")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)  # safetensors header metadata

    def scale_hint(self) -> int | None:
        """Scale recorded beside the weights: metadata ``scale``, else one ``x<N>`` token in the file name."""
        if self.metadata.get("scale", "").isdigit():
            return int(self.metadata["scale"])
        found = {int(n) for n in re.findall(r"x(\d)(?!\d)", self.path.stem, flags=re.IGNORECASE)}
        return found.pop() if len(found) == 1 else None


def _read_torch(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():
            detail = next((ln.strip() for ln in str(exc).splitlines() if "Unsupported" in ln), "")
            raise SrqError(
                f"{path}: refused to load: the pickle holds Python objects, not just tensors "
                f"(torch.load weights_only=True: {detail.split(' was not')[0] or 'unsafe content'}); "
                "re-save it as a plain state dict or as .safetensors"
            ) from None
        raise SrqError(f"{path}: corrupt checkpoint ({exc})") from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as exc:
        raise SrqError(f"{path}: truncated or corrupt checkpoint ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else 'unexpected end of file'})") from None


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise SrqError(f"{path}: truncated or corrupt safetensors file ({exc})") from None


def _unwrap(path: Path, obj: object) -> dict[str, torch.Tensor]:
    for key in CONTAINER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise SrqError(f"{path}: not a state dict (holds {type(obj).__name__}{' (empty)' if obj == {} else ''})")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise SrqError(f"{path}: not a plain state dict: entry {bad[0]!r} holds {type(obj[bad[0]]).__name__}, "
                       "not a tensor")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Load ``path`` (``.pth``, ``.pt`` or ``.safetensors``) as an fp32 state dict."""
    path = Path(path)
    if not path.is_file():
        raise SrqError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise SrqError(f"{path}: unsupported checkpoint format {suffix or '(no suffix)'}; "
                       f"expected one of {', '.join(SUFFIXES)}")
    metadata: dict[str, str] = {}
    if suffix == ".safetensors":
        raw, metadata = _read_safetensors(path)
    else:
        raw = _read_torch(path)
    state_dict = {k: (v.float() if v.is_floating_point() else v) for k, v in _unwrap(path, raw).items()}
    return Checkpoint(path=path, state_dict=state_dict, metadata=metadata)
