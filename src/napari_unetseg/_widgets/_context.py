"""Layer context-menu command "Segment with U-Net"."""

from __future__ import annotations

from napari.viewer import Viewer

from ._notify import show_error


def segment_with_unet(viewer: Viewer) -> None:
    """Segment the selected image layer with the widget's current model (docking the widget once)."""
    from napari.layers import Image

    from ._docking import dock

    layer = viewer.layers.selection.active
    if not isinstance(layer, Image):
        show_error("Select an image layer first, then choose 'Segment with U-Net'.")
        return
    widget = dock(viewer)
    widget.segment_section.image_picker.set_layer(layer)
    widget.segment_section.run(layer)
