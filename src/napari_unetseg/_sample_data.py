"""Sample data: the bundled nuclei image with sparse painted strokes (made on the fly)."""

from __future__ import annotations

from typing import Any


def nuclei_sample() -> list[tuple[Any, dict[str, Any], str]]:
    """A 512x512 fluorescence-like nuclei image and a Labels layer of painted strokes.

    In the strokes, 1 marks background and 2 marks nuclei; 0 is unpainted and ignored.
    """
    from napari_unetseg.core.synthetic import nuclei_scene

    scene = nuclei_scene()
    return [
        (scene.image, {"name": "nuclei", "colormap": "gray"}, "image"),
        (scene.painted, {"name": "nuclei strokes", "opacity": 0.8}, "labels"),
    ]
