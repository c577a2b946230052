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


#: Offsets and scales beyond this magnitude (or scales below its inverse) are applied in
#: float64: in float32 the subtraction or the product would overflow or lose every digit.
FLOAT32_SAFE = 1e30


@dataclass(frozen=True)
class Normalizer:
    """``(value - offset) * scale`` per channel, returned as float32.

    float64 images (and statistics outside float32's comfortable range) are computed in
    float64 and cast at the end, so values near 1e300 are not turned into infinities first.
    """

    offset: np.ndarray
    scale: np.ndarray

    def _needs_float64(self, plane: np.ndarray) -> bool:
        if plane.dtype.kind == "f" and plane.dtype.itemsize >= 8:
            return True
        scale = np.abs(self.scale)
        return bool(
            (np.abs(self.offset) > FLOAT32_SAFE).any()
            or (scale > FLOAT32_SAFE).any()
            or ((scale < 1 / FLOAT32_SAFE) & (scale > 0)).any()
        )

    def __call__(self, plane_cyx: np.ndarray) -> np.ndarray:
        if self._needs_float64(plane_cyx):
            wide = plane_cyx.astype(np.float64, copy=True)
            wide -= np.asarray(self.offset, np.float64)[:, None, None]
            wide *= np.asarray(self.scale, np.float64)[:, None, None]
            with np.errstate(over="ignore"):
                out = wide.astype(np.float32)
            if not np.isfinite(out).all():
                raise InputError(
                    "the image's values are too large for the network even after normalisation "
                    "(beyond float32's 3.4e38); use percentile normalisation, or rescale the "
                    "image first."
                )
            return out
        out = plane_cyx.astype(np.float32, copy=True)
        out -= np.asarray(self.offset, np.float32)[:, None, None]
        out *= np.asarray(self.scale, np.float32)[:, None, None]
        return out


def percentile_range(sample: np.ndarray, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel offset and scale mapping the ``low``/``high`` percentiles of ``sample`` to 0/1.

    Computed in float64 for float64 data. A channel counts as constant only when its spread is
    below what the arithmetic can resolve at that magnitude; tiny but real spreads (an image
    of values around 1e-9) are scaled up like any other.
    """
    wide = sample.dtype == np.float64
    dtype = np.float64 if wide else np.float32
    lows, highs = np.percentile(sample.astype(dtype, copy=False), [low, high], axis=1).astype(dtype)
    with np.errstate(over="ignore"):
        spread = highs - lows
    if not np.isfinite(spread).all():  # float32 percentiles far apart: subtract in float64
        lows, highs = lows.astype(np.float64), highs.astype(np.float64)
        spread = highs - lows
    magnitude = np.maximum(np.abs(lows), np.abs(highs)).astype(np.float64)
    constant = (spread <= 4 * np.finfo(dtype).eps * magnitude) | (spread <= np.finfo(dtype).tiny)
    safe_spread = np.where(constant, 1.0, spread).astype(spread.dtype)
    with np.errstate(over="ignore"):
        scale = np.where(constant, 1.0, 1.0 / safe_spread).astype(spread.dtype)
    return lows, scale


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
    offset, factor = percentile_range(sample, config.low, config.high)
    return Normalizer(offset, factor)
