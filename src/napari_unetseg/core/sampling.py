"""What the training loop learns from: painted planes, patches centred on the paint, augmentation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: At most this many painted pixels per class are kept as patch centres.
MAX_CENTRES_PER_CLASS = 200_000


@dataclass
class TrainingPlane:
    """One 2-D plane (or a 3-D volume): normalised image (C, [Z,] Y, X), class indices, and
    which pixels count where."""

    image: np.ndarray
    classes: np.ndarray
    train_mask: np.ndarray
    validation_mask: np.ndarray


class PatchSampler:
    """Random patches centred near painted pixels, classes drawn evenly, augmented in torch.

    ``patch_size`` is a side (square 2-D patches) or one side per spatial axis, e.g.
    (z, y, x) for volumes.
    """

    def __init__(
        self,
        planes: list[TrainingPlane],
        patch_size: int | tuple[int, ...],
        n_classes: int,
        rng: np.random.Generator,
    ) -> None:
        dims = planes[0].classes.ndim
        sides = (patch_size,) * dims if isinstance(patch_size, int) else tuple(patch_size)
        self.sides = sides
        self.rng = rng
        self.pads = tuple(s // 2 for s in sides)
        spatial_pad = tuple((p, p) for p in self.pads)
        self.images = [np.pad(p.image, ((0, 0), *spatial_pad), mode="reflect") for p in planes]
        self.classes = [np.pad(p.classes, spatial_pad) for p in planes]
        self.masks = [np.pad(p.train_mask, spatial_pad) for p in planes]
        self.centres: list[np.ndarray] = []
        for c in range(n_classes):
            found = [
                np.column_stack([np.full(len(where[0]), i), *where])
                for i, p in enumerate(planes)
                for where in [np.nonzero(p.train_mask & (p.classes == c))]
            ]
            centres = np.concatenate(found) if found else np.empty((0, dims + 1), np.int64)
            if len(centres) > MAX_CENTRES_PER_CLASS:
                centres = centres[rng.choice(len(centres), MAX_CENTRES_PER_CLASS, replace=False)]
            if len(centres):
                self.centres.append(centres)

    @property
    def patch(self) -> int:
        """The in-plane side of the patches."""
        return self.sides[-1]

    def sample(self, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sides = self.sides
        channels = self.images[0].shape[0]
        x = np.empty((batch_size, channels, *sides), np.float32)
        y = np.empty((batch_size, *sides), np.int64)
        m = np.empty((batch_size, *sides), np.float32)
        for b in range(batch_size):
            centres = self.centres[self.rng.integers(len(self.centres))]
            plane, *centre = centres[self.rng.integers(len(centres))]
            image = self.images[plane]
            halves = [side // 2 for side in sides]
            jitters: list[int]
            if len(set(halves)) == 1:  # one draw for all axes, as before volumes existed
                drawn = self.rng.integers(-halves[0] // 2, halves[0] // 2 + 1, size=len(sides))
                jitters = [int(j) for j in drawn]
            else:
                jitters = [int(self.rng.integers(-h // 2, h // 2 + 1)) for h in halves]
            window = []
            for axis, (c, side, pad) in enumerate(zip(centre, sides, self.pads, strict=True)):
                start = c + pad - halves[axis] + jitters[axis]
                start = int(np.clip(start, 0, image.shape[axis + 1] - side))
                window.append(slice(start, start + side))
            x[b] = image[(slice(None), *window)]
            y[b] = self.classes[plane][tuple(window)]
            m[b] = self.masks[plane][tuple(window)]
        return x, y, m


def augment(
    x: torch.Tensor, y: torch.Tensor, m: torch.Tensor, jitter: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random flips, 90 degree turns and intensity scale/shift, the same geometry for all three.

    Patches may be 2-D (N, C, Y, X) or 3-D (N, C, Z, Y, X). Turns stay in the Y-X plane and
    flips keep each axis where it is, so a volume's coarser Z spacing is respected.
    """
    n, dims = x.shape[0], x.ndim - 2
    draws = torch.rand(n, dims + 1, generator=generator)
    for i in range(n):
        axes = [a for a in range(dims) if draws[i, a] < 0.5]  # spatial axes to flip
        if axes:
            x[i] = x[i].flip([a + 1 for a in axes])
            y[i] = y[i].flip(axes)
            m[i] = m[i].flip(axes)
        if draws[i, dims] < 0.5 and x.shape[-1] == x.shape[-2]:
            x[i] = x[i].rot90(1, (dims - 1, dims))
            y[i] = y[i].rot90(1, (dims - 2, dims - 1))
            m[i] = m[i].rot90(1, (dims - 2, dims - 1))
    if jitter > 0:
        shape = (n, x.shape[1]) + (1,) * dims
        scale = 1 + jitter * (2 * torch.rand(shape, generator=generator) - 1)
        shift = jitter * (2 * torch.rand(shape, generator=generator) - 1)
        x = x * scale + shift
    return x, y, m
