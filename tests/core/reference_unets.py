"""Independent re-implementations of the original Pytorch-UNet modules, used as references.

Two generations of that project are reproduced here, with their exact module names so that
their ``state_dict`` keys are the ones found in files in the wild:

- ``SeedUNet``: the layout printed in the seed document (conv bias on, the middle width of
  every double conv equal to its output width, ``down4`` keeping 512 channels; the seed's
  transposed variant is included for completeness);
- ``NewUNet``: the later layout (conv bias off, ``factor = 2 if bilinear else 1``,
  ``down4 = Down(512, 1024 // factor)``; bilinear ``Up`` narrows to ``in // 2`` in the middle
  of its double conv, transposed ``Up`` halves the channels in the transposed conv).

Nothing here imports napari_unetseg: these are the references our loader is checked against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DoubleConv(nn.Module):
    def __init__(self, n_in: int, n_out: int, n_mid: int | None = None, bias: bool = True) -> None:
        super().__init__()
        n_mid = n_out if n_mid is None else n_mid
        self.double_conv = nn.Sequential(
            nn.Conv2d(n_in, n_mid, kernel_size=3, padding=1, bias=bias),
            nn.BatchNorm2d(n_mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(n_mid, n_out, kernel_size=3, padding=1, bias=bias),
            nn.BatchNorm2d(n_out),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class Down(nn.Module):
    def __init__(self, n_in: int, n_out: int, bias: bool = True) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(n_in, n_out, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """``style`` picks the generation: "seed" or "new"."""

    def __init__(self, n_in: int, n_out: int, bilinear: bool, style: str) -> None:
        super().__init__()
        self.up: nn.Module
        if style == "seed":
            if bilinear:
                self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            else:
                self.up = nn.ConvTranspose2d(n_in // 2, n_in // 2, kernel_size=2, stride=2)
            self.conv = DoubleConv(n_in, n_out, bias=True)
        elif bilinear:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            self.conv = DoubleConv(n_in, n_out, n_in // 2, bias=False)
        else:
            self.up = nn.ConvTranspose2d(n_in, n_in // 2, kernel_size=2, stride=2)
            self.conv = DoubleConv(n_in, n_out, bias=False)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        deep = self.up(deep)
        dy = skip.size(2) - deep.size(2)
        dx = skip.size(3) - deep.size(3)
        deep = F.pad(deep, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, deep], dim=1))


class OutConv(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(n_in, n_out, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _ReferenceUNet(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        x = self.up1(x5, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return self.outc(x)


class SeedUNet(_ReferenceUNet):
    """The seed document's ``UNet(n_channels, n_classes, bilinear=True)``.

    ``w=64`` is the original; a smaller ``w`` scales every width alike (same keys, same
    shape relations) so that tests can run many layouts quickly.
    """

    def __init__(self, n_channels: int, n_classes: int, bilinear: bool = True, w: int = 64) -> None:
        super().__init__()
        self.n_channels, self.n_classes, self.bilinear = n_channels, n_classes, bilinear
        self.inc = DoubleConv(n_channels, w)
        self.down1 = Down(w, 2 * w)
        self.down2 = Down(2 * w, 4 * w)
        self.down3 = Down(4 * w, 8 * w)
        self.down4 = Down(8 * w, 8 * w)
        self.up1 = Up(16 * w, 4 * w, bilinear, "seed")
        self.up2 = Up(8 * w, 2 * w, bilinear, "seed")
        self.up3 = Up(4 * w, w, bilinear, "seed")
        self.up4 = Up(2 * w, w, bilinear, "seed")
        self.outc = OutConv(w, n_classes)


class NewUNet(_ReferenceUNet):
    """The later Pytorch-UNet ``UNet(n_channels, n_classes, bilinear=False)``; ``w`` as above."""

    def __init__(
        self, n_channels: int, n_classes: int, bilinear: bool = False, w: int = 64
    ) -> None:
        super().__init__()
        self.n_channels, self.n_classes, self.bilinear = n_channels, n_classes, bilinear
        factor = 2 if bilinear else 1
        self.inc = DoubleConv(n_channels, w, bias=False)
        self.down1 = Down(w, 2 * w, bias=False)
        self.down2 = Down(2 * w, 4 * w, bias=False)
        self.down3 = Down(4 * w, 8 * w, bias=False)
        self.down4 = Down(8 * w, 16 * w // factor, bias=False)
        self.up1 = Up(16 * w, 8 * w // factor, bilinear, "new")
        self.up2 = Up(8 * w, 4 * w // factor, bilinear, "new")
        self.up3 = Up(4 * w, 2 * w // factor, bilinear, "new")
        self.up4 = Up(2 * w, w, bilinear, "new")
        self.outc = OutConv(w, n_classes)


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random batch-norm statistics and affine terms, so that eval mode is not the identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.BatchNorm2d):
                n = sub.num_features
                sub.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                sub.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                sub.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                sub.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return module.eval()
