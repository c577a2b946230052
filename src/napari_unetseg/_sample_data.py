"""Sample data: a real tissue-nuclei image with strokes painted on its left half."""

from __future__ import annotations

from typing import Any


def nuclei_sample() -> list[tuple[Any, dict[str, Any], str]]:
    """A 512x512 DAPI image of nuclei in tissue and a Labels layer of painted strokes.

    In the strokes, 1 marks background and 2 marks nuclei; 0 is unpainted and ignored. Only
    the left half is painted: train, segment, and judge the right half.
    """
    from napari_unetseg.core.sample import tissue_nuclei

    scene = tissue_nuclei()
    return [
        (scene.image, {"name": "nuclei", "colormap": "gray"}, "image"),
        (scene.painted, {"name": "nuclei strokes", "opacity": 0.8}, "labels"),
    ]
