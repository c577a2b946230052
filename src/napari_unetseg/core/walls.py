"""Walls drawn thinner: the border of a two-class model whose foreground is a wall network.

Blur spreads a thin wall or membrane, bright or dark, over several pixels, and strokes say
nothing of its width (a wall is painted along its middle), so the network draws walls thicker
than a truth made from the cells' outlines. Moving such a model's border inward by 1.5 on the
foreground log-odds raised Dice on the 3-D membrane stack (walls in 3-D) by 0.054-0.064
(``python -m benchmarks.border``) and on the maize walls by 0.020-0.038, and moved the 2-D
membrane plane by -0.014 to +0.007 (``python -m benchmarks.walls``; docs/benchmarks.md,
twenty-third session). The same images inverted, dark walls on a bright ground, gained on
maize (+0.022 to +0.052) and lost on the membrane plane (0, -0.019, -0.053)
(``python -m benchmarks.walls --dark``, twenty-fourth session).

A foreground that cuts each plane's background into separate pieces (the cells) is taken for
walls. Nuclei and other objects lie in one connected background, and are left alone: on the
tissue nuclei the same move would cost up to 0.035.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: A plane's background counts as cut into pieces when at least this share of it lies
#: outside its largest piece (walls: 0.79-0.96 on the benchmarks; nuclei: at most 0.001).
MIN_BACKGROUND_SPLIT = 0.5
#: How far a wall network's border moves, on the foreground log-odds.
WALL_SHIFT = -1.5
#: The move may turn at most this share of the painted foreground to background. At 1 %, the
#: 3-D membrane-stack trainings moved only -0.12 to -1.25 on 6 of 8; replayed on the same
#: trainings, 5 % changed Dice by 0 to +0.048, never less (``python -m benchmarks.wall_limit``).
MAX_WALL_PAINT_LOST = 0.05
SHIFT_STEP = 0.25


def background_split(foreground: np.ndarray) -> float:
    """The median, over the planes of ``foreground`` (2-D, or 3-D as planes along the first
    axis), of the share of each plane's background that lies outside its largest piece."""
    planes = foreground if foreground.ndim == 3 else foreground[None]
    shares = []
    for plane in planes:
        background = ~plane
        n_background = int(background.sum())
        if n_background == 0:
            continue
        pieces, n = ndi.label(background)
        largest = np.bincount(pieces.ravel())[1:].max() if n else 0
        shares.append(1.0 - largest / n_background)
    return float(np.median(shares)) if shares else 0.0


def is_wall_network(foreground_logits: np.ndarray, shapes: list[tuple[int, ...]]) -> bool:
    """Whether the foreground (logit above 0) of the windows of ``shapes``, whose pixels
    ``foreground_logits`` holds one after the other, cuts their background into pieces."""
    splits, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        splits.append(background_split(foreground_logits[start : start + size].reshape(shape) > 0))
        start += size
    return bool(splits) and float(np.median(splits)) >= MIN_BACKGROUND_SPLIT


def wall_shift(
    foreground_logits: np.ndarray,
    shapes: list[tuple[int, ...]],
    painted: np.ndarray,
    max_paint_lost: float = MAX_WALL_PAINT_LOST,
) -> float:
    """The shift of the foreground logit that draws a wall network thinner: WALL_SHIFT, or
    less where that would lose more than ``max_paint_lost`` of the painted foreground; 0.0
    when the foreground is not a wall network. ``painted``: 1 foreground, 0 background,
    -1 unpainted, for the same pixels."""
    if not is_wall_network(foreground_logits, shapes):
        return 0.0
    painted_logits = foreground_logits[painted == 1]
    if painted_logits.size == 0:
        return 0.0
    kept_now = float((painted_logits > 0).mean())
    shift = WALL_SHIFT
    while shift < 0 and float((painted_logits + shift > 0).mean()) < kept_now - max_paint_lost:
        shift += SHIFT_STEP
    return min(shift, 0.0)
