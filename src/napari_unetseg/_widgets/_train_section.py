"""Train section: image and painted labels, settings, Start/Stop, live progress and plot."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_unetseg.core.config import (  # no torch import
    DEFAULT_DEPTH,
    DEFAULT_MAX_EPOCHS,
    DEFAULT_SECONDS,
    TrainConfig,
)

from ._common import (
    Fold,
    compact,
    format_seconds,
    narrow_combo,
    narrow_form,
    start_worker,
    tall_screen,
)
from ._job_section import JobSection
from ._layers import (
    find_layer,
    image_axes,
    image_channels,
    image_data,
    put_labels,
    put_labels_plane,
    result_colormap,
    result_name,
    spatial_shape,
)
from ._notify import report_exception, show_error, show_warning
from ._pickers import LayerPicker

#: Default time budgets in the form: a 3-D step takes several times a 2-D one.
DEFAULT_SECONDS_2D = round(DEFAULT_SECONDS[2])
DEFAULT_SECONDS_3D = round(DEFAULT_SECONDS[3])

if TYPE_CHECKING:
    import napari

    from napari_unetseg.core.training_events import StepDone, TrainingDone, TrainingStarted

    from ._jobs import NewModel
    from ._session import Session

MODES = {
    "sparse": ("strokes", "0 unpainted (ignored), 1 background, 2, 3, ... classes"),
    "objects": (
        "strokes, objects",
        "0 unpainted, 1 background, each object its own id from 2; paint objects whole: "
        "the pixels just outside each one are learnt as background",
    ),
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
        #: Extra ``TrainConfig`` settings (e.g. ``{"batch_size": 4}``) for scripting and tests.
        self.extra_settings: dict[str, Any] = {}
        self.history: Any = None
        self._image: Any = None
        self._preview_plane: tuple[int, ...] | None = None
        self._last_draw = 0.0
        self._preview_shape: tuple[int, ...] = ()
        self._steps_per_epoch = 25

        self._make_main_controls(viewer)
        self._make_advanced_controls()
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.progress.setTextVisible(False)
        self.status.setText("Paint 1 on background and 2 on objects, then press Start.")
        from ._plot import LossPlot

        self.plot = LossPlot()
        self._lay_out()
        session.changed.connect(self._follow_model)
        self._follow_model()
        viewer.layers.events.inserted.connect(self._image_changed)
        self._image_changed()

    def _make_main_controls(self, viewer: napari.Viewer) -> None:
        from napari.layers import Image, Labels

        self.image_picker = LayerPicker(viewer, Image, placeholder="(no image layer)")
        self.labels_picker = LayerPicker(viewer, Labels, placeholder="(no Labels layer)")
        self.image_picker.currentIndexChanged.connect(self._image_changed)
        self.mode = narrow_combo()
        for number, (key, (text, meaning)) in enumerate(MODES.items()):
            self.mode.addItem(text, key)
            self.mode.setItemData(number, meaning, Qt.ItemDataRole.ToolTipRole)
        self.mode.setToolTip("How the labels were painted; hover over a choice for its meaning.")
        self.budget = QSpinBox()
        self.budget.setRange(1, 100_000)
        self.budget.setValue(DEFAULT_SECONDS_2D)
        self.budget_unit = narrow_combo(7)
        self.budget_unit.addItems(["seconds", "epochs"])
        self.budget_unit.currentTextChanged.connect(
            lambda unit: self.budget.setValue(self._default_seconds() if unit == "seconds" else 20)
        )
        # a widget, not a bare layout: the form then sees its true minimum
        self._budget_row = QWidget()
        budget_row = QHBoxLayout(self._budget_row)
        budget_row.setContentsMargins(0, 0, 0, 0)
        budget_row.addWidget(self.budget, 1)
        budget_row.addWidget(self.budget_unit, 1)
        self.start_from = narrow_combo()
        self.start_from.addItems([SCRATCH, FINE_TUNE])
        self.live_preview = QCheckBox("preview the visible plane")
        self.live_preview.setToolTip(
            "After each epoch, segment the plane on screen into '<image> segmentation'."
        )
        self.live_preview.setChecked(True)

    def _make_advanced_controls(self) -> None:
        self.loss = narrow_combo(8)
        self.loss.addItems(LOSSES)
        self.loss.setToolTip("auto: BCE + Dice for two classes, cross-entropy + Dice for more.")
        self.learning_rate = QDoubleSpinBox()
        self.learning_rate.setDecimals(4)
        self.learning_rate.setRange(0.0001, 0.5)
        self.learning_rate.setSingleStep(0.0005)
        self.learning_rate.setValue(TrainConfig.learning_rate)
        self.validation = QDoubleSpinBox()
        self.validation.setRange(0.0, 0.5)
        self.validation.setSingleStep(0.05)
        self.validation.setValue(0.15)
        self.validation.setToolTip(
            "Share of the painted pixels held out to measure validation Dice."
        )
        self.base_width = QSpinBox()
        self.base_width.setRange(4, 128)
        self.base_width.setValue(16)
        self.base_width.setToolTip("Channels of the first level of a new model (doubling below).")
        self.depth_box = QSpinBox()
        self.depth_box.setRange(2, 6)
        self.depth_box.setValue(DEFAULT_DEPTH[2])
        self.depth_box.setToolTip("Levels of a new model: deeper sees more context, trains slower.")
        self.synthetic_start = QCheckBox("weights trained on synthetic scenes")
        self.synthetic_start.setChecked(True)
        self.synthetic_start.setToolTip(
            "A new two-class 2-D model of width 16 and depth 4 starts from weights that already "
            "know blobs, edges and walls (better after a minute on a few strokes). Unchecked, "
            "or for any other model: random weights."
        )
        self.network = narrow_combo()
        for dims, text in NETWORKS.items():
            self.network.addItem(text, dims)
        self.network.setToolTip(
            "For a stack, a new model is 3-D (it learns from the planes above and below the "
            "painted ones) or 2-D (each plane alone). Single images always use 2-D."
        )
        self.network.currentIndexChanged.connect(self._network_changed)

    def _lay_out(self) -> None:
        form = narrow_form()
        form.addRow("image", self.image_picker)
        form.addRow("painted labels", self.labels_picker)
        form.addRow("painting", self.mode)
        form.addRow("stop after", self._budget_row)
        form.addRow("start from", self.start_from)
        self.network_label = QLabel("network")
        form.addRow(self.network_label, self.network)
        advanced = narrow_form()
        advanced.addRow("loss", self.loss)
        advanced.addRow("learning rate", self.learning_rate)
        advanced.addRow("validation share", self.validation)
        advanced.addRow("base width (new model)", self.base_width)
        advanced.addRow("depth (new model)", self.depth_box)
        advanced.addRow("start (new model)", self.synthetic_start)
        self.advanced = Fold("Advanced")
        self.advanced.add(advanced)
        self.plot_fold = Fold("Loss and validation Dice", expanded=tall_screen())
        self.plot_fold.add(self.plot)
        layout = QVBoxLayout(self)
        compact(layout)
        layout.addLayout(form)
        layout.addWidget(self.live_preview)
        layout.addWidget(self.advanced)
        from ._live import add_live_toggle

        self.live = add_live_toggle(self)
        layout.addLayout(self.buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.plot_fold)

    # ------------------------------------------------------------------ pickers

    def _image_changed(self, *_: Any) -> None:
        """Choose a Labels layer that fits the image, preferring one that is not a result."""
        image = self.image_picker.layer()
        stack = image is not None and self.network_choices(image) == (2, 3)
        self.network.setEnabled(stack)
        for widget in (self.network_label, self.network):  # the row shows for stacks only
            widget.setVisible(stack)
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
        for widget in (
            self.image_picker,
            self.labels_picker,
            self.mode,
            self.start_from,
            self.base_width,
            self.depth_box,
            self.synthetic_start,
        ):
            widget.setEnabled(not training)
        image = self.image_picker.layer()
        self.network.setEnabled(
            not training and image is not None and self.network_choices(image) == (2, 3)
        )

    def _default_seconds(self) -> int:
        """A 3-D step takes several times a 2-D one: its default budget is 180 s, not 60 s."""
        return DEFAULT_SECONDS_3D if self._is_3d_chosen() else DEFAULT_SECONDS_2D

    def _is_3d_chosen(self) -> bool:
        return bool(self.network.currentData() == 3 and self.network.isEnabled())

    def _network_changed(self, *_: Any) -> None:
        """Switch the time budget, learning rate and depth between the 2-D and 3-D defaults,
        unless the user chose others."""
        seconds = (DEFAULT_SECONDS_2D, DEFAULT_SECONDS_3D)
        if self.budget_unit.currentText() == "seconds" and self.budget.value() in seconds:
            self.budget.setValue(self._default_seconds())
        defaults = (TrainConfig.learning_rate, TrainConfig.volume_learning_rate)
        if any(math.isclose(self.learning_rate.value(), rate) for rate in defaults):
            self.learning_rate.setValue(defaults[1] if self._is_3d_chosen() else defaults[0])
        if self.depth_box.value() in DEFAULT_DEPTH.values():
            self.depth_box.setValue(DEFAULT_DEPTH[3 if self._is_3d_chosen() else 2])

    @staticmethod
    def network_choices(image: Any) -> tuple[int, ...]:
        """(2, 3) for a stack (a Z axis before Y and X), (2,) for a single image."""
        return (2, 3) if len(spatial_shape(image)) > 2 else (2,)

    def spatial_dims(self, image: Any) -> int:
        """The kind of new model this image gets: the choice for a stack, else 2-D."""
        if self.network_choices(image) == (2,):
            return 2
        return int(self.network.currentData())

    def _follow_model(self, *_: Any) -> None:
        """A new model from scratch keeps the size of the current one unless changed here."""
        current = self.session.segmenter
        if current is None or self.session.busy or current.config.origin != "native":
            return
        self.base_width.setValue(int(current.config.encoder_channels[0]))
        self.depth_box.setValue(int(current.config.depth))

    # ------------------------------------------------------------------ settings

    def settings(self) -> dict[str, Any]:
        """The ``TrainConfig`` settings chosen in the form."""
        seconds = self.budget_unit.currentText() == "seconds"
        return {
            "mode": self.mode.currentData(),
            "loss": self.loss.currentText(),
            "max_seconds": float(self.budget.value()) if seconds else None,
            "max_epochs": DEFAULT_MAX_EPOCHS if seconds else int(self.budget.value()),  # cap
            # one box for both kinds of model: it shows the default of the network chosen
            "learning_rate": float(self.learning_rate.value()),
            "volume_learning_rate": float(self.learning_rate.value()),
            "validation_fraction": float(self.validation.value()),
            **self.extra_settings,
        }

    # ------------------------------------------------------------------ start / stop

    def start(self, live: bool = False) -> Any:
        """Check the inputs, then train in a worker thread; returns the worker (or None).

        ``live``: train until stopped, learning strokes painted meanwhile (see ``_live``).
        """
        from ._jobs import train_job

        if self.another_job_runs():
            return None
        layers = self._layers_to_train()
        if layers is None:
            return None
        image, labels_layer = layers
        current = self.session.segmenter
        scratch = self._from_scratch()
        new_model = self._new_model_spec(image) if scratch else None
        try:
            settings = self.settings()
            from napari_unetseg.core import UnetSegError

            TrainConfig(**settings)
        except UnetSegError as error:
            show_error(f"Training settings: {error}")
            return None

        axes = image_axes(image)
        self._preview_plane = None
        self._painting = labels_layer
        self._mode = str(settings["mode"])
        self._new_model = None
        if (live or self.live_preview.isChecked()) and labels_layer.name != result_name(image):
            self._prepare_preview(image, axes, current if not scratch else None)
        self._image = image
        self.history = None
        self._paint_note = ""
        self._steps_per_epoch = int(settings.get("steps_per_epoch", 25))
        stop = self.begin("Checking the painting…")
        painted: Any = np.array(labels_layer.data, copy=True)  # the layer is never written to
        live_options: dict[str, Any] = {}
        if live:
            from ._live import LIVE_PREVIEW_SECONDS, live_feed

            painted, live_options = live_feed(self, image, labels_layer, axes)
            live_options["preview_every"] = LIVE_PREVIEW_SECONDS
        self.worker = start_worker(
            train_job,
            None if scratch else current,
            new_model,
            image_data(image),
            painted,
            settings,
            axes,
            stop,
            live_options.pop("preview_plane", self._preview_plane),
            **live_options,
            connect={
                "yielded": self._on_event,
                "errored": self._on_error,
                "finished": self._on_finished,
            },
        )
        if live:
            self.worker.finished.connect(painted.close)
            self.viewer.layers.selection.active = labels_layer  # keep painting, not the result
        return self.worker

    def _layers_to_train(self) -> tuple[Any, Any] | None:
        """The chosen image and Labels layers, or None after telling the user what is wrong."""
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
        same_channels = current is not None and current.config.in_channels == image_channels(image)
        expected = spatial_shape(image)
        if (self._from_scratch() or same_channels) and labels_layer.data.shape != expected:
            show_error(
                f"The Labels layer '{labels_layer.name}' has shape {labels_layer.data.shape} but "
                f"the image '{image.name}' needs labels of shape {expected}. Paint on a Labels "
                f"layer made for this image (select '{image.name}', then 'New labels layer')."
            )
            return None
        return image, labels_layer

    def _from_scratch(self) -> bool:
        """True when training makes a new model: none is loaded, or the user asked for one."""
        return self.session.segmenter is None or self.start_from.currentText() == SCRATCH

    def _new_model_spec(self, image: Any) -> NewModel:
        """What a new model for ``image`` is made of, from the widget's settings."""
        from ._jobs import NewModel

        dims = self.spatial_dims(image)
        return NewModel(
            in_channels=image_channels(image),
            base_width=int(self.base_width.value()),
            depth=int(self.depth_box.value()),
            spatial_dims=dims,
            voxel_size=tuple(float(v) for v in image.scale[-3:]) if dims == 3 else None,
            start="auto" if self.synthetic_start.isChecked() else "random",
        )

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
        self._colors = self._result_colors(model)
        self._preview_shape = layout.output_shape
        existing = find_layer(self.viewer, result_name(image))
        if existing is None or existing.data.shape != layout.output_shape:
            put_labels(
                self.viewer, image, np.zeros(layout.output_shape, np.uint8), colormap=self._colors
            )

    def _result_colors(self, model: Any) -> Any:
        """The preview's colours: each class in its colour in the painting (objects: a palette)."""
        from ._jobs import classes_needed
        from ._layers import object_colormap

        if (model is not None and model.is_objects) or self._mode.startswith("objects"):
            return object_colormap()
        painted = self._painting.data if self._painting is not None else np.zeros(1, np.uint8)
        n_classes = (
            model.config.n_classes
            if model is not None
            else classes_needed(np.asarray(painted), self._mode)
        )
        return result_colormap(self._painting, self._mode, n_classes)

    def stop(self) -> None:
        """Ask training to end after the current step; the best weights are kept."""
        self.request_stop("Stopping after this step…")

    # ------------------------------------------------------------------ events (main thread)

    def _on_event(self, event: Any) -> None:
        from napari_unetseg.core import (
            EpochDone,
            PaintUpdated,
            StepDone,
            TrainingDone,
            TrainingStarted,
        )

        from ._jobs import ModelCreated, Preview

        if isinstance(event, StepDone):
            self._on_step(event)
        elif isinstance(event, EpochDone):
            self.plot.add_epoch(
                event.step / self._steps_per_epoch, event.train_loss, event.validation_dice
            )
            self._best = event.best_validation_dice
            self.plot.redraw()
        elif isinstance(event, Preview) and self._image is not None:
            put_labels_plane(
                self.viewer,
                self._image,
                event.index,
                event.labels,
                self._preview_shape,
                colormap=self._colors,
            )
        elif isinstance(event, PaintUpdated):
            from ._live import paint_update_text

            self._paint_note = paint_update_text(event)
            self.status.setText(self._paint_note.lstrip(" ·"))
        elif isinstance(event, ModelCreated):
            self._new_model = event.segmenter  # current only after its first step
        elif isinstance(event, TrainingStarted):
            self._on_started(event)
        elif isinstance(event, TrainingDone):
            self._on_done(event)

    def _on_step(self, event: StepDone) -> None:
        if self._new_model is not None:  # it has learnt: it becomes the current model
            self.session.segmenter, self._new_model = self._new_model, None
        self.plot.add_step(event.step / self._steps_per_epoch, event.loss)
        now = time.monotonic()
        if now - self._last_draw >= REDRAW_INTERVAL:
            self._last_draw = now
            self._show_progress(event.elapsed, event.remaining)
            self.status.setText(
                f"epoch {event.epoch} · step {event.step} · loss {event.loss:.3f} · "
                f"{format_seconds(event.elapsed)} elapsed, "
                + (
                    f"{format_seconds(event.remaining)} left"
                    if event.remaining is not None
                    else "live until stopped"
                )
                + self._best_text()
                + self._paint_note
            )
            self.plot.redraw()

    def _on_started(self, event: TrainingStarted) -> None:
        self._best = None
        self.plot.clear()  # the inputs passed their checks: a new curve begins
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
        model = self._new_model or self.session.segmenter  # a new one is current later
        kind = "3-D U-Net" if model is not None and model.is_3d else "2-D U-Net"
        if event.members > 1:
            kind = f"{kind} ({event.members} networks, averaged)"
        self.status.setText(
            f"Training a {kind} on {event.device}: {event.train_pixels:,} painted pixels"
            f"{held}.{note}"
        )
        for paint_note in event.paint_notes:  # at once: the user can stop and repaint
            show_warning(f"Paint: {paint_note}")
        self._shown_notes = frozenset(event.paint_notes)

    def _on_done(self, event: TrainingDone) -> None:
        self.history = event.history
        h = event.history
        why = {
            "time": "time budget spent",
            "epochs": "all epochs done",
            "stopped": "stopped",
            "error": "failed",
        }.get(h.stop_reason, h.stop_reason)
        if h.validation_saturated:
            dice = (
                f"; the held-out strokes were all right from epoch {h.all_right_from}, so the "
                "validation Dice cannot judge the borders: look at the result"
            )
        elif h.best_validation_dice:
            dice = f", best validation Dice {h.best_validation_dice:.3f}"
        else:
            dice = ""
        self.progress.setValue(1000)
        kept = (
            "The model is unchanged."
            if h.steps == 0
            else "The best weights are kept; press Segment."
        )
        model = self.session.segmenter
        adjusted = h.adjustment_note(model.config.names) if model is not None else ""
        self.status.setText(
            f"Done ({why}): {h.steps} steps, {h.epochs} epochs in "
            f"{format_seconds(h.elapsed)}{dice}. {kept}" + (f" {adjusted}" if adjusted else "")
        )
        for warning in h.warnings:
            if warning not in self._shown_notes:
                show_warning(f"Training: {warning}")

    _best: float | None = None
    _new_model: Any = None
    _colors: Any = None
    _painting: Any = None
    _mode = "sparse"
    _paint_note = ""  # live mode: the last paint picked up
    _shown_notes: frozenset[str] = frozenset()  # paint notes shown when training started

    def _best_text(self) -> str:
        return f" · best validation Dice {self._best:.3f}" if self._best is not None else ""

    def _show_progress(self, elapsed: float, remaining: float | None) -> None:
        if remaining is not None:
            self.progress.setValue(int(1000 * elapsed / max(elapsed + remaining, 1e-9)))

    def _on_error(self, error: BaseException) -> None:
        self.status.setText(report_exception(error, "Training did not run"))

    def _on_finished(self) -> None:
        self._new_model = None  # never stepped: the current model stays as it was
        super()._on_finished()
        if self.history is not None and self.history.steps > 0:
            self.start_from.setCurrentText(FINE_TUNE)
            self.session.changed.emit(self.session.segmenter)  # show how it was trained
