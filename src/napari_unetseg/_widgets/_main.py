"""The dock widget: Model, Train and Segment sections sharing one model per viewer."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QEvent, QSize, Qt, QTimer
from qtpy.QtWidgets import QScrollArea, QVBoxLayout, QWidget

from ._common import WarmUp, device_text
from ._model_section import ModelSection
from ._segment_section import SegmentSection
from ._session import session_for
from ._suggest import SuggestSection
from ._train_section import TrainSection

if TYPE_CHECKING:
    import napari


#: The dock's width when napari first docks it: at 1280 px the image keeps over 500 px.
PREFERRED_WIDTH = 360


class UNetSegWidget(QWidget):
    """Paint strokes, train a U-Net, segment: one dock widget for napari-unetseg."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.model_section = ModelSection(self.session)
        self.train_section = TrainSection(napari_viewer, self.session)
        self.segment_section = SegmentSection(napari_viewer, self.session)
        self.suggest_section = SuggestSection(napari_viewer, self.session, self.train_section)

        self.content = QWidget()
        column = QVBoxLayout(self.content)
        column.setContentsMargins(4, 4, 4, 4)
        column.setSpacing(6)
        column.addWidget(self.model_section)
        column.addWidget(self.train_section)
        column.addWidget(self.segment_section)
        column.addWidget(self.suggest_section)  # after Segment: it needs a trained model
        column.addStretch(1)
        # Rows wrap and stack instead of widening, so the dock never scrolls sideways: its
        # minimum width is the content's own (see fit_width), which is the truth.
        self.scroll_area = QScrollArea()
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll_area.setWidget(self.content)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.scroll_area)
        self._fit_pending = False
        self.content.installEventFilter(self)  # refit whenever the content's layout changes
        self.fit_width()

        napari_viewer.layers.selection.events.active.connect(self._follow_active)
        self._follow_active()
        self.warm_up: QTimer | None = None
        if "torch._dynamo" in sys.modules:
            self._show_device(device_text())
        else:  # import torch off the main thread so that docking stays instant
            self._warming: WarmUp | None = None  # started at the first tick: after docking
            self.warm_up = QTimer(self)  # dies with the widget: no callback after close
            self.warm_up.setInterval(100)
            self.warm_up.timeout.connect(self._check_warm_up)
            self.warm_up.start()

    def eventFilter(self, watched: Any, event: Any) -> bool:
        relayout = watched is self.content and event.type() == QEvent.Type.LayoutRequest
        if relayout and not self._fit_pending:
            self._fit_pending = True
            QTimer.singleShot(0, self.fit_width)
        return False

    def fit_width(self, *_: Any) -> None:
        """Make the reported minimum width the width the content needs, scroll bar included."""
        self._fit_pending = False
        frame = 2 * self.scroll_area.frameWidth()
        bar = self.scroll_area.verticalScrollBar().sizeHint().width()
        self.scroll_area.setMinimumWidth(self.content.minimumSizeHint().width() + bar + frame)
        self.updateGeometry()

    def sizeHint(self) -> QSize:
        hint = super().sizeHint()
        return QSize(max(self.minimumSizeHint().width(), PREFERRED_WIDTH), hint.height())

    def _check_warm_up(self) -> None:
        if self._warming is None:  # napari has finished docking: its thread competes no more
            self._warming = WarmUp.start()
            return
        if not self._warming.done or self.warm_up is None:
            return
        self.warm_up.stop()
        self.warm_up.deleteLater()
        self.warm_up = None
        if self._warming.text is not None:
            self._show_device(self._warming.text)

    def _show_device(self, text: str) -> None:
        self.segment_section.device.setText(text)

    def _follow_active(self, event: Any = None) -> None:
        """Pickers follow the layer the user selects, unless a job is running."""
        from napari.layers import Image, Labels

        layer = self.viewer.layers.selection.active
        if layer is None or self.session.busy:
            return
        if isinstance(layer, Image) and not layer.name.endswith((" probabilities", " uncertainty")):
            self.train_section.image_picker.set_layer(layer)
            self.segment_section.image_picker.set_layer(layer)
        elif isinstance(layer, Labels) and not layer.name.endswith(" segmentation"):
            self.train_section.labels_picker.set_layer(layer)

    @property
    def segmenter(self) -> Any:
        """The model all sections share (also ``napari_unetseg._widgets.current_segmenter``)."""
        return self.session.segmenter
