"""One U-Net dock per viewer, whichever way it is opened (menu, layer menu, API)."""

from __future__ import annotations

from typing import Any

PLUGIN = "napari-unetseg"
WIDGET = "U-Net Segmentation"
#: The dock's title. The manifest's display name is the plugin's name, so that napari's
#: Plugins menu and ``add_plugin_dock_widget(PLUGIN, WIDGET)`` name (and so share) one dock.
DOCK_NAME = f"{WIDGET} ({PLUGIN})"


def find_widget(viewer: Any) -> Any:
    """The U-Net widget docked in ``viewer``'s window, or None."""
    from ._main import UNetSegWidget

    docked = getattr(viewer.window, "dock_widgets", {})
    return next((w for w in docked.values() if isinstance(w, UNetSegWidget)), None)


def dock(viewer: Any) -> Any:
    """The viewer's U-Net widget, docked (and shown) if it was not yet; returns the widget."""
    widget = find_widget(viewer)
    if widget is None:
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    dock_frame = widget.parent()
    while dock_frame is not None and not hasattr(dock_frame, "setFloating"):
        dock_frame = dock_frame.parent()
    if dock_frame is not None:
        dock_frame.show()
        dock_frame.raise_()
    return widget
