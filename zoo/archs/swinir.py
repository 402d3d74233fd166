"""SwinIR (Liang et al., ICCVW 2021): network and detection come from spandrel; this file adds two repairs.

1. ``complete_buffers``: checkpoints saved without the non-learned buffers
   ``attn.relative_position_index`` / ``attn_mask`` (spandrel's detection and its strict
   ``load_state_dict`` need them) get them recomputed by spandrel's own ``SwinTransformerBlock``.
2. ``swinir_light``: the official SwinIR-light configuration (randomly initialised), for training.
3. ``at_input_size``: a SwinIR block uses its stored ``attn_mask`` when the input matches
   ``input_resolution`` and recomputes the mask in the graph otherwise; for a fixed-size export
   the stored masks are rebuilt for that size, so the exported graph carries the right constant.
"""

from __future__ import annotations

import copy
import math

import torch
from spandrel.architectures.SwinIR import SwinIR
from spandrel.architectures.SwinIR.__arch.SwinIR import SwinTransformerBlock

_BLOCK0 = "layers.0.residual_group.blocks.0."
# spandrel's SwinIR loader assumes a 64x64 training patch when no attn_mask tells otherwise.
_DEFAULT_IMG_SIZE = 64


def swinir_light(scale: int) -> SwinIR:
    """SwinIR-light as released (embed 60, depths 6x4, heads 6x4, window 8, mlp 2, pixelshuffledirect)."""
    return SwinIR(upscale=scale, in_chans=3, img_size=64, window_size=8, img_range=1.0, depths=[6, 6, 6, 6],
                  embed_dim=60, num_heads=[6, 6, 6, 6], mlp_ratio=2.0, upsampler="pixelshuffledirect",
                  resi_connection="1conv")


def _looks_like_swinir(state_dict: dict) -> bool:
    return (
        f"{_BLOCK0}norm1.weight" in state_dict
        and f"{_BLOCK0}attn.relative_position_bias_table" in state_dict
        and f"{_BLOCK0}mlp.fc1.bias" in state_dict
        and ("conv_first.weight" in state_dict or "conv_first.1.weight" in state_dict)
    )


def _reference_block(window: int, shift: int, size: int) -> SwinTransformerBlock:
    return SwinTransformerBlock(dim=1, input_resolution=(size, size), num_heads=1,
                                window_size=window, shift_size=shift, mlp_ratio=1.0)


def complete_buffers(state_dict: dict) -> dict:
    """Return ``state_dict`` with missing SwinIR index/mask buffers added (unchanged if not SwinIR)."""
    if not _looks_like_swinir(state_dict):
        return state_dict
    out = dict(state_dict)
    suffix = "attn.relative_position_bias_table"
    for key in [k for k in state_dict if k.startswith("layers.") and k.endswith(suffix)]:
        prefix = key[: -len(suffix)]  # layers.{i}.residual_group.blocks.{j}.
        window = (math.isqrt(state_dict[key].shape[0]) + 1) // 2
        if prefix + "attn.relative_position_index" not in out:
            block = _reference_block(window, 0, _DEFAULT_IMG_SIZE)
            out[prefix + "attn.relative_position_index"] = block.attn.relative_position_index
        odd_block = int(prefix.rstrip(".").rsplit(".", 1)[1]) % 2 == 1
        if odd_block and _DEFAULT_IMG_SIZE > window and prefix + "attn_mask" not in out:
            out[prefix + "attn_mask"] = _reference_block(window, window // 2, _DEFAULT_IMG_SIZE).attn_mask
    return out


def at_input_size(model: SwinIR, hw: tuple[int, int]) -> SwinIR:
    """A copy of ``model`` whose stored resolutions and attention masks are those of an (H, W) input."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if hasattr(module, "input_resolution"):
            module.input_resolution = tuple(hw)
        if isinstance(module, SwinTransformerBlock) and module.shift_size > 0:
            module.attn_mask = module.calculate_mask(tuple(hw)).to(torch.float32)
    return model
