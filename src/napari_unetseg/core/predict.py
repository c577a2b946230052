"""Tiled, blended inference over images of any size and layout, and probabilities to labels.

Memory is bounded by the tile batch plus one plane's probabilities, not by the whole image:
planes of a stack are read, normalised and predicted one at a time.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import ModelConfig, PredictConfig
from .errors import InputError
from .layout import ImageLayout
from .normalization import check_finite, fit_normalizer
from .objects import objects_from_probabilities

# --------------------------------------------------------------------------- tiling


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


def round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def plan_axis(length: int, tile: int, overlap: int, multiple: int) -> AxisTiling:
    """As few tiles as the overlap allows, spread evenly, each a multiple of ``multiple``."""
    tile = max(multiple, tile // multiple * multiple)
    if length <= tile:
        size = round_up(length, multiple)
        return AxisTiling(length=length, padded=size, tile=size, starts=(0,))
    n = int(math.ceil((length - 2 * overlap) / (tile - 2 * overlap)))
    n = max(n, 2)
    size = min(tile, round_up(int(math.ceil((length + (n - 1) * 2 * overlap) / n)), multiple))
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


# --------------------------------------------------------------------------- inference


@contextlib.contextmanager
def inference_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd inside; the model's training flag is put back after."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def logits_to_probabilities(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    if logits.shape[1] == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)


@dataclass(frozen=True)
class PredictProgress:
    """Emitted after each batch of tiles."""

    tiles_done: int
    tiles_total: int
    plane: int
    n_planes: int

    @property
    def fraction(self) -> float:
        return self.tiles_done / max(1, self.tiles_total)


def predict_plane_iter(
    model: nn.Module,
    plane: np.ndarray,
    n_outputs: int,
    config: PredictConfig,
    multiple: int,
    device: torch.device,
    dtype: torch.dtype,
) -> Generator[int, None, torch.Tensor]:
    """Probabilities (n_outputs, Y, X) of one normalised (C, Y, X) plane; yields tiles done."""
    _, height, width = plane.shape
    tiling = plan_tiles((height, width), config, multiple)
    pad_y, pad_x = tiling.y.padded - height, tiling.x.padded - width
    if pad_y or pad_x:
        plane = np.pad(plane, ((0, 0), (0, pad_y), (0, pad_x)), mode="reflect")
    total = torch.zeros((n_outputs, tiling.y.padded, tiling.x.padded), dtype=torch.float32)
    wy = [torch.from_numpy(tiling.y.weights(i)) for i in range(len(tiling.y.starts))]
    wx = [torch.from_numpy(tiling.x.weights(j)) for j in range(len(tiling.x.starts))]
    ty, tx = tiling.y.tile, tiling.x.tile
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    use_autocast = dtype != torch.float32
    pin = device.type == "cuda"
    positions = list(tiling.tiles())
    done = 0
    for first in range(0, len(positions), config.batch_size):
        batch = positions[first : first + config.batch_size]
        crops = [
            plane[:, tiling.y.starts[i] : tiling.y.starts[i] + ty, tiling.x.starts[j] : tiling.x.starts[j] + tx]
            for i, j in batch
        ]
        inputs = torch.from_numpy(np.stack(crops))
        if pin:
            inputs = inputs.pin_memory()
        inputs = inputs.to(device, non_blocking=pin).contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=dtype, enabled=use_autocast):
            logits = model(inputs)
        probs = logits_to_probabilities(logits).cpu()
        for k, (i, j) in enumerate(batch):
            y0, x0 = tiling.y.starts[i], tiling.x.starts[j]
            weight = wy[i][:, None] * wx[j][None, :]
            total[:, y0 : y0 + ty, x0 : x0 + tx].addcmul_(probs[k], weight)
        done += len(batch)
        yield done
    coverage = torch.from_numpy(tiling.y.coverage())[:, None] * torch.from_numpy(tiling.x.coverage())[None, :]
    total /= coverage
    return total[:, :height, :width]


# --------------------------------------------------------------------------- labels


def smallest_uint_dtype(max_value: int) -> np.dtype:
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise OverflowError(max_value)  # pragma: no cover


def classes_from_probabilities(probs: np.ndarray) -> np.ndarray:
    """Class index per pixel: argmax, or sigmoid > 0.5 for a single output."""
    if probs.shape[0] == 1:
        return (probs[0] > 0.5).astype(np.uint8)
    return np.argmax(probs, axis=0).astype(smallest_uint_dtype(probs.shape[0] - 1))


@dataclass
class Prediction:
    """What :func:`predict_iter` returns; either part may be None when it was not asked for."""

    probabilities: np.ndarray | None
    labels: np.ndarray | None


def predict_iter(
    model: nn.Module,
    model_config: ModelConfig,
    image: Any,
    layout: ImageLayout,
    config: PredictConfig,
    device: torch.device,
    dtype: torch.dtype,
    want_probabilities: bool = True,
    want_labels: bool = True,
    planes: list[tuple[int, ...]] | None = None,
) -> Generator[PredictProgress, None, Prediction]:
    """Predict every plane (or the given stack indices); yields progress, returns the result.

    Probabilities have shape (n_outputs, *stack, Y, X); labels have the image's shape
    without channels. Object models return instance ids, unique across the whole stack.
    """
    if min(layout.plane_shape) < model_config.min_size:
        raise InputError(
            f"the image planes are {layout.plane_shape[0]}x{layout.plane_shape[1]} px; this model "
            f"(depth {model_config.depth}) needs at least {model_config.min_size} px on each side."
        )
    indices = list(layout.plane_indices()) if planes is None else planes
    n_outputs = model_config.n_classes
    objects = model_config.task == "objects"
    normalizer = fit_normalizer(image, layout, model_config.normalization)
    tiling = plan_tiles(layout.plane_shape, config, model_config.min_size)
    total_tiles = tiling.n_tiles * len(indices)
    probs_out = (
        np.zeros((n_outputs, *layout.output_shape), np.float32) if want_probabilities else None
    )
    labels_out: np.ndarray | None = None
    next_id = 0
    done_before = 0
    with inference_mode(model):
        for number, index in enumerate(indices):
            raw = layout.read_plane(image, index)
            check_finite(raw, f"plane {index}" if index else "the image")
            plane_probs = yield from _with_progress(
                predict_plane_iter(
                    model, normalizer(raw), n_outputs, config, model_config.min_size, device, dtype
                ),
                done_before,
                total_tiles,
                number,
                len(indices),
            )
            done_before += tiling.n_tiles
            plane_np = plane_probs.numpy()
            if probs_out is not None:
                probs_out[(slice(None), *index)] = plane_np
            if not want_labels:
                continue
            if objects:
                ids = objects_from_probabilities(plane_np, config.min_object_size)
                if labels_out is None:
                    labels_out = np.zeros(layout.output_shape, np.uint32)
                labels_out[index] = np.where(ids > 0, ids + next_id, 0)
                next_id += int(ids.max())
            else:
                classes = classes_from_probabilities(plane_np)
                if labels_out is None:
                    labels_out = np.zeros(layout.output_shape, classes.dtype)
                labels_out[index] = classes
    if labels_out is not None and objects:
        labels_out = labels_out.astype(smallest_uint_dtype(next_id), copy=False)
    return Prediction(probabilities=probs_out, labels=labels_out)


def _with_progress(
    tiles: Generator[int, None, torch.Tensor], before: int, total: int, plane: int, n_planes: int
) -> Generator[PredictProgress, None, torch.Tensor]:
    while True:
        try:
            done = next(tiles)
        except StopIteration as finished:
            result: torch.Tensor = finished.value
            return result
        yield PredictProgress(before + done, total, plane, n_planes)
