"""Held-out paint: which painted pixels validate instead of train, and the Dice they score."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .sampling import TrainingPlane

#: At most this many validation regions are scored after each epoch.
MAX_VALIDATION_REGIONS = 24
#: Context added around a validation region so its pixels see what training pixels see.
VALIDATION_MARGIN = 32
#: Fewer painted pixels than this and no validation share is held out.
MIN_PIXELS_FOR_VALIDATION = 400


def validation_block_for(plane_shape: tuple[int, ...], block: int) -> int:
    """The region side for a plane: ``block``, or a quarter of a small plane's side (at least 8 px)."""
    return max(8, min(block, min(plane_shape) // 4))


@dataclass(frozen=True)
class ValidationSplit:
    """What was held out; ``reason`` says why nothing was, when nothing was."""

    pixels: int
    reason: str | None = None


def split_validation(
    planes: list[TrainingPlane],
    fraction: float,
    block: int,
    rng: np.random.Generator,
    n_classes: int,
) -> ValidationSplit:
    """Move square regions of paint to validation until ``fraction`` of it is held out.

    Regions, not single pixels, are held out so validation pixels are not the immediate
    neighbours of training pixels; their side shrinks with small planes. No plane loses more
    than half of the paint of any class it shows, so every painted plane keeps teaching each
    of its classes. When the held-out paint would miss a painted class, or is too small to
    judge by, nothing is held out and ``reason`` says so.
    """
    total = sum(int(p.train_mask.sum()) for p in planes)
    if fraction <= 0:
        return ValidationSplit(0, "no validation share was asked for")
    if total < MIN_PIXELS_FOR_VALIDATION:
        return ValidationSplit(
            0, f"only {total} pixels are painted, too few to hold some out for validation"
        )
    class_totals = np.zeros(n_classes, np.int64)
    plane_totals = []
    regions = []
    for number, plane in enumerate(planes):
        counts_all = np.bincount(plane.classes[plane.train_mask], minlength=n_classes)[:n_classes]
        class_totals += counts_all
        plane_totals.append(counts_all)
        side = validation_block_for(plane.classes.shape, block)
        ny, nx = plane.classes.shape
        for y in range(0, ny, side):
            for x in range(0, nx, side):
                window = (slice(y, y + side), slice(x, x + side))
                mask = plane.train_mask[window]
                if mask.any():
                    counts = np.bincount(plane.classes[window][mask], minlength=n_classes)[
                        :n_classes
                    ]
                    regions.append((number, window, counts))
    held = np.zeros(n_classes, np.int64)
    held_per_plane = [np.zeros(n_classes, np.int64) for _ in planes]
    chosen = []
    for i in rng.permutation(len(regions)):
        if held.sum() >= fraction * total:
            break
        number, window, counts = regions[i]
        if np.any(held + counts > class_totals // 2):
            continue
        if np.any(held_per_plane[number] + counts > plane_totals[number] // 2):
            continue
        chosen.append((number, window))
        held += counts
        held_per_plane[number] += counts
    painted_classes = class_totals > 0
    if np.any(held[painted_classes] == 0) or held.sum() < MIN_PIXELS_FOR_VALIDATION // 4:
        return ValidationSplit(
            0,
            "too little paint could be held out to judge the training by "
            f"({int(held.sum())} of {total} pixels, not every class); the last weights are kept",
        )
    for number, window in chosen:
        plane = planes[number]
        plane.validation_mask[window] = plane.train_mask[window]
        plane.train_mask[window] = False
    return ValidationSplit(int(held.sum()))


@dataclass
class ValidationRegion:
    image: torch.Tensor
    classes: np.ndarray
    mask: np.ndarray


def validation_regions(
    planes: list[TrainingPlane], block: int, min_size: int, rng: np.random.Generator
) -> list[ValidationRegion]:
    """Crops around held-out regions, with context, padded to the network's size multiple."""
    found = []
    for plane in planes:
        ny, nx = plane.classes.shape
        side = validation_block_for(plane.classes.shape, block)
        for y in range(0, ny, side):
            for x in range(0, nx, side):
                if plane.validation_mask[y : y + side, x : x + side].any():
                    found.append((plane, y, x, side))
    if len(found) > MAX_VALIDATION_REGIONS:
        found = [
            found[i] for i in sorted(rng.choice(len(found), MAX_VALIDATION_REGIONS, replace=False))
        ]
    regions = []
    for plane, y, x, side in found:
        ny, nx = plane.classes.shape
        y0, x0 = max(0, y - VALIDATION_MARGIN), max(0, x - VALIDATION_MARGIN)
        y1, x1 = min(ny, y + side + VALIDATION_MARGIN), min(nx, x + side + VALIDATION_MARGIN)
        mask = np.zeros((y1 - y0, x1 - x0), bool)
        inner = (slice(y - y0, y - y0 + side), slice(x - x0, x - x0 + side))
        mask[inner] = plane.validation_mask[y : y + side, x : x + side]
        crop = plane.image[:, y0:y1, x0:x1]
        pad_y, pad_x = (-crop.shape[1]) % min_size, (-crop.shape[2]) % min_size
        crop = np.pad(crop, ((0, 0), (0, pad_y), (0, pad_x)), mode="reflect")
        regions.append(
            ValidationRegion(
                torch.from_numpy(np.ascontiguousarray(crop)), plane.classes[y0:y1, x0:x1], mask
            )
        )
    return regions


def foreground_dice(
    predicted: np.ndarray, target: np.ndarray, objects: bool, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per foreground class: (intersection, predicted + target sizes); objects merge all foreground."""
    if objects:
        p, t = predicted > 0, target > 0
        return np.array([np.sum(p & t)]), np.array([np.sum(p) + np.sum(t)])
    classes = range(1, max(n_classes, 2))
    inter = np.array([np.sum((predicted == c) & (target == c)) for c in classes])
    sizes = np.array([np.sum(predicted == c) + np.sum(target == c) for c in classes])
    return inter, sizes


@dataclass(frozen=True)
class ValidationScore:
    """Foreground Dice on the held-out paint, and how many of its pixels were wrong."""

    dice: float
    wrong: int
    pixels: int


def evaluate(
    model: nn.Module,
    regions: list[ValidationRegion],
    device: torch.device,
    objects: bool,
    n_outputs: int,
    autocast_dtype: torch.dtype | None = None,
) -> ValidationScore | None:
    """Score the held-out paint; ``autocast_dtype`` runs the forward passes in that
    precision (the training's own), which is cheaper than float32."""
    if not regions:
        return None
    n_fg = 1 if objects else max(n_outputs, 2) - 1
    inter, sizes = np.zeros(n_fg), np.zeros(n_fg)
    wrong = pixels = 0
    was_training = model.training
    model.eval()
    try:
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None),
        ):
            for region in regions:
                logits = model(region.image[None].to(device))[0].float().cpu()
                logits = logits[(slice(None), *(slice(0, n) for n in region.mask.shape))]
                pred = (logits[0] > 0).long() if n_outputs == 1 else logits.argmax(0)
                predicted, painted = pred.numpy()[region.mask], region.classes[region.mask]
                i, s = foreground_dice(predicted, painted, objects, n_outputs)
                inter += i
                sizes += s
                wrong += int(
                    np.sum((predicted > 0) != (painted > 0) if objects else predicted != painted)
                )
                pixels += len(painted)
    finally:
        model.train(was_training)
    scored = sizes > 0
    if not scored.any():
        return None
    return ValidationScore(float(np.mean(2 * inter[scored] / sizes[scored])), wrong, pixels)
