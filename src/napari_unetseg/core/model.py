"""The U-Net, in the module layout of the classic Pytorch-UNet (``inc``, ``down1..``, ``up1..``, ``outc``).

Keeping that layout means the classic project's state dicts load into this module unchanged,
and our own compact models are the same code with narrower blocks. A 3-D U-Net is the same
layout with 3-D convolutions; where Z is coarse its levels pool in Y and X only. A model of
several ``members`` holds that many U-Nets, each from its own first weights, and returns
the mean of their logits (how they are trained: :mod:`.member_runs`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


def _conv(dims: int) -> type[nn.Conv2d] | type[nn.Conv3d]:
    return nn.Conv3d if dims == 3 else nn.Conv2d


class DoubleConv(nn.Module):
    """(3x3 conv, batch norm, ReLU) twice (3x3x3 in 3-D)."""

    def __init__(
        self, in_channels: int, out_channels: int, mid_channels: int, bias: bool, dims: int = 2
    ) -> None:
        super().__init__()
        conv, norm = _conv(dims), nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d
        self.double_conv = nn.Sequential(
            conv(in_channels, mid_channels, kernel_size=3, padding=1, bias=bias),
            norm(mid_channels),
            nn.ReLU(inplace=True),
            conv(mid_channels, out_channels, kernel_size=3, padding=1, bias=bias),
            norm(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.double_conv(x)
        return out


class Down(nn.Module):
    """2x2 max pooling (2x2x2, or 1x2x2 without Z, in 3-D), then a double conv."""

    def __init__(
        self, in_channels: int, out_channels: int, bias: bool, factor: tuple[int, ...] = (2, 2)
    ) -> None:
        super().__init__()
        pool = nn.MaxPool3d(factor) if len(factor) == 3 else nn.MaxPool2d(2)
        self.maxpool_conv = nn.Sequential(
            pool, DoubleConv(in_channels, out_channels, out_channels, bias, len(factor))
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
        factor: tuple[int, ...] = (2, 2),
    ) -> None:
        super().__init__()
        self.skip_channels = skip_channels
        self.up: nn.Module
        dims = len(factor)
        if upsampling == "bilinear":
            mode = "trilinear" if dims == 3 else "bilinear"
            scale = tuple(float(f) for f in factor) if dims == 3 else 2
            self.up = nn.Upsample(scale_factor=scale, mode=mode, align_corners=True)
            up_channels = deep_channels
        else:
            if dims == 3:
                kz = factor[0]
                self.up = nn.ConvTranspose3d(
                    deep_channels, skip_channels, kernel_size=(kz, 2, 2), stride=(kz, 2, 2)
                )
            else:
                self.up = nn.ConvTranspose2d(deep_channels, skip_channels, kernel_size=2, stride=2)
            up_channels = skip_channels
        self.conv = DoubleConv(up_channels + skip_channels, out_channels, mid_channels, bias, dims)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        deep = pad_to_match(self.up(deep), skip)
        out: torch.Tensor = self.conv(torch.cat([skip, deep], dim=1))
        return out


def pad_to_match(deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """The upsampled map, zero-padded to the skip connection's size when that is odd."""
    pads: list[int] = []
    for axis in range(deep.ndim - 1, 1, -1):  # F.pad lists the last axis first
        d = skip.shape[axis] - deep.shape[axis]
        pads += [d // 2, d - d // 2]
    if any(pads):
        deep = F.pad(deep, pads)
    return deep


class OutConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dims: int = 2) -> None:
        super().__init__()
        self.conv = _conv(dims)(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return out


class UNet(nn.Module):
    """A U-Net built from a :class:`ModelConfig`; returns logits of shape (N, n_classes, H, W),
    or (N, n_classes, D, H, W) for a 3-D model (``config.spatial_dims == 3``).

    Input sides should be multiples of ``config.multiples``; other sizes work but are padded
    inside the decoder like the classic implementation does. With ``config.members`` > 1 it
    holds that many U-Nets in ``members`` and returns the mean of their logits.
    """

    def __init__(self, config: ModelConfig, *, member: bool = False) -> None:
        super().__init__()
        self.config = config
        self.members: nn.ModuleList | None = None
        count = 1 if member else int(getattr(config, "members", 1))
        if count > 1:
            self.members = nn.ModuleList(UNet(config, member=True) for _ in range(count))
            return
        enc, dec, mid = (
            config.encoder_channels,
            config.decoder_channels,
            config.decoder_mid_channels,
        )
        bias, dims = config.conv_bias, config.spatial_dims
        factors = pooling_factors(config)
        self.inc = DoubleConv(config.in_channels, enc[0], enc[0], bias, dims)
        for level in range(1, config.depth + 1):
            down = Down(enc[level - 1], enc[level], bias, factors[level - 1])
            setattr(self, f"down{level}", down)
        deep = enc[-1]
        for level in range(1, config.depth + 1):
            skip = enc[config.depth - level]
            factor = factors[config.depth - level]
            up = Up(deep, skip, dec[level - 1], mid[level - 1], config.upsampling, bias, factor)
            setattr(self, f"up{level}", up)
            deep = dec[level - 1]
        self.outc = OutConv(deep, config.n_classes, dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = self.config.spatial_dims
        if x.ndim != dims + 2 or x.shape[1] != self.config.in_channels:
            sides = "D, H, W" if dims == 3 else "H, W"
            raise ValueError(
                f"UNet expects input of shape (N, {self.config.in_channels}, {sides}), "
                f"got {tuple(x.shape)}."
            )
        if self.members is not None:
            return torch.stack([member(x) for member in self.members]).mean(dim=0)
        skips = [self.inc(x)]
        for level in range(1, self.config.depth + 1):
            skips.append(getattr(self, f"down{level}")(skips[-1]))
        out = skips.pop()
        for level in range(1, self.config.depth + 1):
            out = getattr(self, f"up{level}")(out, skips.pop())
        logits: torch.Tensor = self.outc(out)
        return logits


def pooling_factors(config: ModelConfig) -> list[tuple[int, ...]]:
    """Per level, the pooling factor per spatial axis: (2, 2), or (2 or 1, 2, 2) in 3-D."""
    if config.spatial_dims != 3:
        return [(2, 2)] * config.depth
    return [(2 if pool_z else 1, 2, 2) for pool_z in config.z_pooling]


def member_networks(model: nn.Module) -> list[nn.Module]:
    """The networks whose logits ``model`` averages: its members, or ``model`` itself."""
    members = getattr(model, "members", None)
    return list(members) if isinstance(members, nn.ModuleList) else [model]


def member_count(model: nn.Module) -> int:
    """U-Nets in ``model`` whose logits it averages (1 for any plain network)."""
    return len(member_networks(model))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
