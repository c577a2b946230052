"""Train section: image and painted labels, settings, Start/Stop, live progress and plot."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._common import format_seconds, start_worker
from ._job_section import JobSection
from ._layers import (
    find_layer,
    image_axes,
    image_channels,
    image_data,
    put_labels,
    put_labels_plane,
    result_name,
    spatial_shape,
)
from ._notify import report_exception, show_error, show_warning
from ._pickers import LayerPicker

if TYPE_CHECKING:
    import napari

    from ._session import Session

MODES = {
    "sparse": ("strokes", "0 unpainted (ignored), 1 background, 2, 3, ... classes"),
    "objects": ("strokes, objects", "0 unpainted, 1 background, each object its own id from 2"),
    "dense": ("dense masks", "every pixel labelled: 0 background, 1, 2, ... classes"),
    "objects-dense": ("dense objects", "every pixel labelled: 0 background, one id per object"),
}
LOSSES = ["auto", "bce+dice", "dice", "bce", "ce+dice", "ce"]
SCRATCH, FINE_TUNE = "new model (from scratch)", "current model (fine-tune)"
#: A new model for a stack: 2-D plane by plane, or 3-D (sees neighbouring planes); the
#: default is 3-D, from the measurements in docs/benchmarks.md (stacks painted on a few planes).
NETWORKS = {3: "3-D (sees neighbouring planes)", 2: "2-D (plane by plane)"}
#: The plot and the status text are redrawn at most this often (seconds).
REDRAW_INTERVAL = 0.1


class TrainSection(JobSection):
    """Trains the session's model (or a new one) on a painted Labels layer in a worker thread."""

    job_name = "training"

    def __init__(
        self, viewer: napari.Viewer, session: Session, parent: QWidget | None = None
    ) -> None:
        super().__init__("Train", viewer, session, "Start training", "Stop", parent)
        from napari.layers import Image, Labels

        #: Extra ``TrainConfig`` settings (e.g. ``{"batch_size": 4}``) for scripting and tests.
        self.extra_settings: dict[str, Any] = {}
        self.history: Any = None
        self._image: Any = None
        self._preview_plane: tuple[int, ...] | None = None
        self._last_draw = 0.0
        self._preview_shape: tuple[int, ...] = ()
        self._steps_per_epoch = 25

        self.image_picker = LayerPicker(viewer, Image, placeholder="(no image layer)")
        self.labels_picker = LayerPicker(viewer, Labels, placeholder="(no Labels layer)")
        self.image_picker.currentIndexChanged.connect(self._image_changed)
        self.mode = QComboBox()
        for number, (key, (text, meaning)) in enumerate(MODES.items()):
            self.mode.addItem(text, key)
            self.mode.setItemData(number, meaning, Qt.ItemDataRole.ToolTipRole)
        self.mode.setToolTip("How the labels were painted; hover over a choice for its meaning.")
        self.loss = QComboBox()
        self.loss.addItems(LOSSES)
        self.loss.setToolTip("auto: BCE + Dice for two classes, cross-entropy + Dice for more.")
        self.budget = QSpinBox()
        self.budget.setRange(1, 100_000)
        self.budget.setValue(60)
        self.budget_unit = QComboBox()
        self.budget_unit.addItems(["seconds", "epochs"])
        self.budget_unit.currentTextChanged.connect(
            lambda unit: self.budget.setValue(self._default_seconds() if unit == "seconds" else 20)
        )
        budget = QHBoxLayout()
        budget.addWidget(self.budget)
        budget.addWidget(self.budget_unit)
        self.learning_rate = QDoubleSpinBox()
        self.learning_rate.setDecimals(4)
        self.learning_rate.setRange(0.0001, 0.5)
        self.learning_rate.setSingleStep(0.0005)
        self.learning_rate.setValue(0.003)
        self.validation = QDoubleSpinBox()
        self.validation.setRange(0.0, 0.5)
        self.validation.setSingleStep(0.05)
        self.validation.setValue(0.15)
        self.validation.setToolTip(
            "Share of the painted pixels held out to measure validation Dice."
        )
        self.start_from = QComboBox()
        self.start_from.addItems([SCRATCH, FINE_TUNE])
        self.network = QComboBox()
        for dims, text in NETWORKS.items():
            self.network.addItem(text, dims)
        self.network.setToolTip(
            "For a stack, a new model is 3-D (it learns from the planes above and below the "
            "painted ones) or 2-D (each plane alone). Single images always use 2-D."
        )
        self.network.currentIndexChanged.connect(self._network_changed)
        self.live_preview = QCheckBox("preview the visible plane after each epoch")
        self.live_preview.setChecked(True)

        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.progress.setTextVisible(False)
        self.status.setText("Paint 1 on background and 2 on objects, then press Start.")
        from ._plot import LossPlot

        self.plot = LossPlot()

        form = QFormLayout()
        form.addRow("image", self.image_picker)
        form.addRow("painted labels", self.labels_picker)
        form.addRow("painting", self.mode)
        form.addRow("loss", self.loss)
        form.addRow("stop after", budget)
        rates = QHBoxLayout()
        rates.addWidget(self.learning_rate)
        rates.addWidget(QLabel("validation share"))
        rates.addWidget(self.validation)
        form.addRow("learning rate", rates)
        form.addRow("start from", self.start_from)
        form.addRow("network", self.network)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.live_preview)
        layout.addLayout(self.buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.plot)
        viewer.layers.events.inserted.connect(self._image_changed)
        self._image_changed()

    # ------------------------------------------------------------------ pickers

    def _image_changed(self, *_: Any) -> None:
        """Choose a Labels layer that fits the image, preferring one that is not a result."""
        image = self.image_picker.layer()
        self.network.setEnabled(image is not None and self.network_choices(image) == (2, 3))
        self._network_changed()
        if image is None or self.session.busy == "training":
            return
        shape = spatial_shape(image)
        labels = self.labels_picker.layer()
        if labels is not None and labels.data.shape == shape and labels.name != result_name(image):
            return
        from napari.layers import Labels

        fitting = [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Labels) and layer.data.shape == shape
        ]
        fitting.sort(key=lambda layer: layer.name == result_name(image))
        if fitting:
            self.labels_picker.set_layer(fitting[0])

    def _busy(self, busy: str) -> None:
        super()._busy(busy)
        training = busy == self.job_name
        for widget in (self.image_picker, self.labels_picker, self.mode, self.start_from):
            widget.setEnabled(not training)
        image = self.image_picker.layer()
        self.network.setEnabled(
            not training and image is not None and self.network_choices(image) == (2, 3)
        )

    def _default_seconds(self) -> int:
        """A 3-D step takes several times a 2-D one: its default budget is 180 s, not 60 s."""
        return 180 if self.network.currentData() == 3 and self.network.isEnabled() else 60

    def _network_changed(self, *_: Any) -> None:
        """Switch the time budget between the defaults, unless the user chose another."""
        if self.budget_unit.currentText() == "seconds" and self.budget.value() in (60, 180):
            self.budget.setValue(self._default_seconds())

    @staticmethod
    def network_choices(image: Any) -> tuple[int, ...]:
        """(2, 3) for a stack (a Z axis before Y and X), (2,) for a single image."""
        return (2, 3) if len(spatial_shape(image)) > 2 else (2,)

    def spatial_dims(self, image: Any) -> int:
        """The kind of new model this image gets: the choice for a stack, else 2-D."""
        if self.network_choices(image) == (2,):
            return 2
        return int(self.network.currentData())

    # ------------------------------------------------------------------ settings

    def settings(self) -> dict[str, Any]:
        """The ``TrainConfig`` settings chosen in the form."""
        seconds = self.budget_unit.currentText() == "seconds"
        return {
            "mode": self.mode.currentData(),
            "loss": self.loss.currentText(),
            "max_seconds": float(self.budget.value()) if seconds else None,
            "max_epochs": None if seconds else int(self.budget.value()),
            "learning_rate": float(self.learning_rate.value()),
            "validation_fraction": float(self.validation.value()),
            **self.extra_settings,
        }

    # ------------------------------------------------------------------ start / stop

    def start(self) -> Any:
        """Check the inputs, then train in a worker thread; returns the worker (or None)."""
        from ._jobs import NewModel, train_job

        if self.another_job_runs():
            return None
        image = self.image_picker.layer()
        labels_layer = self.labels_picker.layer()
        if image is None:
            show_error(
                "There is no image layer to train on. Open an image (File > Open, or File > Open "
                "Sample > U-Net Segmentation), then choose it under Train > image."
            )
            return None
        if labels_layer is None:
            show_error(
                "There is no Labels layer to learn from. Add one with the 'New labels layer' "
                f"button while '{image.name}' is selected, paint background with 1 and objects "
                "with 2, then press Start."
            )
            return None
        current = self.session.segmenter
        scratch = current is None or self.start_from.currentText() == SCRATCH
        expected = spatial_shape(image)
        if (scratch or current.config.in_channels == image_channels(image)) and (
            labels_layer.data.shape != expected
        ):
            show_error(
                f"The Labels layer '{labels_layer.name}' has shape {labels_layer.data.shape} but "
                f"the image '{image.name}' needs labels of shape {expected}. Paint on a Labels "
                f"layer made for this image (select '{image.name}', then 'New labels layer')."
            )
            return None
        new_model = None
        if scratch:
            width, depth = 16, 4
            if current is not None and current.config.origin == "native":
                width, depth = current.config.encoder_channels[0], current.config.depth
            dims = self.spatial_dims(image)
            voxel = tuple(float(v) for v in image.scale[-3:]) if dims == 3 else None
            new_model = NewModel(
                in_channels=image_channels(image),
                base_width=width,
                depth=depth,
                spatial_dims=dims,
                voxel_size=voxel,
            )
        try:
            settings = self.settings()
            from napari_unetseg.core import TrainConfig, UnetSegError

            TrainConfig(**settings)
        except UnetSegError as error:
            show_error(f"Training settings: {error}")
            return None

        axes = image_axes(image)
        self._preview_plane = None
        if self.live_preview.isChecked() and labels_layer.name != result_name(image):
            self._prepare_preview(image, axes, current if not scratch else None)
        self._image = image
        self.history = None
        self._steps_per_epoch = int(settings.get("steps_per_epoch", 25))
        self.plot.clear()
        stop = self.begin("Checking the painting…")
        painted = np.array(labels_layer.data, copy=True)  # the painted layer is never written to
        self.worker = start_worker(
            train_job,
            None if scratch else current,
            new_model,
            image_data(image),
            painted,
            settings,
            axes,
            stop,
            self._preview_plane,
            connect={
                "yielded": self._on_event,
                "errored": self._on_error,
                "finished": self._on_finished,
            },
        )
        return self.worker

    def _prepare_preview(self, image: Any, axes: str | None, model: Any) -> None:
        """Pick the visible plane, and make the result layer now so previews update in place."""
        from napari_unetseg.core import UnetSegError
        from napari_unetseg.core.layout import resolve_layout

        from ._layers import visible_stack_index

        channels = model.config.in_channels if model is not None else image_channels(image)
        try:
            layout = resolve_layout(image_data(image), channels, axes)
        except UnetSegError:
            return  # the worker reports the same problem with the training inputs
        self._preview_plane = visible_stack_index(self.viewer, image, layout.axes)
        self._preview_shape = layout.output_shape
        existing = find_layer(self.viewer, result_name(image))
        if existing is None or existing.data.shape != layout.output_shape:
            put_labels(self.viewer, image, np.zeros(layout.output_shape, np.uint8))

    def stop(self) -> None:
        """Ask training to end after the current step; the best weights are kept."""
        self.request_stop("Stopping after this step…")

    # ------------------------------------------------------------------ events (main thread)

    def _on_event(self, event: Any) -> None:
        from napari_unetseg.core import EpochDone, StepDone, TrainingDone, TrainingStarted

        from ._jobs import ModelCreated, Preview

        if isinstance(event, StepDone):
            self.plot.add_step(event.step / self._steps_per_epoch, event.loss)
            now = time.monotonic()
            if now - self._last_draw >= REDRAW_INTERVAL:
                self._last_draw = now
                self._show_progress(event.elapsed, event.remaining)
                self.status.setText(
                    f"epoch {event.epoch} · step {event.step} · loss {event.loss:.3f} · "
                    f"{format_seconds(event.elapsed)} elapsed, "
                    f"{format_seconds(event.remaining)} left" + self._best_text()
                )
                self.plot.redraw()
        elif isinstance(event, EpochDone):
            self.plot.add_epoch(
                event.step / self._steps_per_epoch, event.train_loss, event.validation_dice
            )
            self._best = event.best_validation_dice
            self.plot.redraw()
        elif isinstance(event, Preview) and self._image is not None:
            put_labels_plane(
                self.viewer, self._image, event.index, event.labels, self._preview_shape
            )
        elif isinstance(event, ModelCreated):
            self.session.segmenter = event.segmenter
        elif isinstance(event, TrainingStarted):
            self._best = None
            held = (
                f", {event.validation_pixels:,} held out for validation"
                if event.validation_pixels
                else ""
            )
            note = (
                f" {event.validation_note[:1].upper()}{event.validation_note[1:]}."
                if event.validation_note
                else ""
            )
            model = self.session.segmenter
            kind = "3-D U-Net" if model is not None and model.is_3d else "2-D U-Net"
            self.status.setText(
                f"Training a {kind} on {event.device}: {event.train_pixels:,} painted pixels"
                f"{held}.{note}"
            )
        elif isinstance(event, TrainingDone):
            self.history = event.history
            h = event.history
            why = {
                "time": "time budget spent",
                "epochs": "all epochs done",
                "stopped": "stopped",
                "error": "failed",
            }.get(h.stop_reason, h.stop_reason)
            dice = (
                f", best validation Dice {h.best_validation_dice:.3f}"
                if h.best_validation_dice
                else ""
            )
            self.progress.setValue(1000)
            kept = (
                "The model is unchanged."
                if h.steps == 0
                else "The best weights are kept; press Segment."
            )
            self.status.setText(
                f"Done ({why}): {h.steps} steps, {h.epochs} epochs in "
                f"{format_seconds(h.elapsed)}{dice}. {kept}"
            )
            for warning in h.warnings:
                show_warning(f"Training: {warning}")

    _best: float | None = None

    def _best_text(self) -> str:
        return f" · best validation Dice {self._best:.3f}" if self._best is not None else ""

    def _show_progress(self, elapsed: float, remaining: float | None) -> None:
        if remaining is not None:
            self.progress.setValue(int(1000 * elapsed / max(elapsed + remaining, 1e-9)))

    def _on_error(self, error: BaseException) -> None:
        self.status.setText("Training did not run; see the message.")
        report_exception(error, "Training")

    def _on_finished(self) -> None:
        super()._on_finished()
        if self.history is not None and self.history.steps > 0:
            self.start_from.setCurrentText(FINE_TUNE)
            self.session.changed.emit(self.session.segmenter)  # show how it was trained
