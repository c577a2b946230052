"""Segment section: image, tile size, planes, device; Segment/Cancel with a progress bar."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._common import Fold, compact, narrow_combo, narrow_form, note_label, start_worker
from ._job_section import JobSection
from ._layers import (
    find_layer,
    image_axes,
    image_data,
    object_colormap,
    painting_for,
    put_labels,
    put_probabilities,
    result_colormap,
    result_name,
    spatial_shape,
)
from ._notify import report_exception, show_error, show_warning
from ._pickers import LayerPicker

if TYPE_CHECKING:
    import napari

    from ._session import Session

ALL_PLANES, VISIBLE_PLANE = "all planes", "visible plane only (quick preview)"
#: PredictConfig's default tile size (kept here so that docking does not import the core).
DEFAULT_TILE_SIZE = 576
#: The border slider: steps per unit of foreground log-odds, and its reach either way.
BORDER_STEPS_PER_UNIT = 4
BORDER_REACH = 4
#: Quiet time after the slider last moved before the model changes and the result updates.
BORDER_SETTLE_MS = 350


class SegmentSection(JobSection):
    """Segments an image layer with the session's model into "<image> segmentation"."""

    job_name = "segmenting"

    def __init__(
        self, viewer: napari.Viewer, session: Session, parent: QWidget | None = None
    ) -> None:
        super().__init__("Segment", viewer, session, "Segment", "Cancel", parent)
        from napari.layers import Image

        self._job: dict[str, Any] = {}

        self.image_picker = LayerPicker(viewer, Image, placeholder="(no image layer)")
        self.image_picker.currentIndexChanged.connect(self._image_changed)
        self.probabilities = QCheckBox("also add a probability layer")
        self.tile_size = QSpinBox()
        self.tile_size.setRange(128, 4096)
        self.tile_size.setSingleStep(64)
        self.tile_size.setValue(DEFAULT_TILE_SIZE)
        self.tile_size.setSuffix(" px")
        self.tile_size.setToolTip("Large images are segmented in overlapping tiles of this size.")
        self.planes = narrow_combo()
        self.planes.addItems([ALL_PLANES, VISIBLE_PLANE])
        self.planes.setToolTip("For stacks: every plane, or only the one on screen.")
        self.device = note_label("checking…")
        self.device.setObjectName("device")
        self._make_border_control()

        self.start_button.clicked.connect(lambda: self.run())
        self.stop_button.clicked.connect(self.cancel)

        self.planes_label = QLabel("stacks")
        form = narrow_form()
        form.addRow("image", self.image_picker)
        form.addRow(self.planes_label, self.planes)
        form.addRow(self.border_label, self._border_row)
        advanced = narrow_form()
        advanced.addRow(self.probabilities)
        advanced.addRow("tile size", self.tile_size)
        advanced.addRow("device", self.device)
        self.advanced = Fold("Advanced")
        self.advanced.add(advanced)
        layout = QVBoxLayout(self)
        compact(layout)
        layout.addLayout(form)
        layout.addWidget(self.advanced)
        layout.addLayout(self.buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        self._image_changed()
        session.changed.connect(self._follow_model)
        session.busy_changed.connect(self._follow_model)
        self._follow_model()

    def _image_changed(self, *_: Any) -> None:
        image = self.image_picker.layer()
        stack = image is not None and len(spatial_shape(image)) > 2
        self.planes.setEnabled(stack)
        for widget in (self.planes_label, self.planes):  # the row shows for stacks only
            widget.setVisible(stack)

    def run(self, image: Any = None) -> Any:
        """Segment ``image`` (default: the chosen layer) in a worker; returns the worker or None."""
        from napari_unetseg.core import UnetSegError
        from napari_unetseg.core.layout import resolve_layout

        from ._layers import visible_stack_index

        segmenter = self.session.segmenter
        image = image if image is not None else self.image_picker.layer()
        if self.another_job_runs():
            return None
        if image is None:
            show_error(
                "There is no image layer to segment. Open an image (File > Open), then choose it "
                "under Segment > image."
            )
            return None
        if segmenter is None:
            show_error(
                "There is no model yet: train one under Train, or load a weights file under Model."
            )
            return None
        if not segmenter.is_trained:
            show_warning(
                "This model is not trained yet, so its segmentation is meaningless. Train it first."
            )
        axes = image_axes(image)
        data = image_data(image)
        planes = None
        try:
            layout = resolve_layout(data, segmenter.config.in_channels, axes)
        except UnetSegError as error:
            show_error(f"Cannot segment '{image.name}': {error}")
            return None
        if self.planes.currentText() == VISIBLE_PLANE and layout.stack_shape:
            planes = [visible_stack_index(self.viewer, image, layout.axes)]
        self._job = {
            "image": image,
            "planes": planes,
            "objects": segmenter.is_objects,
            "colors": self._colors(segmenter, image),
        }
        cancel = self.begin(f"Segmenting '{image.name}'…")
        from ._jobs import segment_job

        self.worker = start_worker(
            segment_job,
            segmenter,
            data,
            axes,
            int(self.tile_size.value()),
            self.probabilities.isChecked(),
            planes,
            cancel,
            connect={
                "yielded": self._on_progress,
                "returned": self._on_result,
                "errored": self._on_error,
                "finished": self._on_finished,
            },
        )
        return self.worker

    def cancel(self) -> None:
        """Stop after the current batch of tiles; the previous result layer is left as it was."""
        self.request_stop("Cancelling…")

    # ------------------------------------------------------------------ main thread

    def _on_progress(self, progress: Any) -> None:
        self.progress.setValue(int(1000 * progress.fraction))
        plane = (
            f", plane {progress.plane + 1} of {progress.n_planes}" if progress.n_planes > 1 else ""
        )
        self.status.setText(f"tile {progress.tiles_done} of {progress.tiles_total}{plane}")

    def _on_result(self, prediction: Any) -> None:
        if prediction is None:
            self.status.setText("Cancelled; earlier results are unchanged.")
            self.progress.setValue(0)
            return
        image = self._job.get("image")
        if image is None or find_layer(self.viewer, image.name) is None:
            return
        if prediction.labels is not None:
            layer = put_labels(
                self.viewer,
                image,
                prediction.labels,
                planes=self._job["planes"],
                colormap=self._job["colors"],
            )
            found = int(layer.data.max()) if self._job["objects"] else None
            extra = f": {found} objects" if found is not None else ""
            self.status.setText(f"Done{extra}. Result in the layer '{result_name(image)}'.")
        if prediction.probabilities is not None:
            put_probabilities(self.viewer, image, prediction.probabilities, self._job["objects"])
        self.progress.setValue(1000)

    def _colors(self, segmenter: Any, image: Any) -> Any:
        """Objects in a palette; classes in their colours in the painting of this image."""
        if segmenter.is_objects:
            return object_colormap()
        mode = str((segmenter.config.training or {}).get("mode", "sparse"))
        return result_colormap(painting_for(self.viewer, image), mode, segmenter.config.n_classes)

    def _on_error(self, error: BaseException) -> None:
        self.status.setText(report_exception(error, "Segmentation failed"))

    # ------------------------------------------------------------------ the border

    def _make_border_control(self) -> None:
        self.border = QSlider(Qt.Orientation.Horizontal)
        reach = BORDER_REACH * BORDER_STEPS_PER_UNIT
        self.border.setRange(-reach, reach)
        self.border.setPageStep(BORDER_STEPS_PER_UNIT)
        self.border.setToolTip(
            "Where the border between background and foreground lies. Left: less foreground "
            "(thinner walls, smaller objects); right: more. The result updates when you let "
            "go, and the model keeps the setting when saved. Two-class and object models."
        )
        self.border_value = QLabel("0")
        self.border_value.setMinimumWidth(
            self.border_value.fontMetrics().horizontalAdvance("+0.00")
        )
        self._border_row = QWidget()
        row = QHBoxLayout(self._border_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("less"))
        row.addWidget(self.border, 1)
        row.addWidget(QLabel("more"))
        row.addWidget(self.border_value)
        self.border_label = QLabel("border")
        self._border_timer = QTimer(self)
        self._border_timer.setSingleShot(True)
        self._border_timer.setInterval(BORDER_SETTLE_MS)
        self._border_timer.timeout.connect(self._apply_border)
        self.border.valueChanged.connect(self._border_moved)

    def _follow_model(self, *_: Any) -> None:
        """Show the border control for a two-class or object model, at its setting."""
        segmenter = self.session.segmenter
        movable = segmenter is not None and segmenter.can_move_border
        for widget in (self.border_label, self._border_row):
            widget.setVisible(movable)
        self.border.setEnabled(movable and self.session.busy != "training")
        if segmenter is not None and not self._border_timer.isActive():
            self.border.blockSignals(True)
            self.border.setValue(round(segmenter.config.border_moved * BORDER_STEPS_PER_UNIT))
            self.border.blockSignals(False)
            self._show_border(self.border.value())

    def _show_border(self, steps: int) -> None:
        self.border_value.setText(f"{steps / BORDER_STEPS_PER_UNIT:+.2f}" if steps else "0")

    def _border_moved(self, steps: int) -> None:
        self._show_border(steps)
        self._border_timer.start()  # restarts while the slider keeps moving

    def _apply_border(self) -> None:
        """Move the model's border to the slider's setting; segment again if a result shows."""
        from napari_unetseg.core import UnetSegError

        segmenter = self.session.segmenter
        if segmenter is None or not segmenter.can_move_border:
            return
        if self.session.busy == self.job_name:  # a segmentation runs: move after it
            self._border_timer.start()
            return
        if self.session.busy:
            show_warning(f"Wait until {self.session.busy} has finished to move the border.")
            self._follow_model()
            return
        target = self.border.value() / BORDER_STEPS_PER_UNIT
        try:
            segmenter.move_border(target - segmenter.config.border_moved)
        except UnetSegError as error:
            show_error(f"Cannot move the border: {error}")
            self._follow_model()
            return
        self.session.changed.emit(segmenter)  # the model section shows it is not saved
        image = self._job.get("image")
        shown = image is not None and image in self.viewer.layers
        if shown and find_layer(self.viewer, result_name(image)) is not None:
            self.run(image)
        else:
            self.status.setText(f"Border moved to {target:+.2f}; press Segment to see it.")
