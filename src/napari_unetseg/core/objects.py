"""Object (instance) labels from background / interior / boundary probabilities."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential, watershed


def interior_seeds(
    interior: np.ndarray, erosion: int, structure: np.ndarray | None = None
) -> np.ndarray:
    """Connected regions of confident interior, shrunk by ``erosion`` pixels to cut thin bridges.

    A region that the erosion would remove entirely is kept as it is, so small objects
    keep their seed.
    """
    regions: np.ndarray = ndi.label(interior)[0]
    if erosion <= 0:
        return regions
    shrunk = ndi.binary_erosion(interior, structure=structure, iterations=erosion)
    survivors = np.unique(regions[shrunk])
    vanished = interior & ~np.isin(regions, survivors)
    seeds: np.ndarray = ndi.label(shrunk | vanished)[0]
    return seeds


def objects_from_probabilities(
    probs: np.ndarray,
    min_size: int = 15,
    seed_erosion: int = 2,
    structure: np.ndarray | None = None,
) -> np.ndarray:
    """One id per object from (background, interior, boundary) probabilities.

    Seeds are regions of confident interior (shrunk a little so that touching objects whose
    interiors meet in a thin bridge get a seed each); a watershed on the interior probability
    grows them over the foreground, which separates touching objects along the predicted
    boundaries. Objects smaller than ``min_size`` pixels are dropped and ids are made
    consecutive from 1 (uint32). Works on planes (3, Y, X) and volumes (3, Z, Y, X);
    ``structure`` is the erosion's neighbourhood (default: the faces of a pixel or voxel).
    """
    background, interior = probs[0], probs[1]
    foreground = background < 0.5
    seeds = interior_seeds((interior > 0.5) & foreground, seed_erosion, structure)
    if seeds.max() == 0:
        return np.zeros(probs.shape[1:], np.uint32)
    ids = watershed(-interior, markers=seeds, mask=foreground)
    if min_size > 0:
        sizes = np.bincount(ids.ravel())
        small = sizes < min_size
        small[0] = False
        if small.any():
            ids[small[ids]] = 0
    relabelled: np.ndarray = relabel_sequential(ids)[0]
    return relabelled.astype(np.uint32, copy=False)
