"""Live training: a toggle that trains until stopped and learns each new stroke as it comes.

:class:`PaintFeed` hands the painting to the worker without the worker touching the layer:
each stroke (napari's ``paint`` and ``data`` events, main thread) passes on the layer's array
and bumps a version, and the core's training loop, after every epoch, asks the feed, which
copies that array in the worker's thread when the version has changed. The copy never runs in
the main thread, so a large stack does not stall napari. The same goes for the visible plane
the preview follows.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import QPushButton

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels

    from ._train_section import TrainSection

#: In live mode, the visible plane is predicted again this often (seconds).
LIVE_PREVIEW_SECONDS = 3.0


class PaintFeed:
    """The painting of a Labels layer, and the plane on screen, for a training worker.

    Calling the feed returns a copy of the paint as of the last stroke, made when first
    asked for after that stroke; the same copy until the next stroke. The layer is only read.
    """

    def __init__(
        self,
        viewer: napari.Viewer,
        labels: Labels,
        image: Image | None = None,
        layout_axes: str | None = None,
    ) -> None:
        self._viewer, self._labels, self._image = viewer, labels, image
        self._layout_axes = layout_axes
        self._lock = threading.Lock()
        self._source = labels.data  # the layer's array, passed on in the main thread
        self._version = 0  # strokes seen
        self._copied: tuple[int, np.ndarray] | None = None
        self._plane: tuple[int, ...] = self._visible()
        self.copies = 0
        labels.events.paint.connect(self._painted)
        labels.events.data.connect(self._painted)
        viewer.dims.events.current_step.connect(self._scrolled)

    def __call__(self) -> np.ndarray:
        """A copy of the paint as of the last stroke (called from the worker)."""
        with self._lock:
            source, version, copied = self._source, self._version, self._copied
        if copied is not None and copied[0] == version:
            return copied[1]
        paint = np.array(source, copy=True)  # a stroke during the copy bumps the version again
        with self._lock:
            self._copied = (version, paint)
            self.copies += 1
        return paint

    def plane(self) -> tuple[int, ...]:
        """The stack index of the plane on screen (called from the worker)."""
        with self._lock:
            return self._plane

    def close(self) -> None:
        """Stop following the layer and the viewer."""
        self._labels.events.paint.disconnect(self._painted)
        self._labels.events.data.disconnect(self._painted)
        self._viewer.dims.events.current_step.disconnect(self._scrolled)

    def _painted(self, event: Any = None) -> None:
        with self._lock:
            self._source = self._labels.data
            self._version += 1

    def _scrolled(self, event: Any = None) -> None:
        plane = self._visible()
        with self._lock:
            self._plane = plane

    def _visible(self) -> tuple[int, ...]:
        if self._image is None or self._layout_axes is None:
            return ()
        from ._layers import visible_stack_index

        return visible_stack_index(self._viewer, self._image, self._layout_axes)


class LiveToggle(QPushButton):
    """ "Live": trains in the background until pressed again (or Stop); new strokes join in."""

    def __init__(self, section: TrainSection) -> None:
        super().__init__("Live")
        self.section = section
        self.setCheckable(True)
        self.setToolTip(
            "Train continuously: strokes you paint meanwhile are learnt at the next epoch "
            "and the visible plane's preview updates every few seconds. Press again or Stop "
            "to end; the weights are kept."
        )
        self.toggled.connect(self._toggled)
        section.session.busy_changed.connect(self._busy)

    def _toggled(self, on: bool) -> None:
        if on:
            if self.section.start(live=True) is None:
                self._set_quietly(False)  # the section said why
        else:
            self.section.stop()

    def _busy(self, busy: str) -> None:
        self.setEnabled(not busy or (busy == "training" and self.isChecked()))
        if not busy and self.isChecked():
            self._set_quietly(False)  # the run has ended

    def _set_quietly(self, on: bool) -> None:
        self.blockSignals(True)
        self.setChecked(on)
        self.blockSignals(False)


def add_live_toggle(section: TrainSection) -> LiveToggle:
    """Put the Live toggle beside the section's Start and Stop buttons."""
    toggle = LiveToggle(section)
    section.buttons.addWidget(toggle)
    return toggle


def paint_update_text(event: Any) -> str:
    """A note for the status line about a ``PaintUpdated`` event."""
    if event.problem:
        return f" · new paint not used yet: {event.problem}"
    return f" · new paint learnt from epoch {event.epoch}: {event.train_pixels:,} px"


def live_feed(
    section: TrainSection, image: Image, labels: Labels, axes: str | None
) -> tuple[PaintFeed, dict[str, Any]]:
    """The paint feed of a live run and the ``train_job`` options that go with it."""
    options: dict[str, Any] = {"until_stopped": True}
    layout_axes = preview_axes(section, image, axes) if section._preview_plane is not None else None
    feed = PaintFeed(section.viewer, labels, image, layout_axes)
    if layout_axes is not None:
        options["preview_plane"] = feed.plane  # follows the plane on screen
    return feed, options


def preview_axes(section: TrainSection, image: Image, axes: str | None) -> str | None:
    """The image's axes as the core reads them (e.g. "ZYX"), or None when it cannot."""
    from napari_unetseg.core import UnetSegError
    from napari_unetseg.core.layout import resolve_layout

    from ._layers import image_channels, image_data

    model = section.session.segmenter
    for channels in {model.config.in_channels if model else 1, image_channels(image)}:
        try:
            return resolve_layout(image_data(image), channels, axes).axes
        except UnetSegError:
            continue
    return None
