"""The bundled sample: a real tissue-nuclei image with painted strokes and its expert labels.

Strokes cover the left half only, so the right half shows how well training carries over to
pixels nobody painted. See ``napari_unetseg/_data/SOURCE.txt`` for its origin.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .synthetic import Scene

DATA = Path(__file__).resolve().parent.parent / "_data"


def _read(name: str) -> np.ndarray:
    import tifffile

    array: np.ndarray = tifffile.imread(DATA / f"tissue_nuclei{name}.tif")
    return array


def tissue_nuclei() -> Scene:
    """512x512 DAPI nuclei in tissue (Kromp et al. 2020), strokes on the left half.

    ``painted``: 0 unpainted, 1 background, 2 nuclei. ``painted_objects``: 20 whole nuclei
    (ids from 2) and background strokes (1). ``classes`` and ``instances``: expert labels.
    """
    instances = _read("_truth")
    return Scene(
        image=_read(""),
        classes=(instances > 0).astype(np.uint8),
        instances=instances,
        painted=_read("_strokes"),
        painted_objects=_read("_objects"),
    )
