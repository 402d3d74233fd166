"""IMDN (Hui et al., ACM MM 2019): information multi-distillation network, key layout of Zheng222/IMDN.

Input/output ``(N, C, H, W)`` in [0, 1]; ``upsampler`` = conv + PixelShuffle(scale).
"""

from __future__ import annotations

import math

import torch
from spandrel import Architecture, ImageModelDescriptor, StateDict
from spandrel.util import KeyCondition
from torch import nn

from srq.zoo.archs.common import ChannelContrast, Concat, Gate, Residual, count_numbered, sr_descriptor


class ContrastChannelAttention(nn.Module):
    """CCA: channel gate from the per-channel contrast (std + mean) -> 1x1 squeeze -> 1x1 excite -> sigmoid."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.contrast = ChannelContrast()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1), nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1), nn.Sigmoid(),
        )
        self.gate = Gate()  # read by the block's c5 alone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(x, self.conv_du(self.contrast(x)))


class IMDModule(nn.Module):
    """Information multi-distillation block: three 3x3 steps each keep 1/4 of the channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.distilled = channels // 4
        self.remaining = channels - self.distilled
        self.c1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.c2 = nn.Conv2d(self.remaining, channels, 3, padding=1)
        self.c3 = nn.Conv2d(self.remaining, channels, 3, padding=1)
        self.c4 = nn.Conv2d(self.remaining, self.distilled, 3, padding=1)
        # one module per call, so that calibration can give each output its own grid (integer_activations)
        self.act1, self.act2, self.act3 = (nn.LeakyReLU(0.05, inplace=True) for _ in range(3))
        self.concat = Concat()
        self.c5 = nn.Conv2d(self.distilled * 4, channels, 1)
        self.cca = ContrastChannelAttention(self.distilled * 4)
        self.residual = Residual()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        split = (self.distilled, self.remaining)
        d1, r1 = torch.split(self.act1(self.c1(x)), split, dim=1)
        d2, r2 = torch.split(self.act2(self.c2(r1)), split, dim=1)
        d3, r3 = torch.split(self.act3(self.c3(r2)), split, dim=1)
        out = self.concat(d1, d2, d3, self.c4(r3))
        return self.residual(self.c5(self.cca(out)), x)


class IMDN(nn.Module):
    def __init__(self, in_nc: int = 3, nf: int = 64, num_modules: int = 6, out_nc: int = 3, scale: int = 4):
        super().__init__()
        self.num_modules = num_modules
        self.fea_conv = nn.Conv2d(in_nc, nf, 3, padding=1)
        for i in range(1, num_modules + 1):
            self.add_module(f"IMDB{i}", IMDModule(nf))
        self.c = nn.Sequential(nn.Conv2d(nf * num_modules, nf, 1), nn.LeakyReLU(0.05, inplace=True))
        self.LR_conv = nn.Conv2d(nf, nf, 3, padding=1)
        self.upsampler = nn.Sequential(nn.Conv2d(nf, out_nc * scale**2, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.fea_conv(x)
        outs, out = [], fea
        for i in range(1, self.num_modules + 1):
            out = getattr(self, f"IMDB{i}")(out)
            outs.append(out)
        lr = self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea
        return self.upsampler(lr)


class IMDNArch(Architecture[IMDN]):
    def __init__(self) -> None:
        super().__init__(
            id="IMDN",
            detect=KeyCondition.has_all(
                "fea_conv.weight", "IMDB1.c1.weight", "IMDB1.c5.weight", "IMDB1.cca.conv_du.0.weight",
                "c.0.weight", "LR_conv.weight", "upsampler.0.weight",
            ),
        )

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[IMDN]:
        nf, in_nc = state_dict["fea_conv.weight"].shape[:2]
        num_modules = count_numbered(state_dict, "IMDB")
        scale = math.isqrt(state_dict["upsampler.0.weight"].shape[0] // in_nc)
        model = IMDN(in_nc=in_nc, nf=nf, num_modules=num_modules, out_nc=in_nc, scale=scale)
        return sr_descriptor(self, model, state_dict, scale=scale, channels=in_nc,
                             tags=[f"{nf}nf", f"{num_modules}m"])
