"""How an image plane is cut into overlapping tiles, and how the tiles' outputs are blended.

Each axis gets as few tiles as the overlap allows, spread evenly, each a multiple of the
network's size step; where tiles overlap, linear cross-fades that sum to one blend them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .config import PredictConfig


@dataclass(frozen=True)
class AxisTiling:
    """Tiles along one axis: their common length, start offsets and blending weights."""

    length: int
    padded: int
    tile: int
    starts: tuple[int, ...]

    def weights(self, index: int) -> np.ndarray:
        """Linear cross-fade where a tile overlaps its neighbours; the fades sum to one."""
        w = np.ones(self.tile, np.float32)
        start = self.starts[index]
        if index > 0:
            overlap = self.starts[index - 1] + self.tile - start
            if overlap > 0:
                w[:overlap] = np.minimum(w[:overlap], (np.arange(overlap) + 0.5) / overlap)
        if index < len(self.starts) - 1:
            overlap = start + self.tile - self.starts[index + 1]
            if overlap > 0:
                ramp = (np.arange(overlap)[::-1] + 0.5) / overlap
                w[self.tile - overlap :] = np.minimum(w[self.tile - overlap :], ramp)
        return w

    def coverage(self) -> np.ndarray:
        total = np.zeros(self.padded, np.float32)
        for i, start in enumerate(self.starts):
            total[start : start + self.tile] += self.weights(i)
        return total

    def normalized_weights(self, index: int) -> np.ndarray:
        """Weights divided by the coverage, so that the blended tiles sum to exactly one."""
        start = self.starts[index]
        weights: np.ndarray = self.weights(index) / self.coverage()[start : start + self.tile]
        return weights


def round_up(value: int, multiple: int) -> int:
    return math.ceil(value / multiple) * multiple


def plan_axis(length: int, tile: int, overlap: int, multiple: int) -> AxisTiling:
    """As few tiles as the overlap allows, spread evenly, each a multiple of ``multiple``."""
    tile = max(multiple, tile // multiple * multiple)
    if length <= tile:
        size = round_up(length, multiple)
        return AxisTiling(length=length, padded=size, tile=size, starts=(0,))
    n = math.ceil((length - 2 * overlap) / (tile - 2 * overlap))
    n = max(n, 2)
    size = min(tile, round_up(math.ceil((length + (n - 1) * 2 * overlap) / n), multiple))
    if size >= length:  # cannot happen with overlap < tile / 2, kept as a guard
        size = round_up(length, multiple)
        return AxisTiling(length=length, padded=size, tile=size, starts=(0,))
    starts = tuple(round(i * (length - size) / (n - 1)) for i in range(n))
    return AxisTiling(length=length, padded=length, tile=size, starts=starts)


@dataclass(frozen=True)
class PlaneTiling:
    y: AxisTiling
    x: AxisTiling

    @property
    def n_tiles(self) -> int:
        return len(self.y.starts) * len(self.x.starts)

    def tiles(self) -> Iterator[tuple[int, int]]:
        for i in range(len(self.y.starts)):
            for j in range(len(self.x.starts)):
                yield i, j


def plan_tiles(plane_shape: tuple[int, int], config: PredictConfig, multiple: int) -> PlaneTiling:
    return PlaneTiling(
        y=plan_axis(plane_shape[0], config.tile_size, config.overlap, multiple),
        x=plan_axis(plane_shape[1], config.tile_size, config.overlap, multiple),
    )
