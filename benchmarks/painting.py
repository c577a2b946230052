"""A person's painting, simulated from dense ground truth, for the real-image benchmarks.

Strokes go on one part of the image only (the left half by default); the rest is scored.

- :func:`paint_strokes`: lines along the inside of some objects (or along walls) and short lines
  across the background, like a few minutes with napari's brush. 0 unpainted, 1 background,
  2 foreground.
- :func:`paint_discs`: the same classes as round dabs of the brush instead of lines.
- :func:`paint_objects`: whole objects, each with its own id from 2, plus background strokes.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import line
from skimage.morphology import disk


def _run_along(inside: np.ndarray, y: int, x: int, angle: float, half_length: int) -> np.ndarray:
    """Pixels of a straight line through (y, x), cut where it first leaves ``inside``."""
    dy, dx = np.sin(angle), np.cos(angle)
    ends = []
    for sign in (-1, 1):
        rr, cc = line(y, x, round(y + sign * dy * half_length), round(x + sign * dx * half_length))
        keep = (rr >= 0) & (rr < inside.shape[0]) & (cc >= 0) & (cc < inside.shape[1])
        rr, cc = rr[keep], cc[keep]
        outside = np.nonzero(~inside[rr, cc])[0]
        stop = outside[0] if len(outside) else len(rr)
        ends.append((rr[:stop], cc[:stop]))
    rr = np.concatenate([ends[0][0], ends[1][0]])
    cc = np.concatenate([ends[0][1], ends[1][1]])
    return np.stack([rr, cc])


def _stroke(
    inside: np.ndarray, rng: np.random.Generator, length: int, tries: int = 8
) -> np.ndarray | None:
    """The longest of a few random lines through a random point of ``inside`` (a person follows
    the shape they paint)."""
    ys, xs = np.nonzero(inside)
    if len(ys) == 0:
        return None
    i = rng.integers(len(ys))
    best = None
    for angle in rng.uniform(0, np.pi, tries):
        run = _run_along(inside, int(ys[i]), int(xs[i]), float(angle), length // 2)
        if best is None or run.shape[1] > best.shape[1]:
            best = run
    return best


def _paint_class(
    painted: np.ndarray,
    inside: np.ndarray,
    value: int,
    n_pixels: int,
    rng: np.random.Generator,
    length: tuple[int, int],
    width: int,
    one_per_object: np.ndarray | None = None,
    tries: int = 10_000,
) -> None:
    """Strokes of ``value`` inside ``inside`` until about ``n_pixels`` are painted (or
    ``tries`` strokes were attempted)."""
    inside = inside.copy()
    brush = disk(width // 2) if width > 1 else None
    done = 0
    for _ in range(tries):
        if done >= n_pixels or not inside.any():
            break
        run = _stroke(inside, rng, int(rng.integers(*length)))
        if run is None or run.shape[1] < 3:
            continue
        stroke = np.zeros(painted.shape, bool)
        stroke[run[0], run[1]] = True
        if brush is not None:
            stroke = ndi.binary_dilation(stroke, brush) & inside
        new = stroke & (painted == 0)
        painted[new] = value
        done += int(new.sum())
        if one_per_object is not None:
            # a person paints a line in some objects, not many lines in one
            ids = np.unique(one_per_object[stroke])
            inside &= ~np.isin(one_per_object, ids[ids > 0])
        else:
            inside &= ~ndi.binary_dilation(stroke, iterations=6)


def paint_region(shape: tuple[int, int], part: str = "left") -> np.ndarray:
    """Where a person paints: the left half (the right half is scored), or "all" of it."""
    region = np.zeros(shape, bool)
    half = shape[1] // 2
    if part == "all":
        region[:] = True
    elif part == "left":
        region[:, :half] = True
    else:
        region[:, half:] = True
    return region


def paint_strokes(
    foreground: np.ndarray,
    rng: np.random.Generator,
    *,
    instances: np.ndarray | None = None,
    thin: bool = False,
    fraction: float = 0.015,
    foreground_share: float = 0.4,
    part: str = "left",
) -> np.ndarray:
    """Class strokes on the left half (or ``part="all"`` of the image): 0 unpainted,
    1 background, 2 foreground.

    ``fraction`` of that part is painted, ``foreground_share`` of it foreground. Strokes keep a
    margin from the class border, as a person's do. ``thin`` foregrounds (walls, membranes) get a
    one-pixel brush along their middle.
    """
    region = paint_region(foreground.shape, part)
    budget = fraction * region.sum()
    painted = np.zeros(foreground.shape, np.uint8)
    if thin:
        inside_fg = ndi.binary_erosion(foreground, iterations=1) & region
        _paint_class(painted, inside_fg, 2, int(budget * foreground_share), rng, (20, 60), 1)
    else:
        inside_fg = ndi.binary_erosion(foreground, disk(2)) & region
        _paint_class(
            painted, inside_fg, 2, int(budget * foreground_share), rng, (10, 60), 3, instances
        )
    inside_bg = ndi.binary_erosion(~foreground, disk(3)) & region
    _paint_class(painted, inside_bg, 1, int(budget * (1 - foreground_share)), rng, (15, 45), 3)
    return painted


def paint_discs(
    foreground: np.ndarray,
    rng: np.random.Generator,
    *,
    instances: np.ndarray | None = None,
    radius: int = 4,
    fraction: float = 0.015,
    foreground_share: float = 0.4,
) -> np.ndarray:
    """Class dabs on the left half: discs of ``radius``, one per chosen object (1 px or more
    inside it) and across the background (3 px or more from the foreground, 6 radii apart).
    0 unpainted, 1 background, 2 foreground, as :func:`paint_strokes`."""
    region = paint_region(foreground.shape)
    budget = fraction * region.sum()
    centres = ndi.binary_erosion(region, disk(radius), border_value=1)  # whole dabs in the region
    painted = np.zeros(foreground.shape, np.uint8)
    yy, xx = np.ogrid[: foreground.shape[0], : foreground.shape[1]]
    for value, inside, n_pixels in (
        (2, ndi.binary_erosion(foreground, disk(radius + 1)) & centres, foreground_share * budget),
        (
            1,
            ndi.binary_erosion(~foreground, disk(radius + 2)) & centres,
            (1 - foreground_share) * budget,
        ),
    ):
        ys, xs = np.nonzero(inside)
        done = 0
        for i in rng.permutation(len(ys)):
            if done >= n_pixels:
                break
            y, x = ys[i], xs[i]
            if not inside[y, x]:
                continue
            dab = (yy - y) ** 2 + (xx - x) ** 2 <= radius**2
            new = dab & (painted == 0)
            painted[new] = value
            done += int(new.sum())
            if value == 2 and instances is not None:
                inside &= instances != instances[y, x]  # one dab per object
            else:
                inside &= (yy - y) ** 2 + (xx - x) ** 2 > (6 * radius) ** 2
    return painted


def paint_objects(
    instances: np.ndarray,
    rng: np.random.Generator,
    *,
    n_objects: int = 30,
    background_fraction: float = 0.01,
    part: str = "left",
) -> np.ndarray:
    """Whole objects on the left half (or ``part="all"``), each with its own id from 2, and
    background strokes (1)."""
    region = paint_region(instances.shape, part)
    inside = np.unique(instances[region])
    crossing = np.unique(instances[~region])
    candidates = np.setdiff1d(inside[inside > 0], crossing)
    chosen = rng.choice(candidates, min(n_objects, len(candidates)), replace=False)
    painted = np.zeros(instances.shape, np.uint16)
    for new_id, old_id in enumerate(chosen, start=2):
        painted[instances == old_id] = new_id
    inside_bg = ndi.binary_erosion(instances == 0, disk(3)) & region
    _paint_class(painted, inside_bg, 1, int(background_fraction * region.sum()), rng, (15, 45), 3)
    return painted
