"""``napari-unetseg demo``: napari with the sample loaded and the widget docked."""

from __future__ import annotations

PLUGIN = "napari-unetseg"
WIDGET = "U-Net Segmentation"


def open_demo(viewer: object) -> object:
    """Load the sample into ``viewer`` and dock the widget; returns the widget."""
    viewer.open_sample(PLUGIN, "nuclei")  # type: ignore[attr-defined]
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)  # type: ignore[attr-defined]
    viewer.layers.selection.active = viewer.layers["nuclei strokes"]  # type: ignore[attr-defined]
    return widget


def launch_demo() -> None:
    """Open napari with the nuclei sample and the U-Net widget, and run it until closed."""
    import napari

    viewer = napari.Viewer(title="napari-unetseg demo")
    open_demo(viewer)
    napari.run()
