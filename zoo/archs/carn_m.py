"""CARN-M (Ahn et al., ECCV 2018): mobile cascading residual network, key layout of nmhkahn/CARN-pytorch.

Input/output ``(N, 3, H, W)`` RGB in [0, 1]. The released ``carn_m.pth`` is ONE multi-scale net:
a shared body and three upsampling branches ``upsample.up2/up3/up4``; ``at_scale(s)`` returns a
copy whose ``forward(x)`` runs branch ``s``. Inside a ``Block`` the same efficient residual block
``b1`` is applied three times (weight sharing, as in the original).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from spandrel import Architecture, ImageModelDescriptor, StateDict
from spandrel.util import KeyCondition
from torch import nn

from srq.zoo.archs.common import scaled_copy, sr_descriptor

RGB_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Module):
    """Frozen 1x1 conv adding (``sign=+1``) or subtracting (``sign=-1``) the DIV2K RGB mean."""

    def __init__(self, sign: int):
        super().__init__()
        self.shifter = nn.Conv2d(3, 3, 1)
        self.shifter.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.shifter.bias.data = sign * torch.tensor(RGB_MEAN)
        self.shifter.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shifter(x)


class ConvReLU(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class EResidualBlock(nn.Module):
    """Grouped 3x3 -> ReLU -> grouped 3x3 -> ReLU -> 1x1, residual, ReLU."""

    def __init__(self, nf: int, group: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(nf, nf, 3, padding=1, groups=group), nn.ReLU(inplace=True),
            nn.Conv2d(nf, nf, 3, padding=1, groups=group), nn.ReLU(inplace=True),
            nn.Conv2d(nf, nf, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + x)


class Cascade(nn.Module):
    """Cascading connections: unit i sees the concatenation of the input and all earlier outputs,
    squeezed back to ``nf`` channels by 1x1 ``c{i}``. ``units[i]`` may repeat one module (CARN-M)."""

    def __init__(self, nf: int):
        super().__init__()
        self.c1 = ConvReLU(nf * 2, nf, 1)
        self.c2 = ConvReLU(nf * 3, nf, 1)
        self.c3 = ConvReLU(nf * 4, nf, 1)

    def cascade(self, x: torch.Tensor, units: tuple[nn.Module, nn.Module, nn.Module]) -> torch.Tensor:
        cat, out = x, x
        for unit, squeeze in zip(units, (self.c1, self.c2, self.c3)):
            cat = torch.cat([cat, unit(out)], dim=1)
            out = squeeze(cat)
        return out


class Block(Cascade):
    def __init__(self, nf: int, group: int):
        super().__init__(nf)
        self.b1 = EResidualBlock(nf, group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cascade(x, (self.b1, self.b1, self.b1))


class UpsampleBranch(nn.Module):
    """Grouped conv to ``r*r*nf`` channels -> ReLU -> PixelShuffle(r); r = 2 twice for x4."""

    def __init__(self, nf: int, scale: int, group: int):
        super().__init__()
        steps = [3] if scale == 3 else [2] * int(math.log2(scale))
        layers: list[nn.Module] = []
        for r in steps:
            layers += [nn.Conv2d(nf, r * r * nf, 3, padding=1, groups=group), nn.ReLU(inplace=True),
                       nn.PixelShuffle(r)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class CARNM(Cascade):
    def __init__(self, nf: int = 64, group: int = 4, scales: tuple[int, ...] = (2, 3, 4)):
        super().__init__(nf)
        self.scales = scales
        self.scale = scales[0]
        self.sub_mean = MeanShift(-1)
        self.add_mean = MeanShift(+1)
        self.entry = nn.Conv2d(3, nf, 3, padding=1)
        self.b1 = Block(nf, group)
        self.b2 = Block(nf, group)
        self.b3 = Block(nf, group)
        self.upsample = nn.Module()
        for s in scales:
            self.upsample.add_module(f"up{s}", UpsampleBranch(nf, s, group))
        self.exit = nn.Conv2d(nf, 3, 3, padding=1)

    def at_scale(self, scale: int) -> CARNM:
        return scaled_copy(self, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.entry(self.sub_mean(x))
        out = self.cascade(x, (self.b1, self.b2, self.b3))
        out = getattr(self.upsample, f"up{self.scale}")(out)
        return self.add_mean(self.exit(out))


class CARNMArch(Architecture[CARNM]):
    def __init__(self) -> None:
        super().__init__(
            id="CARN-M",
            detect=KeyCondition.has_all(
                "sub_mean.shifter.weight", "add_mean.shifter.weight", "entry.weight",
                "b1.b1.body.0.weight", "b1.c1.body.0.weight", "c1.body.0.weight", "exit.weight",
                KeyCondition.has_any("upsample.up2.body.0.weight", "upsample.up3.body.0.weight",
                                     "upsample.up4.body.0.weight"),
            ),
        )

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[CARNM]:
        nf = state_dict["entry.weight"].shape[0]
        group = nf // state_dict["b1.b1.body.0.weight"].shape[1]
        scales = tuple(s for s in (2, 3, 4) if f"upsample.up{s}.body.0.weight" in state_dict)
        model = CARNM(nf=nf, group=group, scales=scales)
        return sr_descriptor(self, model, state_dict, scale=scales[0], channels=3,
                             tags=[f"{nf}nf", f"g{group}", "x" + "/".join(map(str, scales))])
