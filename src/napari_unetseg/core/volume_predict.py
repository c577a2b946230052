"""Tiled prediction of a 3-D model over stacks of any size, and 3-D objects.

Prediction reads one tile at a time, so memory follows the tile, not the stack. Tiles
overlap in every axis. In Y and X their probabilities are blended with the same cross-fades
as in 2-D; in Z each tile keeps only the planes nearer its own centre than its neighbours'
(the middle of the overlap), so that one slab of tile rows is all that is held.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Generator
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn

from .config import ModelConfig, PredictConfig
from .layout import ImageLayout
from .normalization import Normalizer, check_finite, fit_normalizer
from .objects import objects_from_probabilities
from .predict import (
    OutputArrays,
    Prediction,
    PredictProgress,
    check_plane_size,
    classes_from_probabilities,
    eval_mode,
    logits_to_probabilities,
)
from .tiling import AxisTiling, plan_axis
from .volumes import VolumeView, depth_axis, normalize_volume, volume_indices

#: The 8 ways to flip a (batch, channel, z, y, x) tile: as it is, along each axis, each pair, all.
FLIPS = [dims for n in range(4) for dims in itertools.combinations((2, 3, 4), n)]


def flip_averaged_probabilities(network: nn.Module, x: torch.Tensor, flips: bool) -> torch.Tensor:
    """The network's probabilities for ``x``; with ``flips``, averaged over :data:`FLIPS`,
    each flipped back (test-time augmentation)."""
    if not flips:
        return logits_to_probabilities(network(x))
    total = torch.zeros(())
    for dims in FLIPS:
        probs = logits_to_probabilities(network(x.flip(dims) if dims else x))
        total = total + (probs.flip(dims) if dims else probs)
    return total / len(FLIPS)


# --------------------------------------------------------------------------- objects


def volume_objects(
    probs: np.ndarray, min_size: int, voxel_size: tuple[float, ...] = ()
) -> np.ndarray:
    """One id per object in a (3, Z, Y, X) volume of probabilities: a 3-D watershed from seeds.

    Where Z is more than twice as coarse as Y and X, seeds are shrunk in-plane only, so thin
    stacks keep their seeds. Ids are consecutive from 1 across the whole volume.
    """
    coarse_z = len(voxel_size) == 3 and voxel_size[0] > 2 * min(voxel_size[1:])
    structure = ndi.generate_binary_structure(3, 1)
    if coarse_z:
        structure[0] = structure[2] = False
    return objects_from_probabilities(probs, min_size, structure=structure)


# --------------------------------------------------------------------------- prediction


def owned_ranges(tiling: AxisTiling) -> list[tuple[int, int]]:
    """Per tile, the part of the axis it alone writes: up to the middle of each overlap."""
    starts, tile = tiling.starts, tiling.tile
    bounds = [0]
    for k in range(1, len(starts)):
        bounds.append((starts[k] + starts[k - 1] + tile) // 2)
    bounds.append(tiling.length)
    return [(bounds[k], bounds[k + 1]) for k in range(len(starts))]


def plan_volume(
    shape: tuple[int, int, int], config: PredictConfig, multiples: tuple[int, ...]
) -> tuple[AxisTiling, AxisTiling, AxisTiling]:
    """Tilings of Z, Y and X; Z overlaps by at most a quarter of the tile's depth."""
    tz, ty, tx = config.volume_tile_size
    z_overlap = min(config.overlap, tz // 4)
    return (
        plan_axis(shape[0], tz, z_overlap, multiples[0]),
        plan_axis(shape[1], ty, min(config.overlap, ty // 4), multiples[1]),
        plan_axis(shape[2], tx, min(config.overlap, tx // 4), multiples[2]),
    )


def _read_tile(
    view: VolumeView,
    tilings: tuple[AxisTiling, ...],
    index: tuple[int, int, int],
    normalizer: Normalizer,
    where: str,
) -> np.ndarray:
    """A normalised (C, tz, ty, tx) tile; padded by reflection where the volume is smaller."""
    window = [slice(t.starts[k], t.starts[k] + t.tile) for t, k in zip(tilings, index, strict=True)]
    raw = view.read(*window)
    check_finite(raw, where)
    tile = normalize_volume(normalizer, raw)
    pads = [(0, 0)] + [(0, t.tile - n) for t, n in zip(tilings, tile.shape[1:], strict=True)]
    if any(p for _, p in pads):
        fits = all(n > p for n, (_, p) in zip(tile.shape, pads, strict=True))
        tile = np.pad(tile, pads, mode="reflect" if fits else "edge")
    return tile


class _RowSink:
    """Where finished rows of a slab go: probabilities, a volume kept for the watershed, labels."""

    def __init__(self, probs_out: Any, volume_probs: np.ndarray | None, labels_out: Any) -> None:
        self.probs_out, self.volume_probs, self.labels_out = probs_out, volume_probs, labels_out

    def write(
        self, outer: tuple[int, ...], z0: int, keep_z: list[int], y0: int, rows: np.ndarray
    ) -> None:
        """``rows`` (n, slab planes from ``z0``, rows from ``y0``, X); planes ``keep_z`` written."""
        y1 = y0 + rows.shape[2]
        if y1 <= y0:
            return
        if self.probs_out is not None:
            for z in keep_z:
                self.probs_out[(slice(None), *outer, z, slice(y0, y1))] = rows[:, z - z0]
        if self.volume_probs is not None:
            self.volume_probs[:, z0 : z0 + rows.shape[1], y0:y1] = rows
        if self.labels_out is not None:
            classes = classes_from_probabilities(rows[:, [z - z0 for z in keep_z]])
            for n, z in enumerate(keep_z):
                self.labels_out[(*outer, z, slice(y0, y1))] = classes[n]


def predict_volume_iter(
    network: nn.Module,
    model_config: ModelConfig,
    image: Any,
    layout: ImageLayout,
    config: PredictConfig,
    device: torch.device,
    dtype: torch.dtype,
    want_probabilities: bool = True,
    want_labels: bool = True,
    planes: list[tuple[int, ...]] | None = None,
    out_probabilities: Any = None,
    out_labels: Any = None,
    normalizer: Normalizer | None = None,
) -> Generator[PredictProgress, None, Prediction]:
    """Predict every volume of a stack with a 3-D network, tile by tile; yields progress.

    Shapes and ``out_*`` arrays are as in :func:`napari_unetseg.core.predict.predict_iter`.
    ``planes`` (stack indices, Z last) computes only the tiles those planes need and writes
    only those planes. A class model holds one slab of tile rows; an object model also
    holds its volume's probabilities, for the 3-D watershed.
    """
    depth_axis(layout)
    check_plane_size(layout, model_config)
    n_outputs = model_config.n_classes
    objects = model_config.task == "objects"
    shape = (layout.stack_shape[-1], *layout.plane_shape)
    tz, ty, tx = plan_volume(shape, config, model_config.multiples)
    flips = math.prod(shape) <= config.volume_flips_up_to
    z_owned = owned_ranges(tz)
    wanted: dict[tuple[int, ...], set[int]] = {}
    for index in (
        [(*outer, z) for outer in volume_indices(layout) for z in range(shape[0])]
        if planes is None
        else planes
    ):
        wanted.setdefault(tuple(index[:-1]), set()).add(int(index[-1]))
    if normalizer is None:
        normalizer = fit_normalizer(image, layout, model_config.normalization)

    arrays = OutputArrays.make(
        image,
        layout,
        model_config,
        want=(want_probabilities, want_labels, False),
        given=(out_probabilities, out_labels, None),
    )
    keep_objects = objects and arrays.labels is not None

    jobs = []  # (outer, z tile)
    for outer, zs in wanted.items():
        for k, (a, b) in enumerate(z_owned):
            if any(a <= z < b for z in zs):
                jobs.append((outer, k))
    total = len(ty.starts) * len(tx.starts) * len(jobs)
    done, next_id = 0, 0
    volume_probs: np.ndarray | None = None
    current_outer: tuple[int, ...] | None = None

    def finish_objects(outer: tuple[int, ...]) -> int:
        source = (
            volume_probs
            if volume_probs is not None
            else np.asarray(arrays.probabilities[(slice(None), *outer)])
        )
        ids = volume_objects(source, config.min_object_size, model_config.voxel_size)
        keep = np.zeros(shape[0], bool)
        keep[sorted(wanted[outer])] = True
        ids[~keep] = 0
        return arrays.place_objects(outer, ids, next_id)

    with eval_mode(network):
        for number, (outer, k) in enumerate(jobs):
            if outer != current_outer:
                if current_outer is not None and keep_objects:
                    next_id = finish_objects(current_outer)
                current_outer = outer
                volume_probs = (
                    np.zeros((n_outputs, *shape), np.float32)
                    if keep_objects and arrays.probabilities is None
                    else None
                )
            sink = _RowSink(arrays.probabilities, volume_probs, None if objects else arrays.labels)
            for _ in _predict_slab(
                network,
                VolumeView(image, layout, outer),
                outer,
                (tz, ty, tx),
                k,
                wanted_z=sorted(wanted[outer]),
                normalizer=normalizer,
                sink=sink,
                device=device,
                dtype=dtype,
                n_outputs=n_outputs,
                shape=shape,
                flips=flips,
            ):
                done += 1
                yield PredictProgress(done, total, number, len(jobs))
        if current_outer is not None and keep_objects:
            next_id = finish_objects(current_outer)
    return arrays.result(next_id if objects else None)


def _predict_slab(
    network: nn.Module,
    view: VolumeView,
    outer: tuple[int, ...],
    tilings: tuple[AxisTiling, AxisTiling, AxisTiling],
    k: int,
    *,
    wanted_z: list[int],
    normalizer: Normalizer,
    sink: _RowSink,
    device: torch.device,
    dtype: torch.dtype,
    n_outputs: int,
    shape: tuple[int, ...],
    flips: bool,
) -> Generator[None, None, None]:
    """Predict the planes that z tile ``k`` owns, blending tiles in Y and X; one yield a tile.
    ``flips``: each tile's probabilities are averaged over its 8 flips.

    Rows go to ``sink`` as soon as no later tile overlaps them, so one band of tile rows
    is held at a time.
    """
    tz, ty, tx = tilings
    where = f"volume {outer}" if outer else "the stack"
    z0, z1 = owned_ranges(tz)[k]
    keep_z = [z for z in wanted_z if z0 <= z < z1]
    local = [z - tz.starts[k] for z in range(z0, z1)]
    wy = [torch.from_numpy(ty.normalized_weights(i)) for i in range(len(ty.starts))]
    wx = [torch.from_numpy(tx.normalized_weights(j)) for j in range(len(tx.starts))]
    use_autocast = dtype != torch.float32
    band = torch.zeros((n_outputs, z1 - z0, 0, tx.padded))
    top = 0  # first row held in the band
    for i in range(len(ty.starts)):
        for j in range(len(tx.starts)):
            tile = _read_tile(view, tilings, (k, i, j), normalizer, where)
            x = torch.from_numpy(tile)[None].to(device)
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=use_autocast):
                probs = flip_averaged_probabilities(network, x, flips)[0].cpu()
            probs = probs[:, local]
            y0, x0 = ty.starts[i] - top, tx.starts[j]
            missing = y0 + ty.tile - band.shape[2]
            if missing > 0:
                band = torch.cat(
                    [band, band.new_zeros((*band.shape[:2], missing, band.shape[3]))], 2
                )
            weight = wy[i][:, None] * wx[j][None, :]
            band[:, :, y0 : y0 + ty.tile, x0 : x0 + tx.tile].addcmul_(probs, weight)
            yield
        # rows above the next tile row are final
        finished = ty.starts[i + 1] if i + 1 < len(ty.starts) else ty.padded
        count = finished - top
        if count > 0:
            rows = band[:, :, :count].numpy()[:, :, : max(0, shape[1] - top), : shape[2]]
            sink.write(outer, z0, keep_z, top, rows)
            band = band[:, :, count:].clone()
            top += count
