"""RFDN (Liu et al., AIM 2020 efficient-SR winner): residual feature distillation network, key layout of njulj/RFDN.

Input/output ``(N, C, H, W)`` in [0, 1]. The released ``RFDN_AIM.pth`` was trained on [0, 255]
pixels (the repository's ``uint2tensor4`` divides by 1.0 and ``tensor2uint`` clamps to 255; on
[0, 1] input it scores below bicubic), so the net scales by ``rgb_range`` = 255 in and out. The ESA attention strides and max-pools its input
(3x3/2 conv then 7x7/3 pool), so H and W must be at least 15.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from spandrel import Architecture, ImageModelDescriptor, StateDict
from spandrel.util import KeyCondition
from torch import nn

from srq.zoo.archs.common import count_numbered, sr_descriptor

MIN_SIZE = 15


class ESA(nn.Module):
    """Enhanced spatial attention: strided, pooled low-resolution branch -> bilinear up -> sigmoid gate."""

    def __init__(self, nf: int):
        super().__init__()
        f = nf // 4
        self.conv1 = nn.Conv2d(nf, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv_max = nn.Conv2d(f, f, 3, padding=1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv3_ = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, nf, 1)
        self.sigmoid = nn.Sigmoid()  # a module, so that calibration can swap it (srq.calib.layers.TableSigmoid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        pooled = F.max_pool2d(self.conv2(c1_), kernel_size=7, stride=3)
        c3 = F.relu(self.conv3(F.relu(self.conv_max(pooled))))
        c3 = F.interpolate(self.conv3_(c3), size=x.shape[2:], mode="bilinear", align_corners=False)
        return x * self.sigmoid(self.conv4(c3 + self.conv_f(c1_)))


class RFDB(nn.Module):
    """Residual feature distillation block: 1x1 distillation taps beside 3x3 residual steps, then ESA."""

    def __init__(self, nf: int):
        super().__init__()
        dc = nf // 2
        self.c1_d = nn.Conv2d(nf, dc, 1)
        self.c1_r = nn.Conv2d(nf, nf, 3, padding=1)
        self.c2_d = nn.Conv2d(nf, dc, 1)
        self.c2_r = nn.Conv2d(nf, nf, 3, padding=1)
        self.c3_d = nn.Conv2d(nf, dc, 1)
        self.c3_r = nn.Conv2d(nf, nf, 3, padding=1)
        self.c4 = nn.Conv2d(nf, dc, 3, padding=1)
        self.act = nn.LeakyReLU(0.05, inplace=True)
        self.c5 = nn.Conv2d(dc * 4, nf, 1)
        self.esa = ESA(nf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.act(self.c1_d(x))
        r1 = self.act(self.c1_r(x) + x)
        d2 = self.act(self.c2_d(r1))
        r2 = self.act(self.c2_r(r1) + r1)
        d3 = self.act(self.c3_d(r2))
        r3 = self.act(self.c3_r(r2) + r2)
        r4 = self.act(self.c4(r3))
        return self.esa(self.c5(torch.cat([d1, d2, d3, r4], dim=1)))


class RFDN(nn.Module):
    def __init__(self, in_nc: int = 3, nf: int = 50, num_modules: int = 4, out_nc: int = 3, scale: int = 4,
                 rgb_range: float = 255.0):
        super().__init__()
        self.rgb_range = rgb_range
        self.num_modules = num_modules
        self.fea_conv = nn.Conv2d(in_nc, nf, 3, padding=1)
        for i in range(1, num_modules + 1):
            self.add_module(f"B{i}", RFDB(nf))
        self.c = nn.Sequential(nn.Conv2d(nf * num_modules, nf, 1), nn.LeakyReLU(0.05, inplace=True))
        self.LR_conv = nn.Conv2d(nf, nf, 3, padding=1)
        self.upsampler = nn.Sequential(nn.Conv2d(nf, out_nc * scale**2, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.fea_conv(x * self.rgb_range)
        outs, out = [], fea
        for i in range(1, self.num_modules + 1):
            out = getattr(self, f"B{i}")(out)
            outs.append(out)
        lr = self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea
        return self.upsampler(lr) / self.rgb_range


class RFDNArch(Architecture[RFDN]):
    def __init__(self) -> None:
        super().__init__(
            id="RFDN",
            detect=KeyCondition.has_all(
                "fea_conv.weight", "B1.c1_d.weight", "B1.c1_r.weight", "B1.esa.conv1.weight",
                "c.0.weight", "LR_conv.weight", "upsampler.0.weight",
            ),
        )

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[RFDN]:
        nf, in_nc = state_dict["fea_conv.weight"].shape[:2]
        num_modules = count_numbered(state_dict, "B")
        scale = math.isqrt(state_dict["upsampler.0.weight"].shape[0] // in_nc)
        model = RFDN(in_nc=in_nc, nf=nf, num_modules=num_modules, out_nc=in_nc, scale=scale)
        return sr_descriptor(self, model, state_dict, scale=scale, channels=in_nc,
                             tags=[f"{nf}nf", f"{num_modules}m"], min_size=MIN_SIZE)
