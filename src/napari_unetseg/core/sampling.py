"""What the training loop learns from: painted planes, patches centred on the paint, augmentation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: At most this many painted pixels per class are kept as patch centres.
MAX_CENTRES_PER_CLASS = 200_000


@dataclass
class TrainingPlane:
    """One 2-D plane: normalised image (C, Y, X), class indices, and which pixels count where."""

    image: np.ndarray
    classes: np.ndarray
    train_mask: np.ndarray
    validation_mask: np.ndarray


class PatchSampler:
    """Random patches centred near painted pixels, classes drawn evenly, augmented in torch."""

    def __init__(
        self,
        planes: list[TrainingPlane],
        patch_size: int,
        n_classes: int,
        rng: np.random.Generator,
    ) -> None:
        self.patch = patch_size
        self.rng = rng
        pad = patch_size // 2
        self.pad = pad
        self.images = [
            np.pad(p.image, ((0, 0), (pad, pad), (pad, pad)), mode="reflect") for p in planes
        ]
        self.classes = [np.pad(p.classes, pad) for p in planes]
        self.masks = [np.pad(p.train_mask, pad) for p in planes]
        self.centres: list[np.ndarray] = []
        for c in range(n_classes):
            found = [
                np.column_stack([np.full(len(ys), i), ys, xs])
                for i, p in enumerate(planes)
                for ys, xs in [np.nonzero(p.train_mask & (p.classes == c))]
            ]
            centres = np.concatenate(found) if found else np.empty((0, 3), np.int64)
            if len(centres) > MAX_CENTRES_PER_CLASS:
                centres = centres[rng.choice(len(centres), MAX_CENTRES_PER_CLASS, replace=False)]
            if len(centres):
                self.centres.append(centres)

    def sample(self, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p, half = self.patch, self.patch // 2
        channels = self.images[0].shape[0]
        x = np.empty((batch_size, channels, p, p), np.float32)
        y = np.empty((batch_size, p, p), np.int64)
        m = np.empty((batch_size, p, p), np.float32)
        for b in range(batch_size):
            centres = self.centres[self.rng.integers(len(self.centres))]
            plane, cy, cx = centres[self.rng.integers(len(centres))]
            image = self.images[plane]
            jitter = self.rng.integers(-half // 2, half // 2 + 1, size=2)
            top = int(np.clip(cy + self.pad - half + jitter[0], 0, image.shape[1] - p))
            left = int(np.clip(cx + self.pad - half + jitter[1], 0, image.shape[2] - p))
            window = (slice(top, top + p), slice(left, left + p))
            x[b] = image[(slice(None), *window)]
            y[b] = self.classes[plane][window]
            m[b] = self.masks[plane][window]
        return x, y, m


def augment(
    x: torch.Tensor, y: torch.Tensor, m: torch.Tensor, jitter: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random flips, 90 degree turns and intensity scale/shift, the same geometry for all three."""
    n = x.shape[0]
    draws = torch.rand(n, 3, generator=generator)
    for i in range(n):
        dims_x, dims_y = [], []
        if draws[i, 0] < 0.5:
            dims_x.append(2)
            dims_y.append(1)
        if draws[i, 1] < 0.5:
            dims_x.append(3)
            dims_y.append(2)
        if dims_x:
            x[i] = x[i].flip([d - 1 for d in dims_x])
            y[i] = y[i].flip([d - 1 for d in dims_y])
            m[i] = m[i].flip([d - 1 for d in dims_y])
        if draws[i, 2] < 0.5:
            x[i] = x[i].rot90(1, (1, 2))
            y[i] = y[i].rot90(1, (0, 1))
            m[i] = m[i].rot90(1, (0, 1))
    if jitter > 0:
        scale = 1 + jitter * (2 * torch.rand(n, x.shape[1], 1, 1, generator=generator) - 1)
        shift = jitter * (2 * torch.rand(n, x.shape[1], 1, 1, generator=generator) - 1)
        x = x * scale + shift
    return x, y, m
