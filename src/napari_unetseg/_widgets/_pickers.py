"""A combo box of the viewer's layers of one type that follows the layer list."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import QComboBox

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer


class LayerPicker(QComboBox):
    """Layers of ``layer_type``, by name; keeps the choice across additions and renames.

    Layers are matched by name, never by identity: napari hands plugins proxies of its
    objects, so the same layer may come as different Python objects.
    """

    def __init__(
        self,
        viewer: napari.Viewer,
        layer_type: type,
        accept: Callable[[Layer], bool] | None = None,
        placeholder: str = "(none)",
    ) -> None:
        super().__init__()
        self._viewer = viewer
        self._type = layer_type
        self._accept = accept or (lambda layer: True)
        self._placeholder = placeholder
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        events = viewer.layers.events
        for emitter in (events.inserted, events.removed, events.moved, events.reordered):
            emitter.connect(self.refresh)
        self.refresh()

    def _layers(self) -> list[Layer]:
        return [
            layer
            for layer in self._viewer.layers
            if isinstance(layer, self._type) and self._accept(layer)
        ]

    def refresh(self, event: Any = None) -> None:
        """List the layers again, keeping the chosen one (by position after a rename)."""
        before = self.currentData()
        names = [layer.name for layer in self._layers()]
        for layer in self._layers():
            layer.events.name.connect(self._renamed)
        self.blockSignals(True)
        try:
            self.clear()
            if not names:
                self.addItem(self._placeholder, None)
            for name in names:
                self.addItem(name, name)
            if before in names:
                self.setCurrentIndex(names.index(before))
        finally:
            self.blockSignals(False)
        if self.currentData() != before:
            self.currentIndexChanged.emit(self.currentIndex())

    def _renamed(self, event: Any = None) -> None:
        names = [layer.name for layer in self._layers()]
        if len(names) != self.count():
            self.refresh()
            return
        for i, name in enumerate(names):
            self.setItemText(i, name)
            self.setItemData(i, name)

    def layer(self) -> Any:
        """The chosen layer, or None."""
        name = self.currentData()
        return next((layer for layer in self._layers() if layer.name == name), None)

    def set_layer(self, layer: Layer) -> None:
        """Choose ``layer`` (refreshing first if it was just added)."""
        index = self.findData(layer.name)
        if index < 0:
            self.refresh()
            index = self.findData(layer.name)
        if index >= 0:
            self.setCurrentIndex(index)
