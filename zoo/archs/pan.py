"""PAN (Zhao et al., ECCVW 2020): pixel-attention network, key layout of zhaohengyuan1/PAN.

Input/output ``(N, C, H, W)`` in [0, 1]. The x2 and x3 checkpoints have identical tensor shapes
(the scale only changes the nearest-neighbour upsampling), so a PAN without ``upconv2`` is a
multi-scale net (``scales == (2, 3)``) and its scale comes from the caller.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from spandrel import Architecture, ImageModelDescriptor, StateDict
from spandrel.util import KeyCondition, get_seq_len
from torch import nn

from srq.zoo.archs.common import Gate, NearestUpsample, Residual, scaled_copy, sr_descriptor


class PixelAttention(nn.Module):
    def __init__(self, nf: int):
        super().__init__()
        self.conv = nn.Conv2d(nf, nf, 1)
        self.sigmoid = nn.Sigmoid()  # a module, so that calibration can swap it (srq.calib.layers.TableSigmoid)
        self.gate = Gate(requantized=True)  # a LeakyReLU reads the product

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(x, self.sigmoid(self.conv(x)))


class PAConv(nn.Module):
    """3x3 conv gated by a sigmoid(1x1 conv) attention map, then another 3x3 conv."""

    def __init__(self, nf: int):
        super().__init__()
        self.k2 = nn.Conv2d(nf, nf, 1)
        self.k3 = nn.Conv2d(nf, nf, 3, padding=1, bias=False)
        self.k4 = nn.Conv2d(nf, nf, 3, padding=1, bias=False)
        self.sigmoid = nn.Sigmoid()
        self.gate = Gate()  # k4 alone reads the product

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.k4(self.gate(self.k3(x), self.sigmoid(self.k2(x))))


class SCPA(nn.Module):
    """Self-calibrated block with pixel attention: two half-width branches, 1x1 fuse, residual."""

    def __init__(self, nf: int):
        super().__init__()
        half = nf // 2
        self.conv1_a = nn.Conv2d(nf, half, 1, bias=False)
        self.conv1_b = nn.Conv2d(nf, half, 1, bias=False)
        self.k1 = nn.Sequential(nn.Conv2d(half, half, 3, padding=1, bias=False))
        self.PAConv = PAConv(half)
        self.conv3 = nn.Conv2d(nf, nf, 1, bias=False)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        self.residual = Residual()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.lrelu(self.k1(self.lrelu(self.conv1_a(x))))
        b = self.lrelu(self.PAConv(self.lrelu(self.conv1_b(x))))
        return self.residual(self.conv3(torch.cat([a, b], dim=1)), x)


class PAN(nn.Module):
    def __init__(self, in_nc: int = 3, out_nc: int = 3, nf: int = 40, unf: int = 24, nb: int = 16,
                 scale: int = 4):
        super().__init__()
        self.scale = scale
        self.scales = (4,) if scale == 4 else (2, 3)
        self.scale_unrecorded = scale != 4  # x2 and x3 weights have the same shapes
        self.conv_first = nn.Conv2d(in_nc, nf, 3, padding=1)
        self.SCPA_trunk = nn.Sequential(*(SCPA(nf) for _ in range(nb)))
        self.trunk_conv = nn.Conv2d(nf, nf, 3, padding=1)
        self.upconv1 = nn.Conv2d(nf, unf, 3, padding=1)
        self.att1 = PixelAttention(unf)
        self.HRconv1 = nn.Conv2d(unf, unf, 3, padding=1)
        if scale == 4:
            self.upconv2 = nn.Conv2d(unf, unf, 3, padding=1)
            self.att2 = PixelAttention(unf)
            self.HRconv2 = nn.Conv2d(unf, unf, 3, padding=1)
        self.conv_last = nn.Conv2d(unf, out_nc, 3, padding=1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        self.trunk_residual = Residual()
        self.upsample = NearestUpsample()

    def at_scale(self, scale: int) -> PAN:
        return scaled_copy(self, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.conv_first(x)
        fea = self.trunk_residual(self.trunk_conv(self.SCPA_trunk(fea)), fea)
        stages = [(self.upconv1, self.att1, self.HRconv1)]
        if self.scale == 4:
            stages.append((self.upconv2, self.att2, self.HRconv2))
        step = 2 if self.scale == 4 else self.scale
        for upconv, att, hrconv in stages:
            fea = upconv(self.upsample(fea, step))
            fea = self.lrelu(att(fea))
            fea = self.lrelu(hrconv(fea))
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.conv_last(fea) + base


class PANArch(Architecture[PAN]):
    def __init__(self) -> None:
        super().__init__(
            id="PAN",
            detect=KeyCondition.has_all(
                "conv_first.weight", "SCPA_trunk.0.conv1_a.weight", "SCPA_trunk.0.PAConv.k2.weight",
                "trunk_conv.weight", "upconv1.weight", "att1.conv.weight", "HRconv1.weight",
                "conv_last.weight",
            ),
        )

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[PAN]:
        nf, in_nc = state_dict["conv_first.weight"].shape[:2]
        unf = state_dict["upconv1.weight"].shape[0]
        out_nc = state_dict["conv_last.weight"].shape[0]
        nb = get_seq_len(state_dict, "SCPA_trunk")
        scale = 4 if "upconv2.weight" in state_dict else 2
        model = PAN(in_nc=in_nc, out_nc=out_nc, nf=nf, unf=unf, nb=nb, scale=scale)
        return sr_descriptor(self, model, state_dict, scale=scale, channels=in_nc,
                             tags=[f"{nf}nf", f"{unf}unf", f"{nb}nb"])
