"""EDSR and EDSR-baseline (Lim et al., CVPRW 2017), key layout of sanghyun-son/EDSR-PyTorch.

Input/output ``(N, C, H, W)`` in [0, 1]. The official models work on [0, ``rgb_range``] (255 for
the released weights); ``rgb_range`` is read back from the frozen ``sub_mean`` conv
(bias = -rgb_range * mean / std) and the wrapper scales in and out so every srq net sees [0, 1].
``res_scale`` is not stored in the weights: 0.1 for the 256-feature EDSR, 1 otherwise (the
official training configurations).
"""

from __future__ import annotations

import torch
from spandrel import Architecture, ImageModelDescriptor, StateDict
from spandrel.util import KeyCondition, get_seq_len
from torch import nn

from srq.zoo.archs.common import sr_descriptor

RGB_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Conv2d):
    """Frozen 1x1 conv: ``x + sign * rgb_range * mean`` (std 1)."""

    def __init__(self, rgb_range: float, sign: int):
        super().__init__(3, 3, 1)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.bias.data = sign * rgb_range * torch.tensor(RGB_MEAN)
        self.requires_grad_(False)


class ResBlock(nn.Module):
    def __init__(self, nf: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(nf, nf, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(nf, nf, 3, padding=1))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.body(x)
        if self.res_scale != 1:
            res = res * self.res_scale
        return res + x


def upsampler(nf: int, scale: int) -> nn.Sequential:
    """conv(nf -> r*r*nf) + PixelShuffle(r), r = 3 once or r = 2 log2(scale) times."""
    steps = [3] if scale == 3 else [2] * (scale.bit_length() - 1)
    layers: list[nn.Module] = []
    for r in steps:
        layers += [nn.Conv2d(nf, r * r * nf, 3, padding=1), nn.PixelShuffle(r)]
    return nn.Sequential(*layers)


class EDSR(nn.Module):
    def __init__(self, n_colors: int = 3, n_resblocks: int = 16, n_feats: int = 64, scale: int = 2,
                 res_scale: float = 1.0, rgb_range: float = 255.0):
        super().__init__()
        self.rgb_range = rgb_range
        self.sub_mean = MeanShift(rgb_range, -1)
        self.add_mean = MeanShift(rgb_range, +1)
        self.head = nn.Sequential(nn.Conv2d(n_colors, n_feats, 3, padding=1))
        self.body = nn.Sequential(*(ResBlock(n_feats, res_scale) for _ in range(n_resblocks)),
                                  nn.Conv2d(n_feats, n_feats, 3, padding=1))
        self.tail = nn.Sequential(upsampler(n_feats, scale), nn.Conv2d(n_feats, n_colors, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rgb_range != 1:
            x = x * self.rgb_range
        x = self.head(self.sub_mean(x))
        x = self.add_mean(self.tail(self.body(x) + x))
        if self.rgb_range != 1:
            x = x / self.rgb_range
        return x


class EDSRArch(Architecture[EDSR]):
    def __init__(self) -> None:
        super().__init__(
            id="EDSR",
            detect=KeyCondition.has_all(
                "sub_mean.weight", "sub_mean.bias", "add_mean.weight", "head.0.weight",
                "body.0.body.0.weight", "body.0.body.2.weight", "tail.0.0.weight", "tail.1.weight",
            ),
        )

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[EDSR]:
        n_feats, n_colors = state_dict["head.0.weight"].shape[:2]
        n_resblocks = get_seq_len(state_dict, "body") - 1
        if state_dict["tail.0.0.weight"].shape[0] == 9 * n_feats:
            scale = 3
        else:
            scale = 2 ** sum(f"tail.0.{2 * i}.weight" in state_dict for i in range(3))
        shift_w, shift_b = state_dict["sub_mean.weight"], state_dict["sub_mean.bias"]
        rgb_range = float(round(-shift_b[0].item() / (shift_w[0, 0, 0, 0].item() * RGB_MEAN[0])))
        res_scale = 0.1 if n_feats == 256 else 1.0
        model = EDSR(n_colors=n_colors, n_resblocks=n_resblocks, n_feats=n_feats, scale=scale,
                     res_scale=res_scale, rgb_range=rgb_range)
        variant = "baseline" if (n_resblocks, n_feats) == (16, 64) else "full"
        return sr_descriptor(self, model, state_dict, scale=scale, channels=n_colors,
                             tags=[variant, f"r{n_resblocks}f{n_feats}", f"range{rgb_range:g}"])
