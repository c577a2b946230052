"""A combo box of the viewer's layers of one type that follows the layer list."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import QComboBox

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer


class LayerPicker(QComboBox):
    """Layers of ``layer_type`` by name; keeps the choice across renames and additions."""

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
        current = self.layer()
        layers = self._layers()
        for layer in layers:
            layer.events.name.connect(self._renamed)
        self.blockSignals(True)
        try:
            self.clear()
            if not layers:
                self.addItem(self._placeholder, None)
            for layer in layers:
                self.addItem(layer.name, layer)
            if current is not None and current in layers:
                self.setCurrentIndex(layers.index(current))
        finally:
            self.blockSignals(False)
        if current is not self.layer():
            self.currentIndexChanged.emit(self.currentIndex())

    def _renamed(self, event: Any = None) -> None:
        for i in range(self.count()):
            layer = self.itemData(i)
            if layer is not None:
                self.setItemText(i, layer.name)

    def layer(self) -> Any:
        """The chosen layer, or None."""
        layer = self.currentData()
        return layer if layer is not None and layer in self._viewer.layers else None

    def set_layer(self, layer: Layer) -> None:
        for i in range(self.count()):
            if self.itemData(i) is layer:
                self.setCurrentIndex(i)
                return
