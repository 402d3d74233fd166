"""``load_model``: checkpoint file or built-in name -> ``SRModel`` (fp32, eval) through spandrel's one loading path."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import spandrel
import torch
from spandrel.architectures.SwinIR import SwinIR
from torch import nn

from srq.errors import SrqError
from srq.zoo.archs import register
from srq.zoo.archs.swinir import complete_buffers
from srq.zoo.builtin import builtin_path, is_builtin_name
from srq.zoo.catalog import arch_names
from srq.zoo.checkpoint import SUFFIXES, Checkpoint, read_checkpoint


@dataclass(frozen=True, eq=False)
class SRModel:
    module: nn.Module  # (1, in_channels, H, W) in [0, 1] -> (1, in_channels, scale*H, scale*W); eval, fp32
    arch: str  # architecture id (see srq.zoo.catalog)
    scale: int
    in_channels: int  # 3 = RGB, 1 = Y only
    size_multiple: int  # input H and W must be multiples of this (SwinIR: window size)
    source: str  # checkpoint path, or "builtin:<name>"
    fingerprint: str  # sha256 hex over sorted state-dict names, dtypes, shapes and tensor bytes


def state_dict_fingerprint(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _resolve(spec: str | Path) -> tuple[Path, str]:
    text = str(spec)
    if isinstance(spec, str) and is_builtin_name(spec):
        return builtin_path(spec), f"builtin:{spec}"
    path = Path(spec)
    if path.exists() or "/" in text or path.suffix.lower() in SUFFIXES:
        return path, str(path)
    return builtin_path(text), f"builtin:{text}"  # raises: unknown name, with the closest ones


def _describe(ckpt: Checkpoint) -> spandrel.ImageModelDescriptor:
    register()
    state_dict = complete_buffers(ckpt.state_dict)
    supported = ", ".join(arch_names())
    try:
        desc = spandrel.ModelLoader().load_from_state_dict(state_dict)
    except spandrel.UnsupportedModelError:
        sample = ", ".join(list(state_dict)[:4])
        raise SrqError(f"{ckpt.path}: the tensor names ({sample}, ...) fit no supported architecture; "
                       f"supported: {supported}") from None
    except (RuntimeError, KeyError, ValueError, IndexError, AssertionError) as exc:
        arch = next((a.architecture.id for a in spandrel.MAIN_REGISTRY.architectures("detection")
                     if a.detect(state_dict)), "?")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SrqError(f"{ckpt.path}: looks like {arch} but the tensors do not fit it ({first})") from None
    arch = desc.architecture.id
    if arch not in arch_names():
        raise SrqError(f"{ckpt.path}: detected as {arch}, which srq does not support; supported: {supported}")
    if not isinstance(desc, spandrel.ImageModelDescriptor) or desc.purpose != "SR":
        raise SrqError(f"{ckpt.path}: {arch} model for {desc.purpose}, not super-resolution")
    return desc


def _pick_scale(ckpt: Checkpoint, arch: str, module: nn.Module, fixed: int, requested: int | None) -> int:
    scales: tuple[int, ...] = getattr(module, "scales", (fixed,))
    allowed = "/".join(f"x{s}" for s in scales)
    if len(scales) == 1:
        if requested not in (None, scales[0]):
            raise SrqError(f"{ckpt.path}: this {arch} checkpoint is x{scales[0]}; x{requested} was requested")
        return scales[0]
    if requested is not None and requested not in scales:
        raise SrqError(f"{ckpt.path}: {arch} with these weights runs at {allowed}; x{requested} was requested")
    if not getattr(module, "scale_unrecorded", False):  # truly multi-scale (CARN-M)
        if requested is None:
            raise SrqError(f"{ckpt.path}: {arch} is one network for {allowed}: pass the scale to use")
        return requested
    hint = ckpt.scale_hint()
    if hint is not None and requested not in (None, hint):
        raise SrqError(f"{ckpt.path}: the file says x{hint} ({arch} weights do not record their scale); "
                       f"x{requested} was requested")
    if hint is None and requested is None:
        raise SrqError(f"{ckpt.path}: {arch} weights do not record their scale ({allowed}) and the file "
                       "name has no x<N>: pass the scale")
    return requested or hint


def load_model(spec: str | Path, scale: int | None = None) -> SRModel:
    """Load a checkpoint (``.pth``/``.pt``/``.safetensors`` path) or built-in model name.

    ``scale`` is required for multi-scale nets whose file does not say (CARN-M; FSRCNN/PAN
    without ``x<N>`` in the name) and must match fixed-scale checkpoints.
    """
    path, source = _resolve(spec)
    ckpt = read_checkpoint(path)
    desc = _describe(ckpt)
    arch, module = desc.architecture.id, desc.model
    chosen = _pick_scale(ckpt, arch, module, desc.scale, scale)
    if len(getattr(module, "scales", ())) > 1:
        module = module.at_scale(chosen)
    module = module.float().eval()
    multiple = module.window_size if isinstance(module, SwinIR) else desc.size_requirements.multiple_of
    return SRModel(module=module, arch=arch, scale=chosen, in_channels=desc.input_channels,
                   size_multiple=multiple, source=source, fingerprint=state_dict_fingerprint(module))
