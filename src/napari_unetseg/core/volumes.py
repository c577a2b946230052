"""3-D U-Nets on stacks: training volumes from painted planes, held-out paint, tiled prediction.

A stack's last stack axis (Z) is the depth a 3-D network sees; any axes before it (T, S)
hold separate volumes. Training reads only the painted part of a volume plus a patch of
context; prediction reads one tile at a time, so memory follows the tile, not the stack.

Tiles overlap in every axis. In Y and X their probabilities are blended with the same
cross-fades as in 2-D; in Z each tile keeps only the planes nearer its own centre than its
neighbours' (the middle of the overlap), so that one slab of tile rows is all that is held.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn

from .config import ModelConfig, PredictConfig, TrainConfig
from .errors import InputError
from .layout import ImageLayout
from .normalization import Normalizer, check_finite, fit_normalizer
from .objects import objects_from_probabilities
from .planes import checked_inputs, smallest_class_dtype
from .predict import (
    Prediction,
    PredictProgress,
    check_out,
    check_plane_size,
    classes_from_probabilities,
    eval_mode,
    logits_to_probabilities,
    smallest_uint_dtype,
)
from .sampling import TrainingPlane
from .targets import (
    BACKGROUND,
    BOUNDARY,
    check_painted_classes,
    make_targets,
    object_classes,
    paint_notes,
    ring_around_objects,
)
from .tiling import AxisTiling, plan_axis
from .validation import (
    VALIDATION_MARGIN,
    ValidationRegion,
    ValidationSplit,
    split_validation,
    validation_block_for,
)

#: At most this many held-out regions of a volume are scored after each epoch.
MAX_VOLUME_VALIDATION_REGIONS = 16
#: Volumes with more voxels than this are cut to their painted region plus a patch of context.
CROP_ABOVE_VOXELS = 8_000_000


# --------------------------------------------------------------------------- reading


def depth_axis(layout: ImageLayout) -> str:
    """The letter of the stack axis a 3-D model sees as Z: the last one before Y and X."""
    if not layout.stack_shape:
        raise InputError(
            f"a 3-D model segments stacks, but the image has axes {layout.axes} (shape "
            f"{layout.shape}) and no Z axis. Use a 2-D model for a single plane."
        )
    return layout.output_axes[-3]


def volume_indices(layout: ImageLayout) -> Iterator[tuple[int, ...]]:
    """Indices into the stack axes before Z, one per volume (one empty tuple for a Z stack)."""
    outer = layout.stack_shape[:-1]
    yield from np.ndindex(*outer) if outer else iter([()])


class VolumeView:
    """A (C, Z, Y, X) window on one volume of an image of any layout; reads only what is asked."""

    def __init__(self, image: Any, layout: ImageLayout, outer: tuple[int, ...]) -> None:
        self.image = image
        z = depth_axis(layout)
        self.shape = (layout.n_channels, layout.stack_shape[-1], *layout.plane_shape)
        self._axes, self._z, self._outer = layout.axes, z, outer
        kept = [a for a in layout.axes if a in f"C{z}YX"]
        order = [kept.index(a) for a in f"{z}YX"]
        self._channel = kept.index("C") if "C" in kept else None
        self._order = order if self._channel is None else [self._channel, *order]

    def read(self, zs: slice, ys: slice, xs: slice) -> np.ndarray:
        index: list[Any] = []
        outer = iter(self._outer)
        for letter in self._axes:
            if letter == "Y":
                index.append(ys)
            elif letter == "X":
                index.append(xs)
            elif letter == self._z:
                index.append(zs)
            else:
                index.append(slice(None) if letter == "C" else next(outer))
        part = np.asarray(self.image[tuple(index)])
        part = np.transpose(part, self._order)
        return part if self._channel is not None else part[np.newaxis]


def normalize_volume(normalizer: Normalizer, block: np.ndarray) -> np.ndarray:
    """A (C, Z, Y, X) block normalised per channel, as float32."""
    c, *spatial = block.shape
    flat = np.ascontiguousarray(block).reshape(c, -1, spatial[-1])
    return normalizer(flat).reshape(block.shape)


# --------------------------------------------------------------------------- training data


def volume_patch(
    volumes: list[TrainingPlane], model: ModelConfig, config: TrainConfig
) -> tuple[int, ...]:
    """The (z, y, x) patch for these volumes: the configured one, no larger than the largest
    volume (rounded up to the network's multiples) and no smaller than those multiples."""
    largest = [max(v.classes.shape[a] for v in volumes) for a in range(3)]
    sides = []
    for wanted, n, multiple in zip(config.volume_patch_size, largest, model.multiples, strict=True):
        side = min(wanted, -(-n // multiple) * multiple)
        sides.append(max(multiple, side // multiple * multiple))
    return tuple(sides)


def painted_box(painted: np.ndarray, margins: tuple[int, ...]) -> tuple[slice, ...]:
    """The painted region's bounding box, grown by ``margins`` per axis and kept in the array."""
    box = []
    for axis, margin in enumerate(margins):
        other = tuple(a for a in range(painted.ndim) if a != axis)
        where = np.flatnonzero(painted.any(axis=other))
        box.append(slice(max(0, where[0] - margin), where[-1] + 1 + margin))
    return tuple(box)


def volume_object_classes(labels: np.ndarray, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Background / interior / boundary of painted object ids in a volume, and the loss mask.

    Boundaries are found in each plane, and between planes only where both are painted: an
    object painted on one plane has no boundary against the unpainted planes around it.
    """
    dense = config.mode == "objects-dense"
    mask = np.ones(labels.shape, bool) if dense else labels > 0
    is_object = labels >= (1 if dense else 2)
    classes = np.stack(
        [object_classes(plane, obj) for plane, obj in zip(labels, is_object, strict=True)]
    )
    # Z neighbours: both painted, different ids, one of them an object.
    above, below = labels[:-1], labels[1:]
    both = mask[:-1] & mask[1:] & (above != below)
    for side, objects in ((slice(None, -1), is_object[:-1]), (slice(1, None), is_object[1:])):
        view = classes[side]
        view[both & objects] = BOUNDARY
    if not dense and config.background_around_objects:
        ring = ring_around_objects(is_object, mask)
        classes[ring], mask = BACKGROUND, mask | ring
    return classes, mask


def prepare_volumes(
    images: Any,
    labels: Any,
    model_config: ModelConfig,
    train_config: TrainConfig,
    normalization_config: Any,
    axes: str | None = None,
    notes: list[str] | None = None,
) -> list[TrainingPlane]:
    """Check stacks and their painted labels and turn each painted volume into training data.

    Only the painted part of a large volume is read, with a patch of context around it.
    Inputs are never modified. ``notes``, when given, gets what the painter should know
    (:func:`~.targets.paint_notes`).
    """
    n_outputs = model_config.n_classes
    volumes: list[TrainingPlane] = []
    painted: list[np.ndarray] = []
    margins = tuple(train_config.volume_patch_size)
    for where, image, layout, painted_labels in checked_inputs(images, labels, model_config, axes):
        depth_axis(layout)
        normalizer: Normalizer | None = None
        for outer in volume_indices(layout):
            volume_labels = painted_labels[outer]
            if not volume_labels.any():
                continue
            if normalizer is None:
                normalizer = fit_normalizer(image, layout, normalization_config)
            whole = (slice(None),) * 3
            box = (
                painted_box(volume_labels > 0, margins)
                if volume_labels.size > CROP_ABOVE_VOXELS and train_config.is_sparse
                else whole
            )
            raw = VolumeView(image, layout, outer).read(*box)
            check_finite(raw, where)
            cut = volume_labels[box]
            if train_config.is_objects:
                classes, mask = volume_object_classes(cut, train_config)
            else:
                targets = make_targets(cut, train_config, n_outputs)
                classes, mask = targets.classes, targets.mask
            painted.append(cut)
            volumes.append(
                TrainingPlane(
                    image=normalize_volume(normalizer, raw),
                    classes=classes.astype(smallest_class_dtype(n_outputs)),
                    train_mask=mask.copy(),
                    validation_mask=np.zeros_like(mask),
                )
            )
    check_painted_classes(painted, train_config, n_outputs)
    if notes is not None:
        notes += paint_notes(painted, train_config)
    return volumes


# --------------------------------------------------------------------------- held-out paint


def plane_views(volumes: list[TrainingPlane]) -> list[TrainingPlane]:
    """Each painted plane of each volume as a 2-D training plane whose masks are views."""
    views = []
    for volume in volumes:
        for z in np.flatnonzero(volume.train_mask.any(axis=(1, 2))):
            views.append(
                TrainingPlane(
                    image=volume.image[:, z],
                    classes=volume.classes[z],
                    train_mask=volume.train_mask[z],
                    validation_mask=volume.validation_mask[z],
                )
            )
    return views


def split_volume_validation(
    volumes: list[TrainingPlane],
    fraction: float,
    block: int,
    rng: np.random.Generator,
    n_classes: int,
) -> ValidationSplit:
    """Hold out square regions of paint within the painted planes, as in 2-D: no painted plane
    loses more than half of any class it shows, so a stack painted on one plane validates too."""
    return split_validation(plane_views(volumes), fraction, block, rng, n_classes)


def _pad_to(array: np.ndarray, multiples: tuple[int, ...], leading: int) -> np.ndarray:
    pads = [(0, 0)] * leading + [
        (0, (-n) % m) for n, m in zip(array.shape[leading:], multiples, strict=True)
    ]
    fits = all(n > p for n, (_, p) in zip(array.shape, pads, strict=True))
    return np.pad(array, pads, mode="reflect" if fits else "edge")


def volume_validation_regions(
    volumes: list[TrainingPlane],
    block: int,
    multiples: tuple[int, ...],
    depth: int,
    rng: np.random.Generator,
) -> list[ValidationRegion]:
    """Crops around held-out regions with context in Y, X and ``depth`` planes in Z."""
    found = []
    for volume in volumes:
        nz, ny, nx = volume.classes.shape
        side = validation_block_for((ny, nx), block)
        for plane in np.flatnonzero(volume.validation_mask.any(axis=(1, 2))):
            for y in range(0, ny, side):
                for x in range(0, nx, side):
                    if volume.validation_mask[plane, y : y + side, x : x + side].any():
                        found.append((volume, int(plane), y, x, side))
    if len(found) > MAX_VOLUME_VALIDATION_REGIONS:
        chosen = rng.choice(len(found), MAX_VOLUME_VALIDATION_REGIONS, replace=False)
        found = [found[i] for i in sorted(chosen)]
    regions = []
    for volume, z, y, x, side in found:
        nz, ny, nx = volume.classes.shape
        z0 = int(max(0, min(z - depth // 2, nz - depth)))
        z1 = min(nz, z0 + depth)
        y0, x0 = max(0, y - VALIDATION_MARGIN), max(0, x - VALIDATION_MARGIN)
        y1, x1 = min(ny, y + side + VALIDATION_MARGIN), min(nx, x + side + VALIDATION_MARGIN)
        mask = np.zeros((z1 - z0, y1 - y0, x1 - x0), bool)
        mask[z - z0, y - y0 : y - y0 + side, x - x0 : x - x0 + side] = volume.validation_mask[
            z, y : y + side, x : x + side
        ]
        crop = _pad_to(volume.image[:, z0:z1, y0:y1, x0:x1], multiples, 1)
        regions.append(
            ValidationRegion(
                torch.from_numpy(np.ascontiguousarray(crop)),
                volume.classes[z0:z1, y0:y1, x0:x1],
                mask,
            )
        )
    return regions


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

    probs_out: Any = None
    if out_probabilities is not None and want_probabilities:
        check_out(out_probabilities, image, (n_outputs, *layout.output_shape), "f", "probabilities")
        probs_out = out_probabilities
    elif want_probabilities:
        probs_out = np.zeros((n_outputs, *layout.output_shape), np.float32)
    label_dtype = (
        np.dtype(np.uint32)
        if objects
        else classes_from_probabilities(np.zeros((n_outputs, 1), np.float32)).dtype
    )
    labels_out: Any = None
    if out_labels is not None and want_labels:
        check_out(out_labels, image, layout.output_shape, "ui", "labels")
        labels_out = out_labels
    elif want_labels:
        labels_out = np.zeros(layout.output_shape, label_dtype)
    given_labels = labels_out is not None and labels_out is out_labels

    jobs = []  # (outer, z tile, z range to write)
    for outer, zs in wanted.items():
        for k, (a, b) in enumerate(z_owned):
            if any(a <= z < b for z in zs):
                jobs.append((outer, k))
    per_slab = len(ty.starts) * len(tx.starts)
    total = per_slab * len(jobs)
    wy = [torch.from_numpy(ty.normalized_weights(i)) for i in range(len(ty.starts))]
    wx = [torch.from_numpy(tx.normalized_weights(j)) for j in range(len(tx.starts))]
    use_autocast = dtype != torch.float32
    done, next_id = 0, 0
    volume_probs: np.ndarray | None = None
    current_outer: tuple[int, ...] | None = None

    def finish_objects(outer: tuple[int, ...]) -> None:
        nonlocal next_id
        source = (
            volume_probs
            if volume_probs is not None
            else np.asarray(probs_out[(slice(None), *outer)])
        )
        ids = volume_objects(source, config.min_object_size, model_config.voxel_size)
        keep = np.zeros(shape[0], bool)
        keep[sorted(wanted[outer])] = True
        ids[~keep] = 0
        if given_labels and next_id + int(ids.max()) > np.iinfo(labels_out.dtype).max:
            raise InputError(
                f"out= for the labels has dtype {labels_out.dtype}, too small for "
                f"{next_id + int(ids.max())} objects; use uint32."
            )
        labels_out[outer] = np.where(ids > 0, ids + next_id, 0)
        next_id += int(ids.max())

    with eval_mode(network):
        for number, (outer, k) in enumerate(jobs):
            if outer != current_outer:
                if current_outer is not None and objects and labels_out is not None:
                    finish_objects(current_outer)
                current_outer = outer
                volume_probs = (
                    np.zeros((n_outputs, *shape), np.float32)
                    if objects and labels_out is not None and probs_out is None
                    else None
                )
            view = VolumeView(image, layout, outer)
            where = f"volume {outer}" if outer else "the stack"
            z0, z1 = z_owned[k]
            keep_z = sorted(z for z in wanted[outer] if z0 <= z < z1)
            local = [z - tz.starts[k] for z in range(z0, z1)]
            band = torch.zeros((n_outputs, z1 - z0, 0, tx.padded))
            top = 0  # first row held in the band

            for i in range(len(ty.starts)):
                for j in range(len(tx.starts)):
                    tile = _read_tile(view, (tz, ty, tx), (k, i, j), normalizer, where)
                    x = torch.from_numpy(tile)[None].to(device)
                    with (
                        torch.no_grad(),
                        torch.autocast(device.type, dtype=dtype, enabled=use_autocast),
                    ):
                        probs = logits_to_probabilities(network(x))[0].cpu()
                    probs = probs[:, local]
                    y0, x0 = ty.starts[i] - top, tx.starts[j]
                    missing = y0 + ty.tile - band.shape[2]
                    if missing > 0:
                        band = torch.cat(
                            [band, band.new_zeros((*band.shape[:2], missing, band.shape[3]))], 2
                        )
                    weight = wy[i][:, None] * wx[j][None, :]
                    band[:, :, y0 : y0 + ty.tile, x0 : x0 + tx.tile].addcmul_(probs, weight)
                    done += 1
                    yield PredictProgress(done, total, number, len(jobs))
                # rows above the next tile row are final
                finished = ty.starts[i + 1] if i + 1 < len(ty.starts) else ty.padded
                count = finished - top
                if count > 0:
                    rows = band[:, :, :count].numpy()[:, :, : max(0, shape[1] - top), : shape[2]]
                    sink = _RowSink(probs_out, volume_probs, None if objects else labels_out)
                    sink.write(outer, z0, keep_z, top, rows)
                    band = band[:, :, count:].clone()
                    top += count
        if current_outer is not None and objects and labels_out is not None:
            finish_objects(current_outer)
    if labels_out is not None and objects and not given_labels:
        labels_out = labels_out.astype(smallest_uint_dtype(next_id), copy=False)
    return Prediction(probabilities=probs_out, labels=labels_out)
