"""Where a two-class model puts the border between its classes, moved onto the brightness step.

Strokes keep away from class borders, as a person's do, so nothing painted says where a
border lies: the network places it somewhere in the unpainted margin, and thin structures
(walls, membranes) come out twice as thick as they are. When the painted classes differ in
brightness, the border belongs where the brightness changes. Of the borders the network
offers (its foreground logit shifted by a constant), this picks the one that splits the
pixels into the two most distinct groups: Otsu's criterion, the largest between-class
variance, on the network's own partition rather than on a global threshold. Whether the
classes differ in brightness is judged on a lightly smoothed image, since pixel noise can hide
a difference that is plain at the scale of a few pixels. A shift that would turn painted
pixels to the other class is never taken.

The step never makes the painted foreground larger than the network drew it. Blur spreads a
thin structure's contrast past its edges, so a wall looks wider than it is, bright or dark: on
the real images the steps that grew the foreground past the network's border lowered Dice, and
on the same images inverted, where the foreground is the darker class, so did growing it
(docs/benchmarks.md, twenty-fourth session). It may still undo a shrink of the class-share step
(:mod:`.prior`), which can overshoot.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

#: The painted classes must differ in brightness at least this much (the area under the ROC
#: curve of one class's painted brightness against the other's, 0.5 meaning no difference).
MIN_SEPARATION = 0.95
#: The shifts of the foreground logit tried, either way.
MAX_SHIFT = 4.0
SHIFT_STEP = 0.25
#: A shift may lose at most this share of either class's painted pixels.
MAX_PAINT_LOST = 0.01
#: At most this many pixels are used, drawn at random.
MAX_PIXELS = 1_000_000
MAX_PAINTED = 20_000


def brightness_separation(values: np.ndarray, foreground: np.ndarray) -> float:
    """How well ``values`` tell painted foreground from background: the ROC AUC, folded so
    that 1 is perfect either way round and 0.5 is none."""
    n_fg = int(foreground.sum())
    n_bg = len(foreground) - n_fg
    if n_fg == 0 or n_bg == 0:
        return 0.5
    ranks = rankdata(values)
    auc = (ranks[foreground].sum() - n_fg * (n_fg + 1) / 2) / (n_fg * n_bg)
    return float(max(auc, 1 - auc))


def separating_channel(
    intensities: np.ndarray, painted: np.ndarray, rng: np.random.Generator
) -> int | None:
    """The channel of ``intensities`` (pixels, channels) whose brightness best separates the
    painted classes (``painted``: 1 foreground, 0 background, -1 unpainted), or None when
    none reaches MIN_SEPARATION."""
    where = np.flatnonzero((painted == 0) | (painted == 1))
    if len(where) > MAX_PAINTED:
        where = rng.choice(where, MAX_PAINTED, replace=False)
    foreground = painted[where] == 1
    scores = [
        brightness_separation(intensities[where, c], foreground)
        for c in range(intensities.shape[1])
    ]
    best = int(np.argmax(scores))
    return best if scores[best] >= MIN_SEPARATION else None


def brightness_aligned_shift(
    foreground_logits: np.ndarray,
    intensities: np.ndarray,
    painted: np.ndarray,
    rng: np.random.Generator,
    smoothed: np.ndarray | None = None,
    share_shift: float = 0.0,
) -> float:
    """The shift of the foreground logit that puts the border on the brightness step.

    ``foreground_logits`` (pixels,), ``intensities`` (pixels, channels) and ``painted``
    (pixels,: 1 foreground, 0 background, -1 unpainted) describe the same pixels;
    ``smoothed``, the intensities of a lightly smoothed image, decides whether the painted
    classes differ in brightness (pixel noise can hide a real difference). ``share_shift``
    is the part of ``foreground_logits`` that the class-share step added: the border may move
    back over it, but the foreground never grows past the network's own border. 0.0 when
    the classes do not differ, or no allowed shift splits the pixels better.
    """
    (shift,) = brightness_aligned_shifts(
        foreground_logits, intensities, painted, rng, smoothed, share_shifts=(share_shift,)
    )
    return shift


def brightness_aligned_shifts(
    foreground_logits: np.ndarray,
    intensities: np.ndarray,
    painted: np.ndarray,
    rng: np.random.Generator,
    smoothed: np.ndarray | None = None,
    share_shifts: tuple[float, ...] = (0.0,),
) -> list[float]:
    """:func:`brightness_aligned_shift` for each of ``share_shifts``, from one pass over the
    pixels (the same random sample, sorted once)."""
    smoothed = intensities if smoothed is None else smoothed
    if len(foreground_logits) > MAX_PIXELS:
        keep = rng.choice(len(foreground_logits), MAX_PIXELS, replace=False)
        foreground_logits, intensities, smoothed, painted = (
            foreground_logits[keep],
            intensities[keep],
            smoothed[keep],
            painted[keep],
        )
    channel = separating_channel(smoothed, painted, rng)
    if channel is None:
        return [0.0] * len(share_shifts)
    order = np.argsort(-foreground_logits, kind="stable")
    logits = foreground_logits[order]
    values = intensities[order, channel].astype(np.float64)
    is_fg = (painted[order] == 1).astype(np.int64)
    is_bg = (painted[order] == 0).astype(np.int64)
    total_fg, total_bg = max(int(is_fg.sum()), 1), max(int(is_bg.sum()), 1)
    sums, fg_kept, bg_lost = np.cumsum(values), np.cumsum(is_fg), np.cumsum(is_bg)

    def split(shift: float) -> int:  # pixels called foreground: a prefix of the sorted order
        return int(np.searchsorted(-logits, shift, side="left"))

    n = len(values)
    unshifted = split(0.0)
    base_fg = fg_kept[unshifted - 1] / total_fg if unshifted else 0.0
    base_bg = 1 - (bg_lost[unshifted - 1] / total_bg if unshifted else 0.0)
    scored: list[tuple[float, float]] = []  # (shift, between-class variance), paint kept
    for shift in np.arange(-MAX_SHIFT, MAX_SHIFT + SHIFT_STEP / 2, SHIFT_STEP):
        k = split(float(shift))
        if k == 0 or k == n:
            continue
        kept_fg = fg_kept[k - 1] / total_fg
        kept_bg = 1 - bg_lost[k - 1] / total_bg
        if kept_fg < base_fg - MAX_PAINT_LOST or kept_bg < base_bg - MAX_PAINT_LOST:
            continue
        w = k / n
        mean_fg, mean_bg = sums[k - 1] / k, (sums[-1] - sums[k - 1]) / (n - k)
        scored.append((float(shift), w * (1 - w) * (mean_fg - mean_bg) ** 2))

    def best_within(share_shift: float) -> float:
        # a shift > 0 grows the foreground: only back over the class-share step's shrink
        low, high = -MAX_SHIFT, min(MAX_SHIFT, max(0.0, -share_shift))
        best_shift, best_variance = 0.0, -1.0
        for shift, variance in scored:
            if low - 1e-9 <= shift <= high + 1e-9 and variance > best_variance + 1e-12:
                best_shift, best_variance = shift, variance
        return best_shift

    return [best_within(share_shift) for share_shift in share_shifts]
