"""The image's class proportions, estimated after training, folded into the output layer.

Patches are drawn with every painted class equally often, so the network learns as if each
class covered an equal share of the image. In a microscopy image they rarely do (nuclei
may cover a tenth of it), and the unpainted pixels near class borders then go to the rarer
class too often. Saerens, Latinne and Decaestecker's EM (Neural Computation 14, 2002)
estimates the image's real proportions from the network's own predictions on the whole
image, painted or not; adding ``log(true share / trained share)`` to each class's logit is
Bayes' rule for the new proportions. It lives in the last layer's bias, so every way the
model is run or exported uses it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn

from .borders import brightness_aligned_shifts
from .model import member_networks
from .sampling import TrainingPlane
from .walls import wall_shift

#: At most this many pixels per plane are predicted to estimate the proportions.
MAX_CROP = 512
#: No estimate moves a class's share further than this factor from an even share: a poorly
#: trained network's predictions can drive the EM to extremes.
MAX_FACTOR = 10.0


def class_shares_em(
    probabilities: np.ndarray, trained_shares: np.ndarray, iterations: int = 200
) -> np.ndarray:
    """Class shares of the pixels behind ``probabilities`` (N, C), posteriors made under
    ``trained_shares``: the EM fixed point of Saerens et al. (2002)."""
    shares = trained_shares.astype(np.float64).copy()
    ratio_base = probabilities.astype(np.float64) / trained_shares
    for _ in range(iterations):
        adjusted = ratio_base * shares
        adjusted /= adjusted.sum(1, keepdims=True)
        new = adjusted.mean(0)
        if np.abs(new - shares).max() < 1e-6:
            shares = new
            break
        shares = new
    even = 1.0 / len(shares)
    clipped: np.ndarray = np.clip(shares, even / MAX_FACTOR, None)
    result: np.ndarray = clipped / clipped.sum()
    return result


#: Largest crop (voxels) of a volume predicted to estimate the proportions.
MAX_VOLUME_CROP = (32, 128, 128)
#: Crops predicted in a plane (or volume) larger than the largest crop.
CROPS = 4


def _crop_sides(plane: TrainingPlane) -> list[int]:
    shape = plane.image.shape[1:]
    limits = MAX_VOLUME_CROP if len(shape) == 3 else (MAX_CROP, MAX_CROP)
    return [min(n, limit) for n, limit in zip(shape, limits, strict=True)]


def _covering_windows(shape: tuple[int, ...], sides: list[int]) -> list[tuple[slice, ...]]:
    """Windows of ``sides`` spread evenly along each axis so that together they cover
    ``shape``, overlapping where the sides do not divide it."""
    per_axis = []
    for n, side in zip(shape, sides, strict=True):
        count = -(-n // side)
        starts = np.round(np.linspace(0, n - side, count)).astype(int) if count > 1 else [0]
        per_axis.append([slice(int(a), int(a) + side) for a in starts])
    return list(itertools.product(*per_axis))


def _windows(plane: TrainingPlane, rng: np.random.Generator) -> list[tuple[slice, ...]]:
    """The whole plane (or volume) when it is small; a volume covered by at most CROPS
    crops, when it can be; else CROPS random crops of at most MAX_CROP px
    (MAX_VOLUME_CROP voxels).

    A stack's class shares change with depth, so random crops of a deep stack see its
    planes unevenly, and the estimate then varies with the draw.
    """
    shape = plane.image.shape[1:]
    sides = _crop_sides(plane)
    if list(shape) == sides:
        return [tuple(slice(0, n) for n in shape)]
    if len(shape) == 3:
        covering = _covering_windows(shape, sides)
        if len(covering) <= CROPS:
            return covering
    windows = []
    for _ in range(CROPS):
        starts = [int(rng.integers(0, n - side + 1)) for n, side in zip(shape, sides, strict=True)]
        windows.append(tuple(slice(a, a + side) for a, side in zip(starts, sides, strict=True)))
    return windows


def estimate_pixels(planes: list[TrainingPlane]) -> int:
    """How many pixels :func:`class_share_shift` predicts: to budget its time ahead."""
    any_draw = np.random.default_rng(0)  # where random crops fall, not their size
    return sum(
        int(np.prod([s.stop - s.start for s in window]))
        for plane in planes
        for window in _windows(plane, any_draw)
    )


Windows = list[list[tuple[slice, ...]]]


def crop_windows(planes: list[TrainingPlane], rng: np.random.Generator) -> Windows:
    """For each plane, the windows the class shares are estimated on (see ``_windows``)."""
    return [_windows(plane, rng) for plane in planes]


def predicted_probabilities(
    model: nn.Module,
    planes: list[TrainingPlane],
    windows: Windows,
    min_size: int | tuple[int, ...],
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Softmax (or sigmoid) outputs in the planes' ``windows``, as (pixels, classes).

    ``min_size``: the multiple of each input side (one number, or one per spatial axis).
    """
    found = []
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None),
    ):
        for plane, plane_windows in zip(planes, windows, strict=True):
            for window in plane_windows:
                crop = plane.image[(slice(None), *window)]
                shape = crop.shape[1:]
                multiples = (min_size,) * len(shape) if isinstance(min_size, int) else min_size
                pad = ((0, 0), *((0, (-n) % m) for n, m in zip(shape, multiples, strict=True)))
                fits = all(n > m for n, m in zip(shape, multiples, strict=True))
                padded = np.pad(crop, pad, mode="reflect" if fits else "edge")
                x = torch.from_numpy(np.ascontiguousarray(padded))[None].to(device)
                logits = model(x)[0][(slice(None), *(slice(0, n) for n in shape))].float()
                if logits.shape[0] == 1:
                    fg = torch.sigmoid(logits[0])
                    probs = torch.stack([1 - fg, fg])
                else:
                    probs = torch.softmax(logits, 0)
                found.append(probs.reshape(probs.shape[0], -1).T.cpu().numpy())
    return np.concatenate(found)


class PaintedPixels(NamedTuple):
    """The image and paint in the same windows, pixel by pixel, in the same order."""

    intensities: np.ndarray  # (pixels, channels): the normalised image
    smoothed: np.ndarray  # the same, Gaussian-smoothed (σ = 1 pixel) to see past noise
    painted: np.ndarray  # (pixels,): the painted class, -1 where unpainted


def painted_pixels(planes: list[TrainingPlane], windows: Windows) -> PaintedPixels:
    """The normalised image, smoothed too, and the paint in the planes' ``windows``."""
    values, smoothed, paint = [], [], []
    for plane, plane_windows in zip(planes, windows, strict=True):
        for window in plane_windows:
            crop = plane.image[(slice(None), *window)]
            values.append(crop.reshape(crop.shape[0], -1).T)
            blurred = ndi.gaussian_filter(crop.astype(np.float32), (0,) + (1.0,) * len(window))
            smoothed.append(blurred.reshape(crop.shape[0], -1).T)
            painted = plane.train_mask[window] | plane.validation_mask[window]
            paint.append(np.where(painted, plane.classes[window].astype(np.int64), -1).ravel())
    return PaintedPixels(np.concatenate(values), np.concatenate(smoothed), np.concatenate(paint))


def output_layers(model: nn.Module) -> list[nn.Conv2d | nn.Conv3d]:
    """The last 1x1 convolution of each member, whose bias holds the class proportions; empty
    when one cannot be reached. The model averages its members' logits, so a shift of every
    member's bias shifts its output by the same amount."""
    layers = []
    for network in member_networks(model):
        conv = getattr(getattr(network, "outc", None), "conv", None)
        if not isinstance(conv, nn.Conv2d | nn.Conv3d) or conv.bias is None:
            return []
        layers.append(conv)
    return layers


def output_layer(model: nn.Module) -> nn.Conv2d | nn.Conv3d | None:
    """The (first member's) last 1x1 convolution, whose bias holds the class proportions."""
    layers = output_layers(model)
    return layers[0] if layers else None


def output_bias(model: nn.Module) -> torch.Tensor | None:
    conv = output_layer(model)
    return None if conv is None else conv.bias


class OutputShift(NamedTuple):
    """What :func:`class_share_shift` found: the image's class shares, the shift of the
    output bias that applies them, and the part of that shift (on the foreground logit) that
    moved a two-class model's border onto the brightness step and drew its walls thinner
    (0.0 when it did not); ``wall_shift`` is the walls' part of it (:mod:`.walls`).

    The border never grows the foreground. ``grow_back`` is the (shift, border_shift)
    to try when that fails the held-out paint: its border may grow the foreground back
    over the class-share step's shrink. None when the two are the same.
    """

    shares: np.ndarray
    shift: np.ndarray
    border_shift: float
    grow_back: tuple[np.ndarray, float] | None = None
    wall_shift: float = 0.0


def class_share_shift(
    model: nn.Module,
    planes: list[TrainingPlane],
    min_size: int | tuple[int, ...],
    device: torch.device,
    rng: np.random.Generator,
    autocast_dtype: torch.dtype | None = None,
    align_borders: bool = True,
) -> OutputShift | None:
    """The image's class shares and the output-bias shift that applies them.

    The network was trained with classes drawn evenly, so its posteriors assume even shares.
    With ``align_borders``, a two-class model's border then moves onto the brightness step
    between its painted classes (:mod:`.borders`). None for a model without an output bias.
    """
    conv = output_layer(model)
    if conv is None:
        return None
    windows = crop_windows(planes, rng)
    was_training = model.training
    model.eval()
    try:
        probabilities = predicted_probabilities(
            model, planes, windows, min_size, device, autocast_dtype
        )
    finally:
        model.train(was_training)
    n = probabilities.shape[1]
    shares = class_shares_em(probabilities, np.full(n, 1.0 / n))
    shift = shift_for_shares(shares, conv.out_channels)
    if not (align_borders and n == 2):
        return OutputShift(shares, shift, 0.0)
    p = np.clip(probabilities.astype(np.float64), 1e-7, 1.0)
    share_shift = float(shift[0] if conv.out_channels == 1 else shift[1] - shift[0])
    foreground_logits = np.log(p[:, 1]) - np.log(p[:, 0]) + share_shift
    pixels = painted_pixels(planes, windows)  # read only for a two-class model

    def with_border(border_shift: float) -> np.ndarray:
        return np.asarray(shift + foreground_shift(border_shift, conv.out_channels, False))

    # the strict border, and the one that may grow the foreground back over the share shift
    border_shift, grown = brightness_aligned_shifts(
        foreground_logits,
        pixels.intensities,
        pixels.painted,
        rng,
        pixels.smoothed,
        share_shifts=(0.0, share_shift),
    )
    shapes = [tuple(s.stop - s.start for s in window) for found in windows for window in found]
    walls = wall_shift(foreground_logits + border_shift, shapes, pixels.painted)
    border_shift, grown = border_shift + walls, grown + walls
    grow_back = None if grown == border_shift else (with_border(grown), grown)
    return OutputShift(shares, with_border(border_shift), border_shift, grow_back, walls)


def shift_output_bias(model: nn.Module, shift: np.ndarray) -> None:
    with torch.no_grad():
        for conv in output_layers(model):
            assert conv.bias is not None
            conv.bias += torch.as_tensor(shift, dtype=conv.bias.dtype, device=conv.bias.device)


def shift_for_shares(shares: np.ndarray, out_channels: int) -> np.ndarray:
    """The output-bias shift from the even class shares a network is trained at to ``shares``:
    log(share / even) per class, or the foreground's log-odds for one sigmoid output."""
    logs = np.log(shares) - np.log(1.0 / shares.size)
    return np.asarray(logs[1:] - logs[:1] if out_channels == 1 else logs)


def foreground_shift(amount: float, out_channels: int, objects: bool) -> np.ndarray:
    """The output-bias shift that adds ``amount`` to the foreground's log-odds (for an object
    model, interior and boundary together against background)."""
    if out_channels == 1:  # one sigmoid output: the foreground's log-odds
        return np.array([amount])
    if objects:
        return np.array([-amount] + [0.0] * (out_channels - 1))
    return np.array([-amount / 2, amount / 2])


def folded_shift(
    model: nn.Module, training: Mapping[str, Any], border_moved: float, objects: bool
) -> np.ndarray | None:
    """The output-bias shift folded into a trained model since its weights were last trained:
    the class shares and border step of its last training (``training``, the summary the
    model's config keeps) and the border moved by hand. None when there is none to undo."""
    conv = output_layer(model)
    if conv is None:
        return None
    n = conv.out_channels
    if training.get("output_shift") is not None:  # members trained in turn
        by_hand = foreground_shift(border_moved, n, objects) if border_moved else np.zeros(n)
        try:
            shift = np.asarray(training["output_shift"], dtype=np.float64) + by_hand
        except (TypeError, ValueError):
            return None
        usable = shift.shape == (n,) and np.all(np.isfinite(shift)) and np.any(shift)
        return shift if usable else None
    try:
        fraction = float(training.get("class_shares_applied") or 0.0)
        shares = np.asarray(training.get("class_shares") or (), dtype=np.float64)
        border = float(training.get("border_shift") or 0.0)
    except (TypeError, ValueError):  # a summary written by hand
        return None
    moved = border + border_moved  # 0 for models of more than two classes
    shift = foreground_shift(moved, n, objects) if moved else np.zeros(n)
    if fraction and shares.ndim == 1 and shares.size == max(n, 2) and np.all(shares > 0):
        shift = shift + fraction * shift_for_shares(shares, n)
    if not np.all(np.isfinite(shift)) or not np.any(shift):
        return None
    return shift
