"""Intensity normalisation: statistics from a bounded sample of the image, applied per plane."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import NormalizationConfig
from .errors import InputError
from .layout import STACK_LETTERS, ImageLayout

#: At most this many values are read to estimate percentiles, whatever the image size.
MAX_SAMPLES = 2_000_000
#: Added to the standard deviation of ``zscore`` (bioimage.io's default ``eps``).
ZSCORE_EPS = 1e-6


def check_finite(values: np.ndarray, where: str) -> None:
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise InputError(
            f"{where} contains NaN or infinite values; replace them first, "
            "for example with np.nan_to_num(image)."
        )


def strided_sample(image: Any, layout: ImageLayout) -> np.ndarray:
    """A regular sub-grid of the image with at most about MAX_SAMPLES values, as (C, N)."""
    steps = [1] * len(layout.shape)
    ratio = float(np.prod(layout.shape, dtype=np.int64)) / MAX_SAMPLES
    if ratio > 1:
        y, x = layout.axes.index("Y"), layout.axes.index("X")
        step = min(
            int(np.ceil(np.sqrt(ratio))), max(1, min(layout.shape[y], layout.shape[x]) // 16)
        )
        steps[y] = steps[x] = step
        ratio /= step**2
        for i, letter in enumerate(layout.axes):
            if letter in STACK_LETTERS and ratio > 1:
                steps[i] = min(layout.shape[i], int(np.ceil(ratio)))
                ratio /= steps[i]
    sample = np.asarray(image[tuple(slice(None, None, s) for s in steps)])
    channel = layout.channel_axis
    if channel is None:
        return sample.reshape(1, -1)
    return np.moveaxis(sample, channel, 0).reshape(sample.shape[channel], -1)


@dataclass(frozen=True)
class Normalizer:
    """``(value - offset) * scale`` per channel."""

    offset: np.ndarray
    scale: np.ndarray

    def __call__(self, plane_cyx: np.ndarray) -> np.ndarray:
        out = plane_cyx.astype(np.float32, copy=True)
        out -= self.offset[:, None, None]
        out *= self.scale[:, None, None]
        return out


def fit_normalizer(image: Any, layout: ImageLayout, config: NormalizationConfig) -> Normalizer:
    """Statistics for ``config.method`` over the whole image (all planes), per channel."""
    n = layout.n_channels
    if config.method == "none":
        return Normalizer(np.zeros(n, np.float32), np.ones(n, np.float32))
    sample = strided_sample(image, layout)
    check_finite(sample, "the image")
    if config.method == "classic":
        # Pytorch-UNet's preprocessing: scale to [0, 1] when values exceed 1.
        full_max = float(np.max(image)) if isinstance(image, np.ndarray) else float(sample.max())
        scale = 1.0 / 255.0 if full_max > 1 else 1.0
        return Normalizer(np.zeros(n, np.float32), np.full(n, scale, np.float32))
    if config.method == "zscore":
        values = sample.astype(np.float64, copy=False)
        mean, std = values.mean(axis=1), values.std(axis=1)
        return Normalizer(mean.astype(np.float32), (1.0 / (std + ZSCORE_EPS)).astype(np.float32))
    sample = sample.astype(np.float32, copy=False)
    low, high = np.percentile(sample, [config.low, config.high], axis=1).astype(np.float32)
    spread = high - low
    spread[spread < 1e-6] = 1.0
    return Normalizer(low, (1.0 / spread).astype(np.float32))
