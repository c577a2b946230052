"""``napari-unetseg demo``: napari with the sample loaded and the widget docked."""

from __future__ import annotations

from ._docking import PLUGIN, WIDGET, dock

__all__ = ["PLUGIN", "WIDGET", "fit_window", "launch_demo", "open_demo"]

#: The demo window's size where the screen allows: room for the image beside the dock.
DEMO_SIZE = (1280, 800)


def open_demo(viewer: object) -> object:
    """Load the sample into ``viewer`` and dock the widget; returns the widget."""
    viewer.open_sample(PLUGIN, "nuclei")  # type: ignore[attr-defined]
    widget = dock(viewer)
    viewer.layers.selection.active = viewer.layers["nuclei strokes"]  # type: ignore[attr-defined]
    return widget


def fit_window(viewer: object, size: tuple[int, int] = DEMO_SIZE) -> tuple[int, int]:
    """Resize the window to ``size``, or to the screen's free area if that is smaller."""
    window = viewer.window._qt_window  # type: ignore[attr-defined]
    screen = window.screen() if hasattr(window, "screen") else None
    width, height = size
    if screen is not None:
        free = screen.availableGeometry()
        frame = window.frameGeometry().height() - window.geometry().height()
        width, height = min(width, free.width()), min(height, free.height() - max(frame, 0))
        window.move(free.x() + (free.width() - width) // 2, free.y())
    window.resize(width, height)
    return width, height


def launch_demo() -> None:
    """Open napari with the nuclei sample and the U-Net widget, and run it until closed."""
    import napari

    viewer = napari.Viewer(title="napari-unetseg demo")
    fit_window(viewer)
    open_demo(viewer)
    viewer.reset_view()
    napari.run()
