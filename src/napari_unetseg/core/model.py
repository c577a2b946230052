"""The U-Net, in the module layout of the classic Pytorch-UNet (``inc``, ``down1..``, ``up1..``, ``outc``).

Keeping that layout means the classic project's state dicts load into this module unchanged,
and our own compact models are the same code with narrower blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


class DoubleConv(nn.Module):
    """(3x3 conv, batch norm, ReLU) twice."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int, bias: bool) -> None:
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1, bias=bias),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=bias),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.double_conv(x)
        return out


class Down(nn.Module):
    """2x2 max pooling, then a double conv."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(
            nn.MaxPool2d(2), DoubleConv(in_channels, out_channels, out_channels, bias)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.maxpool_conv(x)
        return out


class Up(nn.Module):
    """Upsample the deeper map, concatenate the skip connection, double conv."""

    def __init__(
        self,
        deep_channels: int,
        skip_channels: int,
        out_channels: int,
        mid_channels: int,
        upsampling: str,
        bias: bool,
    ) -> None:
        super().__init__()
        self.skip_channels = skip_channels
        self.up: nn.Module
        if upsampling == "bilinear":
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            up_channels = deep_channels
        else:
            self.up = nn.ConvTranspose2d(deep_channels, skip_channels, kernel_size=2, stride=2)
            up_channels = skip_channels
        self.conv = DoubleConv(up_channels + skip_channels, out_channels, mid_channels, bias)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        deep = pad_to_match(self.up(deep), skip)
        out: torch.Tensor = self.conv(torch.cat([skip, deep], dim=1))
        return out


def pad_to_match(deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """The upsampled map, zero-padded to the skip connection's size when that is odd."""
    dy = skip.shape[-2] - deep.shape[-2]
    dx = skip.shape[-1] - deep.shape[-1]
    if dy or dx:
        deep = F.pad(deep, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
    return deep


class OutConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return out


class UNet(nn.Module):
    """A 2-D U-Net built from a :class:`ModelConfig`; returns logits of shape (N, n_classes, H, W).

    Input height and width should be multiples of ``config.min_size``; other sizes work but
    are padded inside the decoder like the classic implementation does.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        enc, dec, mid = (
            config.encoder_channels,
            config.decoder_channels,
            config.decoder_mid_channels,
        )
        bias = config.conv_bias
        self.inc = DoubleConv(config.in_channels, enc[0], enc[0], bias)
        for level in range(1, config.depth + 1):
            setattr(self, f"down{level}", Down(enc[level - 1], enc[level], bias))
        deep = enc[-1]
        for level in range(1, config.depth + 1):
            skip = enc[config.depth - level]
            up = Up(deep, skip, dec[level - 1], mid[level - 1], config.upsampling, bias)
            setattr(self, f"up{level}", up)
            deep = dec[level - 1]
        self.outc = OutConv(deep, config.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"UNet expects input of shape (N, {self.config.in_channels}, H, W), "
                f"got {tuple(x.shape)}."
            )
        skips = [self.inc(x)]
        for level in range(1, self.config.depth + 1):
            skips.append(getattr(self, f"down{level}")(skips[-1]))
        out = skips.pop()
        for level in range(1, self.config.depth + 1):
            out = getattr(self, f"up{level}")(out, skips.pop())
        logits: torch.Tensor = self.outc(out)
        return logits


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
