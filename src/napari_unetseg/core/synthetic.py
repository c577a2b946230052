"""Deterministic synthetic scenes with ground truth and sparse 'painted' strokes.

Used by the bundled sample, the tests and the benchmarks: nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import disk, ellipse, line, polygon, rectangle
from skimage.morphology import dilation
from skimage.morphology import disk as disk_footprint


@dataclass(frozen=True)
class Scene:
    """An image, its ground truth, and painted labels like a person would make.

    ``classes``: 0 background, 1 the target class. ``instances``: one id per object.
    ``painted``: sparse class strokes (0 unpainted, 1 background, 2 target class).
    ``painted_objects``: sparse object painting (0 unpainted, 1 background, 2.. one id per
    fully painted object).
    """

    image: np.ndarray
    classes: np.ndarray
    instances: np.ndarray
    painted: np.ndarray
    painted_objects: np.ndarray

    @property
    def painted_fraction(self) -> float:
        return float(np.mean(self.painted > 0))


def _place_ellipses(
    shape: tuple[int, int],
    n: int,
    radius: tuple[float, float],
    rng: np.random.Generator,
    touch: float,
) -> np.ndarray:
    """Non-overlapping ellipses; ``touch`` < 1 lets neighbours press against each other."""
    instances = np.zeros(shape, np.int32)
    placed = 0
    for _ in range(n * 40):
        if placed >= n:
            break
        ry, rx = rng.uniform(*radius, size=2)
        cy = rng.uniform(ry + 2, shape[0] - ry - 2)
        cx = rng.uniform(rx + 2, shape[1] - rx - 2)
        rr, cc = ellipse(cy, cx, ry, rx, shape=shape, rotation=rng.uniform(0, np.pi))
        # Allow a thin overlap so some objects touch; the newer one keeps the shared pixels.
        rr_core, cc_core = ellipse(cy, cx, ry * touch, rx * touch, shape=shape)
        if instances[rr_core, cc_core].any():
            continue
        placed += 1
        instances[rr, cc] = placed
    return instances


def _strokes(
    mask: np.ndarray, n: int, length: int, rng: np.random.Generator, width: int
) -> np.ndarray:
    """Short brush strokes that stay inside ``mask``."""
    out = np.zeros(mask.shape, bool)
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return out
    for _ in range(n):
        k = rng.integers(len(ys))
        y0, x0 = ys[k], xs[k]
        angle = rng.uniform(0, 2 * np.pi)
        y1 = int(np.clip(y0 + length * np.sin(angle), 0, mask.shape[0] - 1))
        x1 = int(np.clip(x0 + length * np.cos(angle), 0, mask.shape[1] - 1))
        rr, cc = line(int(y0), int(x0), y1, x1)
        out[rr, cc] = True
    grown: np.ndarray = dilation(out, disk_footprint(width))
    inside: np.ndarray = grown & mask
    return inside


def nuclei_scene(
    shape: tuple[int, int] = (512, 512), seed: int = 0, n_nuclei: int | None = None
) -> Scene:
    """Fluorescence-like nuclei: touching, varied size and brightness, uneven background, noise.

    About 6 % of the pixels are painted: strokes through some nuclei (label 2) and through
    the background (label 1).
    """
    rng = np.random.default_rng(seed)
    area = shape[0] * shape[1]
    n = n_nuclei if n_nuclei is not None else max(4, int(area / 2600))
    instances = _place_ellipses(shape, n, (7.0, 14.0), rng, touch=0.8)
    classes = (instances > 0).astype(np.uint8)

    brightness = rng.uniform(0.45, 1.0, instances.max() + 1)
    brightness[0] = 0
    signal = brightness[instances]
    texture = ndi.gaussian_filter(rng.normal(0, 1, shape), 2)
    signal = signal * (1 + 0.15 * texture)
    signal = ndi.gaussian_filter(signal, 1.2)  # optics
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] / max(shape)
    background = 0.12 + 0.10 * np.sin(2.5 * yy + 1.0) * np.cos(1.7 * xx) + 0.08 * xx
    expected = 900 * (signal + background)
    image = rng.poisson(expected) + rng.normal(0, 12, shape) + 100
    image = np.clip(image, 0, 65535).astype(np.uint16)

    inner = ndi.binary_erosion(classes > 0, iterations=1)
    outer = ~ndi.binary_dilation(classes > 0, iterations=1)
    stroke_count = max(2, int(area / 4000))
    fg = _strokes(inner, 2 * stroke_count, 14, rng, 2)
    bg = _strokes(outer, stroke_count, 40, rng, 2)
    painted = np.zeros(shape, np.uint8)
    painted[bg] = 1
    painted[fg] = 2

    # Object painting: a background stroke set and whole nuclei, each with its own id.
    painted_objects = np.zeros(shape, np.uint16)
    painted_objects[bg] = 1
    ids = rng.permutation(np.arange(1, instances.max() + 1))[: max(3, instances.max() // 3)]
    for new_id, old_id in enumerate(ids, start=2):
        painted_objects[instances == old_id] = new_id
    return Scene(image, classes, instances, painted, painted_objects)


def shapes_scene(shape: tuple[int, int] = (256, 256), seed: int = 0) -> Scene:
    """Ellipses (target class) among rectangles and triangles of the same brightness.

    The network must learn shape, not intensity, to segment only the ellipses.
    """
    rng = np.random.default_rng(seed)
    instances = np.zeros(shape, np.int32)
    distractors = np.zeros(shape, bool)
    area = shape[0] * shape[1]
    n_each = max(3, int(area / 5000))
    next_id = 0
    for _ in range(n_each * 30):
        if next_id >= n_each:
            break
        r = rng.uniform(8, 16)
        cy, cx = rng.uniform(r + 2, shape[0] - r - 2), rng.uniform(r + 2, shape[1] - r - 2)
        rr, cc = ellipse(
            cy, cx, r, r * rng.uniform(0.6, 1.0), shape=shape, rotation=rng.uniform(0, np.pi)
        )
        halo_r, halo_c = disk((cy, cx), r + 4, shape=shape)
        if instances[halo_r, halo_c].any() or distractors[halo_r, halo_c].any():
            continue
        next_id += 1
        instances[rr, cc] = next_id
    placed = 0
    for _ in range(n_each * 30):
        if placed >= n_each:
            break
        s = rng.uniform(12, 26)
        cy, cx = rng.uniform(s + 2, shape[0] - s - 2), rng.uniform(s + 2, shape[1] - s - 2)
        if rng.random() < 0.5:
            rr, cc = rectangle(
                (cy - s / 2, cx - s / 2), extent=(s, s * rng.uniform(0.6, 1.0)), shape=shape
            )
        else:
            rr, cc = polygon(
                np.array([cy - s / 2, cy + s / 2, cy + s / 2]),
                np.array([cx, cx - s / 2, cx + s / 2]),
                shape=shape,
            )
        halo = np.zeros(shape, bool)
        halo[rr, cc] = True
        halo = ndi.binary_dilation(halo, iterations=4)
        if (instances[halo] > 0).any() or distractors[halo].any():
            continue
        placed += 1
        distractors[rr, cc] = True
    classes = (instances > 0).astype(np.uint8)
    signal = ndi.gaussian_filter(((instances > 0) | distractors).astype(float), 1.0)
    image = (200 * signal + 30 + rng.normal(0, 10, shape)).clip(0, 255).astype(np.uint8)

    inner = ndi.binary_erosion(classes > 0, iterations=1)
    fg = _strokes(inner, 3 * n_each, 10, rng, 2)
    bg_region = ~ndi.binary_dilation((instances > 0) | distractors, iterations=1)
    bg = _strokes(bg_region, 2 * n_each, 30, rng, 2)
    # Paint across the distractors too: they are background, and they teach the shape.
    bg |= _strokes(ndi.binary_erosion(distractors, iterations=1), 3 * n_each, 10, rng, 2)
    painted = np.zeros(shape, np.uint8)
    painted[bg] = 1
    painted[fg] = 2
    painted_objects = np.where(instances > 0, instances + 1, painted == 1).astype(np.uint16)
    return Scene(image, classes, instances.astype(np.uint16), painted, painted_objects)


def _blob_plane(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Ellipses of one typical size, free to overlap, each with its own brightness."""
    instances = np.zeros((size, size), np.int32)
    radius = rng.uniform(4, 22)
    count = max(1, int(rng.uniform(0.15, 0.5) * size * size / (np.pi * radius * radius)))
    for index in range(count):
        ry = radius * rng.uniform(0.6, 1.4)
        rx = ry * rng.uniform(0.5, 1.0)
        cy, cx = rng.uniform(0, size), rng.uniform(0, size)
        rr, cc = ellipse(cy, cx, ry, rx, (size, size), rotation=rng.uniform(0, np.pi))
        instances[rr, cc] = index + 1
    brightness = np.zeros(count + 1)
    brightness[1:] = rng.uniform(0.3, 1.0, count)
    texture_strength = rng.uniform(0, 0.6)
    texture = ndi.gaussian_filter(rng.normal(size=(size, size)), rng.uniform(1, 3))
    image = brightness[instances] * (1 + texture_strength * texture * 3)
    return image, instances > 0


def _wall_plane(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The walls between Voronoi cells, one to four pixels thick, on dim cell interiors."""
    from scipy.spatial import cKDTree
    from skimage.segmentation import find_boundaries

    cell = rng.uniform(10, 40)
    count = max(4, int(size * size / (cell * cell)))
    seeds = rng.uniform(0, size, (count, 2))
    yy, xx = np.mgrid[:size, :size]
    _, nearest = cKDTree(seeds).query(np.stack([yy.ravel(), xx.ravel()], 1))
    cells = nearest.reshape(size, size) + 1
    walls = find_boundaries(cells, mode="thick" if rng.random() < 0.5 else "inner")
    if rng.random() < 0.5:
        walls = ndi.binary_dilation(walls)
    wall_brightness = rng.uniform(0.4, 1.0)
    interior_brightness = rng.uniform(0, 0.3) * rng.random(count + 1)
    image = walls * wall_brightness + ~walls * interior_brightness[cells]
    return image.astype(float), walls


def varied_plane(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """One plane of blobs or cell walls, blurred, on a tilted background, with noise; a
    third of them inverted (dark structures on a bright background).

    Returns the image (float32, unnormalised) and the structures' mask.
    """
    image, structures = (_blob_plane if rng.random() < 0.5 else _wall_plane)(rng, size)
    image = ndi.gaussian_filter(image, rng.uniform(0.5, 2.0))
    yy, xx = np.mgrid[:size, :size] / size
    tilt = rng.uniform(0, 0.3)
    image = image + tilt * (yy * rng.normal() + xx * rng.normal())
    noise = rng.uniform(0.02, 0.25)
    image = image + noise * rng.normal(size=image.shape)
    if rng.random() < 0.3:
        image = -image
    return image.astype(np.float32), structures


def varied_planes(n_planes: int, seed: int = 0, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A stack of :func:`varied_plane` planes, each scaled to 0-1000, and dense labels
    (1 background, 2 structure): the scenes the starting weights are trained on."""
    rng = np.random.default_rng(seed)
    planes = [varied_plane(rng, size) for _ in range(n_planes)]
    images = np.stack([image for image, _ in planes])
    labels = np.stack([structures for _, structures in planes]).astype(np.uint8) + 1
    low = images.min(axis=(1, 2), keepdims=True)
    high = images.max(axis=(1, 2), keepdims=True)
    images = (images - low) / (high - low) * 1000
    return images.astype(np.float32), labels
