"""Painted labels to what the network learns: a class index per pixel and a mask of pixels that count."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from .config import MAX_CLASSES, TrainConfig
from .errors import InputError

#: Classes of an object model.
BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2


@dataclass(frozen=True)
class Targets:
    """``classes`` holds class indices; ``mask`` is True where a pixel is painted (counts)."""

    classes: np.ndarray
    mask: np.ndarray


def check_labels_dtype(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """Integer labels (bool and whole-number floats accepted), never negative."""
    if labels.dtype.kind == "b":
        return labels.astype(np.uint8)
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise InputError(
                f"{name} must hold whole numbers (painted label ids); found fractions."
            )
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "ui":
        raise InputError(f"{name} must be an integer array of label ids, got dtype {labels.dtype}.")
    if labels.size and labels.min() < 0:
        raise InputError(f"{name} contains negative values; label ids must be 0 or more.")
    return labels


def object_classes(ids: np.ndarray, is_object: np.ndarray) -> np.ndarray:
    """Background / interior / boundary from object ids; boundaries include touching objects."""
    classes = np.zeros(ids.shape, np.int64)
    boundary = find_boundaries(ids, connectivity=1, mode="inner") & is_object
    classes[is_object] = INTERIOR
    classes[boundary] = BOUNDARY
    return classes


def ring_around_objects(is_object: np.ndarray, painted: np.ndarray) -> np.ndarray:
    """Unpainted pixels that touch a painted object within its plane (Y, X: the last two axes).

    A whole painted object ends there, so they are background or another object's edge.
    """
    structure = np.zeros((3,) * is_object.ndim, bool)
    centre = (1,) * (is_object.ndim - 2)
    structure[centre] = ndi.generate_binary_structure(2, 1)
    grown = np.asarray(ndi.binary_dilation(is_object, structure), bool)
    ring: np.ndarray = grown & ~painted
    return ring


def make_targets(labels: np.ndarray, config: TrainConfig, n_outputs: int) -> Targets:
    """Class indices and loss mask for one 2-D plane of painted labels (never modified)."""
    labels = check_labels_dtype(labels)
    if config.mode == "sparse":
        mask = labels > 0
        classes = np.where(mask, labels.astype(np.int64) - 1, 0)
    elif config.mode == "dense":
        mask = np.ones(labels.shape, bool)
        classes = labels.astype(np.int64)
    elif config.mode == "objects":
        mask = labels > 0
        is_object = labels >= 2
        classes = object_classes(labels, is_object)
        if config.background_around_objects:
            ring = ring_around_objects(is_object, mask)
            classes[ring], mask = BACKGROUND, mask | ring
    else:  # objects-dense
        mask = np.ones(labels.shape, bool)
        classes = object_classes(labels, labels >= 1)
    return Targets(classes=classes, mask=mask)


def check_painted_classes(
    labels_planes: list[np.ndarray], config: TrainConfig, n_outputs: int
) -> None:
    """Errors a painter can act on: nothing painted, one class only, labels beyond the model."""
    present: set[int] = set()
    for plane in labels_planes:
        present.update(int(v) for v in np.unique(plane))
    n_classes = max(n_outputs, 2)
    if config.mode in ("sparse", "objects"):
        painted = present - {0}
        if not painted:
            raise InputError(
                "nothing is painted: paint background with label 1 and "
                + (
                    "each object with its own label from 2."
                    if config.is_objects
                    else "each class with 2, 3, ..."
                )
                + " Unpainted pixels (0) are ignored."
            )
        if config.mode == "sparse":
            if max(painted) > MAX_CLASSES:
                raise InputError(
                    f"label {max(painted)} is painted, but classes are painted as 1 "
                    f"(background), 2, 3, ... and a model has at most {MAX_CLASSES} classes. "
                    "If each object has its own label, train with mode='objects'; otherwise "
                    "relabel the classes as 1, 2, 3, ..."
                )
            if max(painted) > n_classes:
                raise InputError(
                    f"label {max(painted)} is painted but the model has {n_classes} classes, so labels "
                    f"1..{n_classes} are allowed (1 = background, 2.. = classes). Repaint, or create a "
                    f"model with n_classes={max(painted)}."
                )
            if len(painted) < 2:
                only = next(iter(painted))
                missing = "background (label 1)" if only != 1 else "at least one class (label 2)"
                raise InputError(
                    f"only label {only} is painted; the model needs two classes to tell apart. "
                    f"Also paint {missing}."
                )
        else:
            if 1 not in painted:
                raise InputError("no background is painted: paint some background with label 1.")
            if not any(v >= 2 for v in painted):
                raise InputError(
                    "no object is painted: paint each object with its own label from 2."
                )
    else:
        if config.mode == "dense" and present and max(present) >= MAX_CLASSES:
            raise InputError(
                f"label {max(present)} appears, but dense classes are 0 (background), 1, 2, ... "
                f"and a model has at most {MAX_CLASSES} classes. If each object has its own "
                "label, train with mode='objects-dense'; otherwise relabel the classes."
            )
        if config.mode == "dense" and present and max(present) >= n_classes:
            raise InputError(
                f"label {max(present)} appears but the model has {n_classes} classes, so dense labels "
                f"must be 0..{n_classes - 1}. Use a model with n_classes={max(present) + 1}."
            )
        if len(present) < 2:
            raise InputError(
                f"the labels hold only the value {next(iter(present), 0)}; dense training needs "
                "background (0) and at least one class or object."
            )


#: Label 1 "looks like an object" when it is one shape no longer than this many times its
#: width (area / thickness²: a disc is 0.8, a 10-pixel-wide stroke 100 pixels long is 10) ...
COMPACT_AT_MOST = 2.5
#: ... and its area is within this factor of the painted objects' median area.
OBJECT_AREA_FACTOR = 5.0


def _thickness(mask: np.ndarray) -> float:
    """Twice the largest distance from a pixel of ``mask`` to its outside."""
    return 2.0 * float(ndi.distance_transform_edt(np.pad(mask, 1)).max())


def paint_notes(labels: list[np.ndarray], config: TrainConfig) -> list[str]:
    """What a painter should know before training on ``labels`` (the painted planes or
    volumes), though it is no error: training goes on."""
    note = label_one_note(labels) if config.mode == "objects" else None
    return [note] if note else []


def label_one_note(labels: list[np.ndarray]) -> str | None:
    """A note when label 1, the background of an objects painting, is painted like an object.

    napari starts a Labels layer at label 1, so a person who paints one object per label
    often paints the first object with 1. Background strokes are lines, or several patches;
    an object is one compact shape. None when label 1 is not painted like that.
    """
    shape: np.ndarray | None = None  # label 1's one shape, cut to its box
    object_areas: list[np.ndarray] = []
    for painted in labels:
        object_areas.append(np.unique(painted[painted >= 2], return_counts=True)[1])
        for plane in painted.reshape(-1, *painted.shape[-2:]):  # shapes are drawn in a plane
            background = plane == 1
            if not background.any():
                continue
            ids, n = ndi.label(background)
            if n > 1 or shape is not None:
                return None
            shape = background[ndi.find_objects(ids)[0]]
    areas = np.concatenate(object_areas)
    if shape is None or not len(areas):
        return None
    area, typical = int(shape.sum()), float(np.median(areas))
    if area / _thickness(shape) ** 2 > COMPACT_AT_MOST:
        return None
    if not typical / OBJECT_AREA_FACTOR <= area <= typical * OBJECT_AREA_FACTOR:
        return None
    return (
        f"label 1 is painted as one filled shape of {area} pixels, the size of the painted "
        f"objects (median {typical:.0f}). In objects mode label 1 is the background, so this "
        "shape is learnt as background. If it is an object, give it a label of its own from "
        "2, and paint some background (the space between objects) with label 1."
    )
