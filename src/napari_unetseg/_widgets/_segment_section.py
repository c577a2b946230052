"""Segment section: image, tile size, planes, device; Segment/Cancel with a progress bar."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QCheckBox,
    QLabel,
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

        self.start_button.clicked.connect(lambda: self.run())
        self.stop_button.clicked.connect(self.cancel)

        self.planes_label = QLabel("stacks")
        form = narrow_form()
        form.addRow("image", self.image_picker)
        form.addRow(self.planes_label, self.planes)
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
