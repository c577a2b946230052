"""Painted images turned into training planes: checked, normalised, cropped to the paint."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .config import ModelConfig, TrainConfig
from .errors import InputError
from .layout import ImageLayout, resolve_layout
from .normalization import Normalizer, check_finite, fit_normalizer
from .sampling import TrainingPlane
from .targets import check_labels_dtype, check_painted_classes, make_targets, paint_notes

__all__ = [
    "CROP_ABOVE_PIXELS",
    "checked_inputs",
    "painted_window",
    "prepare_planes",
    "smallest_class_dtype",
]

#: Planes with more pixels than this are cut to their painted region plus a patch of context.
CROP_ABOVE_PIXELS = 4_000_000


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def prepare_planes(
    images: Any,
    labels: Any,
    model_config: ModelConfig,
    train_config: TrainConfig,
    normalization_config: Any,
    axes: str | None = None,
    notes: list[str] | None = None,
) -> list[TrainingPlane]:
    """Check images and painted labels and turn them into training planes (inputs untouched).

    ``notes``, when given, gets what the painter should know (:func:`~.targets.paint_notes`).
    """
    n_outputs = model_config.n_classes
    planes: list[TrainingPlane] = []
    painted_planes: list[np.ndarray] = []
    for where, image, layout, painted in checked_inputs(images, labels, model_config, axes):
        normalizer: Normalizer | None = None
        for index in layout.plane_indices():
            plane_labels = painted[index]
            if not plane_labels.any():
                continue  # an unpainted plane of a stack teaches nothing
            if normalizer is None:
                normalizer = fit_normalizer(image, layout, normalization_config)
            raw = layout.read_plane(image, index)
            check_finite(raw, where)
            window = painted_window(plane_labels, train_config)
            targets = make_targets(plane_labels[window], train_config, n_outputs)
            painted_planes.append(plane_labels)
            planes.append(
                TrainingPlane(
                    image=normalizer(raw[(slice(None), *window)]),
                    classes=targets.classes.astype(smallest_class_dtype(n_outputs), copy=False),
                    train_mask=targets.mask.copy(),
                    validation_mask=np.zeros_like(targets.mask),
                )
            )
    check_painted_classes(painted_planes, train_config, n_outputs)
    if notes is not None:
        notes += paint_notes(painted_planes, train_config)
    return planes


def checked_inputs(
    images: Any, labels: Any, model_config: ModelConfig, axes: str | None = None
) -> Iterator[tuple[str, Any, ImageLayout, np.ndarray]]:
    """Pair images with their labels, checking counts, shapes and the model's minimum size:
    (name for messages, image, layout, labels) per image, for planes and volumes alike."""
    image_list, labels_list = _as_list(images), _as_list(labels)
    if len(image_list) != len(labels_list):
        raise InputError(
            f"got {len(image_list)} image(s) but {len(labels_list)} labels array(s); give one "
            "labels array per image."
        )
    for number, (image, painted) in enumerate(zip(image_list, labels_list, strict=True)):
        where = f"image {number}" if len(image_list) > 1 else "the image"
        layout = resolve_layout(image, model_config.in_channels, axes)
        painted = check_labels_dtype(np.asarray(painted))
        if painted.shape != layout.output_shape:
            raise InputError(
                f"the labels have shape {painted.shape} but {where} has shape {layout.shape} "
                f"(axes {layout.axes}), so labels of shape {layout.output_shape} are needed. "
                "Paint on a Labels layer made for this image."
            )
        if min(layout.plane_shape) < model_config.min_size:
            raise InputError(
                f"{where} is {layout.plane_shape[0]}x{layout.plane_shape[1]} px; this model (depth "
                f"{model_config.depth}) needs at least {model_config.min_size}x{model_config.min_size} px."
            )
        yield where, image, layout, painted


def painted_window(painted: np.ndarray, config: TrainConfig) -> tuple[slice, slice]:
    """The part of a plane training needs: all of it, or for a large plane painted sparsely,
    the painted region and the context a patch around it sees (memory follows the paint)."""
    whole = (slice(None), slice(None))
    if painted.size <= CROP_ABOVE_PIXELS or not config.is_sparse:
        return whole
    rows, cols = np.flatnonzero(painted.any(1)), np.flatnonzero(painted.any(0))
    margin = config.patch_size
    return (
        slice(max(0, rows[0] - margin), rows[-1] + 1 + margin),
        slice(max(0, cols[0] - margin), cols[-1] + 1 + margin),
    )


def smallest_class_dtype(n_outputs: int) -> type[np.integer[Any]]:
    return np.uint8 if max(n_outputs, 2) <= 256 else np.int16
