"""3-D U-Nets on stacks: reading volumes, training volumes from painted planes, held-out paint.

A stack's last stack axis (Z) is the depth a 3-D network sees; any axes before it (T, S)
hold separate volumes. Training reads only the painted part of a volume plus a patch of
context. Tiled 3-D prediction is in :mod:`.volume_predict`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .config import ModelConfig, TrainConfig
from .errors import InputError
from .layout import ImageLayout
from .normalization import Normalizer, check_finite, fit_normalizer
from .planes import checked_inputs, smallest_class_dtype
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
