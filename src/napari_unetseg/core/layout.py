"""Which axis of an image is which: stack axes, channels, Y and X.

Images come as (Y,X), (Y,X,3|4) RGB(A), (C,Y,X), and any of these behind leading stack axes
(Z or T). The caller may name the axes; otherwise they are guessed from the model's number
of input channels, and an ambiguous guess is an error that says how to name them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError

STACK_LETTERS = "TZS"
ALLOWED_LETTERS = set("TZSCYX")


@dataclass(frozen=True)
class ImageLayout:
    """An image's shape with its axes named, e.g. ``axes="ZCYX"``."""

    axes: str
    shape: tuple[int, ...]

    @property
    def channel_axis(self) -> int | None:
        return self.axes.index("C") if "C" in self.axes else None

    @property
    def n_channels(self) -> int:
        axis = self.channel_axis
        return 1 if axis is None else self.shape[axis]

    @property
    def output_axes(self) -> str:
        """Axes of a labels array for this image: the same minus channels."""
        return self.axes.replace("C", "")

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(n for a, n in zip(self.axes, self.shape, strict=True) if a != "C")

    @property
    def stack_shape(self) -> tuple[int, ...]:
        return self.output_shape[:-2]

    @property
    def plane_shape(self) -> tuple[int, int]:
        y, x = self.output_shape[-2:]
        return (y, x)

    @property
    def n_planes(self) -> int:
        return int(np.prod(self.stack_shape, dtype=np.int64))

    def plane_indices(self) -> Iterator[tuple[int, ...]]:
        """Indices into the stack axes, one per 2-D plane, in C order."""
        yield from np.ndindex(*self.stack_shape) if self.stack_shape else iter([()])

    def read_plane(self, image: Any, stack_index: tuple[int, ...]) -> np.ndarray:
        """One plane as a (C, Y, X) numpy array; works for numpy, dask and zarr arrays."""
        return self.plane_view(image, stack_index).read(slice(None), slice(None))

    def plane_view(self, image: Any, stack_index: tuple[int, ...]) -> PlaneView:
        """One plane as (C, Y, X) that reads from ``image`` only the rows and columns asked for."""
        return PlaneView(image, self, stack_index)


class PlaneView:
    """A (C, Y, X) window on one plane of an image of any layout; nothing is read until asked.

    ``view.read(rows, columns)`` reads just that part of the plane from a numpy, dask or
    zarr array (or anything indexable with slices) and returns it as numpy (C, rows, columns).
    """

    def __init__(self, image: Any, layout: ImageLayout, stack_index: tuple[int, ...]) -> None:
        self.image = image
        self.shape = (layout.n_channels, *layout.plane_shape)
        self.dtype = np.dtype(getattr(image, "dtype", np.float32))
        self._axes = layout.axes
        self._stack_index = stack_index
        kept = [a for a in layout.axes if a in "CYX"]
        self._order = None if "C" not in kept else [kept.index(a) for a in "CYX"]

    def read(self, rows: slice, columns: slice) -> np.ndarray:
        index: list[Any] = []
        stack = iter(self._stack_index)
        for letter in self._axes:
            if letter == "Y":
                index.append(rows)
            elif letter == "X":
                index.append(columns)
            else:
                index.append(slice(None) if letter == "C" else next(stack))
        part = np.asarray(self.image[tuple(index)])
        if self._order is None:
            return part[np.newaxis]
        return np.transpose(part, self._order)


def _check_named_axes(axes: str, shape: tuple[int, ...], in_channels: int) -> str:
    axes = axes.upper()
    if len(axes) != len(shape):
        raise InputError(
            f"axes={axes!r} names {len(axes)} axes but the image has {len(shape)}: {shape}."
        )
    bad = set(axes) - ALLOWED_LETTERS
    if bad or len(set(axes)) != len(axes):
        raise InputError(
            f"axes={axes!r} is not valid: use each of T, Z, S, C, Y, X at most once "
            "(for example 'YX', 'YXC', 'CYX', 'ZYX', 'ZCYX')."
        )
    non_channel = axes.replace("C", "")
    if not non_channel.endswith("YX"):
        raise InputError(f"axes={axes!r} must have Y and X as the last two non-channel axes.")
    n_channels = shape[axes.index("C")] if "C" in axes else 1
    if n_channels != in_channels:
        raise InputError(
            f"the image has {n_channels} channel(s) (shape {shape}, axes {axes!r}) but the model "
            f"expects {in_channels}. Choose an image with {in_channels} channel(s) or another model."
        )
    return axes


def _stack_letters(n: int, shape: tuple[int, ...]) -> str:
    if n > 2:
        raise InputError(
            f"cannot guess the axes of an image of shape {shape}: pass axes=, for example 'TZCYX'."
        )
    return "TZ"[2 - n :]


def guess_axes(shape: tuple[int, ...], in_channels: int) -> str:
    """Guess axes from the shape and the model's input channels; raise when unsure."""
    ndim = len(shape)
    if ndim < 2:
        raise InputError(f"an image needs at least 2 dimensions (Y, X); got shape {shape}.")
    if in_channels == 1:
        if ndim >= 3 and shape[-1] in (1, 2) and shape[-2] > 4:
            what = (
                "a channel axis of length 1: pass axes='YXC' (with stack letters in front, "
                "e.g. 'ZYXC'), or drop it with image[..., 0]"
                if shape[-1] == 1
                else "2 channels, but the model expects 1: pick one with image[..., 0], or use "
                "a model trained on 2 channels (then pass axes='YXC')"
            )
            raise InputError(
                f"the image of shape {shape} ends in an axis of length {shape[-1]}, which looks "
                f"like {what}. Pass axes='ZYX' if the last axis really is X."
            )
        if ndim >= 3 and shape[-1] in (3, 4) and shape[-2] > 4:
            raise InputError(
                f"the image of shape {shape} looks like RGB(A) but the model expects 1 channel. "
                "Convert it to grayscale, use a model trained on RGB, or pass axes='ZYX' if the "
                "last axis really is X."
            )
        return _stack_letters(ndim - 2, shape) + "YX"
    if ndim == 2:
        raise InputError(
            f"the image is 2-D {shape} but the model expects {in_channels} channels. "
            f"Give a (C, Y, X) or (Y, X, C) image with C={in_channels}."
        )
    candidates = []
    if shape[-1] == in_channels:
        candidates.append(_stack_letters(ndim - 3, shape) + "YXC")
    if shape[-3] == in_channels:
        candidates.append(_stack_letters(ndim - 3, shape) + "CYX")
    if ndim == 4 and shape[0] == in_channels:
        candidates.append("CZYX")
    candidates = list(dict.fromkeys(candidates))
    if not candidates:
        raise InputError(
            f"no axis of the image (shape {shape}) has the model's {in_channels} channels. "
            f"Choose an image with {in_channels} channels, or another model."
        )
    if len(candidates) > 1:
        raise InputError(
            f"the axes of an image of shape {shape} are ambiguous for a {in_channels}-channel model: "
            f"it could be any of {', '.join(candidates)}. Pass axes= to say which."
        )
    return candidates[0]


def resolve_layout(image: Any, in_channels: int, axes: str | None = None) -> ImageLayout:
    """Name the axes of ``image`` (guessing when ``axes`` is None) and check the dtype."""
    if type(image).__module__.split(".")[0] == "torch":
        raise InputError(
            "the image is a torch tensor; pass a numpy array instead, e.g. "
            "image.detach().cpu().numpy()."
        )
    if axes is not None and not isinstance(axes, str):
        raise InputError(
            f"axes={axes!r} ({type(axes).__name__}) cannot be used: pass a string of axis "
            "letters such as 'YX', 'YXC', 'CYX' or 'ZYX', or None to guess."
        )
    shape = tuple(int(n) for n in getattr(image, "shape", ()))
    if not shape:
        raise InputError(
            f"expected an image array (numpy, dask or zarr) with a shape, got "
            f"{type(image).__name__}."
        )
    if 0 in shape:
        raise InputError(
            f"the image of shape {shape} is empty (an axis of length 0); choose an image, or "
            "a part of one, with pixels in it."
        )
    try:
        dtype = np.dtype(getattr(image, "dtype", np.float32))
    except TypeError:
        raise InputError(
            f"the image's dtype {getattr(image, 'dtype', None)!r} is not a numpy dtype; pass a "
            "numpy, dask or zarr array."
        ) from None
    if dtype.kind not in "uif":
        raise InputError(
            f"images of dtype {dtype} cannot be segmented; convert to an integer or float type "
            "first (for a mask, image.astype('uint8'); for complex data, np.abs(image))."
        )
    named = _check_named_axes(axes, shape, in_channels) if axes else guess_axes(shape, in_channels)
    return ImageLayout(axes=named, shape=shape)
