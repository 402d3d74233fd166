"""FSRCNN (Dong et al., ECCV 2016): fast SRCNN on the Y channel, key layout of yjn870/FSRCNN-pytorch.

Input/output ``(N, 1, H, W)`` luma (BT.601 Y / 255, about [16/255, 235/255]). The scale is only
the stride of the final 9x9 transposed conv, so the weights do not record it: every FSRCNN is a
multi-scale net here and ``at_scale(s)`` sets the stride (the x2/x3/x4 releases differ in weights).
"""

from __future__ import annotations

import torch
from spandrel import Architecture, ImageModelDescriptor, StateDict
from spandrel.util import KeyCondition, get_seq_len
from torch import nn

from srq.zoo.archs.common import scaled_copy, sr_descriptor


class FSRCNN(nn.Module):
    scales = (2, 3, 4)
    scale_unrecorded = True  # the weights fit every stride: the file name or caller gives the scale

    def __init__(self, channels: int = 1, d: int = 56, s: int = 12, m: int = 4, scale: int = 2):
        super().__init__()
        self.scale = scale
        self.first_part = nn.Sequential(nn.Conv2d(channels, d, 5, padding=2), nn.PReLU(d))
        mid: list[nn.Module] = [nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            mid += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        mid += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.mid_part = nn.Sequential(*mid)
        self.last_part = nn.ConvTranspose2d(d, channels, 9, stride=scale, padding=4, output_padding=scale - 1)

    def at_scale(self, scale: int) -> FSRCNN:
        net = scaled_copy(self, scale)
        net.last_part.stride = (scale, scale)
        net.last_part.output_padding = (scale - 1, scale - 1)
        return net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_part(self.mid_part(self.first_part(x)))


class FSRCNNArch(Architecture[FSRCNN]):
    def __init__(self) -> None:
        super().__init__(
            id="FSRCNN",
            detect=KeyCondition.has_all(
                "first_part.0.weight", "first_part.1.weight", "mid_part.0.weight", "mid_part.1.weight",
                "last_part.weight", "last_part.bias",
            ),
        )

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[FSRCNN]:
        d, channels = state_dict["first_part.0.weight"].shape[:2]
        s = state_dict["mid_part.0.weight"].shape[0]
        m = (get_seq_len(state_dict, "mid_part") - 4) // 2
        model = FSRCNN(channels=channels, d=d, s=s, m=m)
        return sr_descriptor(self, model, state_dict, scale=model.scale, channels=channels,
                             tags=[f"d{d}", f"s{s}", f"m{m}"])
