"""Where the model is unsure, and where a person should paint next.

Uncertainty is the normalised entropy of the class probabilities,
``-sum(p log p) / log(K)`` for ``K`` classes (a single sigmoid output counts as two): 0 where
one class has all the probability, 1 where all classes are equally likely. Entropy is used
rather than one minus the margin between the two likeliest classes because it sees the whole
distribution (an object model's background / interior / boundary, models with many
classes); for two classes both rank pixels the same way.

:func:`suggest_regions` turns such a map into a ranked list of windows to paint: the windows
whose *unpainted* pixels are the most uncertain on average, no two overlapping.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError

#: Probabilities are clipped to at least this before taking logarithms.
_EPSILON = 1e-7


def entropy_from_probabilities(probs: np.ndarray) -> np.ndarray:
    """Normalised entropy in [0, 1] (float32) of probabilities shaped (K, ...)."""
    probs = np.asarray(probs, np.float32)
    if probs.shape[0] == 1:  # one sigmoid output: the classes are p and 1 - p
        probs = np.concatenate([probs, 1 - probs])
    n_classes = probs.shape[0]
    clipped = np.clip(probs, _EPSILON, 1.0)
    entropy = -(probs * np.log(clipped)).sum(axis=0)
    result: np.ndarray = np.clip(entropy / math.log(n_classes), 0.0, 1.0).astype(np.float32)
    return result


@dataclass(frozen=True)
class PaintSuggestion:
    """A window worth painting: the most uncertain unpainted pixels first.

    ``index`` is the stack index of the plane (``()`` for a 2-D image), ``centre`` the
    (y, x) pixel at the window's centre, ``box`` the window as (top, left, bottom, right),
    bottom and right excluded, and ``score`` the mean uncertainty of the window's pixels,
    painted pixels counting as certain.
    """

    index: tuple[int, ...]
    centre: tuple[int, int]
    box: tuple[int, int, int, int]
    score: float

    @property
    def position(self) -> tuple[int, ...]:
        """Stack index and centre together: the full coordinate of the centre pixel."""
        return (*self.index, *self.centre)


def _block_means(values: np.ndarray, block: int) -> np.ndarray:
    """Means over ``block`` x ``block`` cells (the last cells may be partial)."""
    height, width = values.shape
    rows, cols = -(-height // block), -(-width // block)
    padded = np.zeros((rows * block, cols * block), np.float64)
    padded[:height, :width] = values
    counts = np.zeros_like(padded)
    counts[:height, :width] = 1
    sums = padded.reshape(rows, block, cols, block).sum(axis=(1, 3))
    areas = counts.reshape(rows, block, cols, block).sum(axis=(1, 3))
    means: np.ndarray = sums / np.maximum(areas, 1)
    return means


def _plane_candidates(
    uncertainty: np.ndarray,
    open_to_paint: np.ndarray,
    index: tuple[int, ...],
    window: int,
    count: int,
) -> list[PaintSuggestion]:
    """The best ``count`` windows of one plane, no two overlapping.

    Only windows that lie wholly inside the plane are scored, so a window at the edge is
    judged by as many pixels as any other.
    """
    height, width = uncertainty.shape
    window = min(window, height, width)
    block = max(1, window // 4)
    cells = max(1, window // block)  # a window, in cells of block x block pixels
    worth = _block_means(np.where(open_to_paint, uncertainty, 0.0), block)
    integral = np.pad(worth.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    # mean over every window of cells x cells, indexed by its top-left cell
    score = (
        integral[cells:, cells:]
        - integral[:-cells, cells:]
        - integral[cells:, :-cells]
        + integral[:-cells, :-cells]
    ) / (cells * cells)
    found: list[PaintSuggestion] = []
    while len(found) < count:
        flat = int(np.argmax(score))
        best = float(score.flat[flat])
        if best <= 0:
            break
        row, col = (int(v) for v in np.unravel_index(flat, score.shape))
        top, left = min(row * block, height - window), min(col * block, width - window)
        found.append(
            PaintSuggestion(
                index=index,
                centre=(top + window // 2, left + window // 2),
                box=(top, left, top + window, left + window),
                score=round(best, 4),
            )
        )
        # no later window may overlap this one
        score[max(0, row - cells + 1) : row + cells, max(0, col - cells + 1) : col + cells] = 0.0
    return found


def _near(a: PaintSuggestion, b: PaintSuggestion, window: int) -> bool:
    """The same place: overlapping windows on the same plane or on neighbouring ones."""
    if a.index[:-1] != b.index[:-1] or (a.index and abs(a.index[-1] - b.index[-1]) > 1):
        return False
    return abs(a.centre[0] - b.centre[0]) < window and abs(a.centre[1] - b.centre[1]) < window


def suggest_regions(
    uncertainty: Any,
    painted: Any = None,
    *,
    count: int = 5,
    window: int = 64,
    where: Any = None,
) -> list[PaintSuggestion]:
    """Rank the windows most worth painting next, most uncertain first.

    Parameters
    ----------
    uncertainty
        Map in [0, 1] with the image's spatial shape (e.g. from
        :meth:`~napari_unetseg.core.Segmenter.uncertainty`); the last two axes are Y and X,
        any leading ones a stack. Numpy, or any array read plane by plane (zarr, dask).
    painted
        The painting so far (same shape, 0 unpainted) or None. Painted pixels count as
        certain, so a window full of paint is not suggested again.
    count
        How many windows to return, at most (fewer when the rest of the image is painted or
        certain).
    window
        Side of a window in pixels, about what a person paints in one go. Windows do not
        overlap; in a stack, a window also rules out the same place on the neighbouring planes.
    where
        Optional boolean mask (same shape): suggest only here.

    Returns
    -------
    list of PaintSuggestion
        Ranked by ``score``, the mean uncertainty of the window's unpainted pixels (painted
        ones count as 0).
    """
    shape = tuple(int(n) for n in getattr(uncertainty, "shape", np.shape(uncertainty)))
    if len(shape) < 2:
        raise InputError(
            f"the uncertainty map must have at least 2 axes (Y, X); got shape {shape}."
        )
    for name, mask in (("painted", painted), ("where", where)):
        got = None if mask is None else tuple(int(n) for n in np.shape(mask))
        if got is not None and got != shape:
            raise InputError(
                f"{name} has shape {got} but the uncertainty map has shape {shape}; give the "
                "painting of the same image."
            )
    if count < 1 or window < 1:
        raise InputError(f"count and window must be at least 1; got {count} and {window}.")
    candidates: list[PaintSuggestion] = []
    for index in itertools.product(*(range(n) for n in shape[:-2])):
        plane = np.asarray(uncertainty[index], np.float32)
        open_to_paint = np.ones(plane.shape, bool)
        if painted is not None:
            open_to_paint &= np.asarray(painted[index]) == 0
        if where is not None:
            open_to_paint &= np.asarray(where[index], bool)
        candidates += _plane_candidates(plane, open_to_paint, index, window, count)
    candidates.sort(key=lambda s: -s.score)
    chosen: list[PaintSuggestion] = []
    for candidate in candidates:
        if not any(_near(candidate, kept, window) for kept in chosen):
            chosen.append(candidate)
        if len(chosen) == count:
            break
    return chosen
