"""Suggest where to paint: the uncertainty map, and the unpainted places most worth a stroke.

The job (a plain generator, no Qt) predicts the uncertainty and ranks windows with the core;
the section shows the map as "<image> uncertainty", marks the windows in one Points layer
"<image> paint here" (updated on each run), moves the view to the first, and hands the
selection back to the painting. It may run while training does: the core predicts with a
consistent copy of the weights.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import QCheckBox, QFormLayout, QSpinBox, QVBoxLayout, QWidget

from ._job_section import JobSection
from ._layers import _spatial_transform, find_layer, image_axes, image_data, spatial_shape
from ._notify import report_exception, show_error, show_warning

if TYPE_CHECKING:
    from collections.abc import Generator

    import napari
    from napari.layers import Image, Labels

    from ._session import Session
    from ._train_section import TrainSection


def uncertainty_name(image: Image) -> str:
    return f"{image.name} uncertainty"


def suggestions_name(image: Image) -> str:
    return f"{image.name} paint here"


def suggest_job(
    segmenter: Any,
    image: Any,
    axes: str | None,
    painted: np.ndarray | None,
    count: int,
    window: int,
    cancel: threading.Event,
) -> Generator[Any, None, tuple[np.ndarray, list[Any]] | None]:
    """Predict the uncertainty (yielding progress), then rank the places to paint.

    Returns ``(uncertainty, suggestions)``, or None when cancelled.
    """
    from napari_unetseg.core.uncertainty import suggest_regions

    from ._jobs import JobFailed

    try:
        events = segmenter.predict_iter(
            image, axes=axes, probabilities=False, labels=False, uncertainty=True
        )
        try:
            while not cancel.is_set():
                try:
                    yield next(events)
                except StopIteration as finished:
                    unsure = finished.value.uncertainty
                    return unsure, suggest_regions(unsure, painted, count=count, window=window)
            return None
        finally:
            events.close()
    except RuntimeError as error:
        raise JobFailed(error) from error


class SuggestSection(JobSection):
    """A button that shows where the model is unsure and where to paint next."""

    job_name = "suggesting"

    def __init__(
        self,
        viewer: napari.Viewer,
        session: Session,
        train: TrainSection,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(
            "Paint where unsure", viewer, session, "Suggest where to paint", "Cancel", parent
        )
        self.train = train  # its pickers name the image and the painting
        self.result: tuple[np.ndarray, list[Any]] | None = None
        self._job: dict[str, Any] = {}
        self.show_map = QCheckBox("show the uncertainty map")
        self.show_map.setChecked(True)
        self.count = QSpinBox()
        self.count.setRange(1, 20)
        self.count.setValue(5)
        self.count.setToolTip("How many places to mark; the view moves to the first.")
        self.place_size = QSpinBox()
        self.place_size.setRange(16, 1024)
        self.place_size.setSingleStep(16)
        self.place_size.setValue(64)
        self.place_size.setSuffix(" px")
        self.place_size.setToolTip("Side of a place: about what you paint in one go.")
        self.start_button.clicked.connect(lambda: self.run())
        self.stop_button.clicked.connect(lambda: self.request_stop("Cancelling…"))
        self.status.setText("After some training: find where the model is most unsure.")
        form = QFormLayout()
        form.addRow("places", self.count)
        form.addRow("place size", self.place_size)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.show_map)
        layout.addLayout(self.buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)

    # Runs beside training (live or not), so it keeps its own flag instead of session.busy.

    def _busy(self, busy: str) -> None:
        free = self.worker is None
        self.start_button.setEnabled(free and busy in ("", "training"))
        self.stop_button.setEnabled(not free)

    def begin(self, status: str) -> threading.Event:
        self.stop_event = threading.Event()
        self.progress.setValue(0)
        self.status.setText(status)
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        return self.stop_event

    def _on_finished(self) -> None:
        self.worker = None
        self._busy(self.session.busy)

    # ------------------------------------------------------------------ start

    def run(self) -> Any:
        """Predict the uncertainty of the Train section's image in a worker; returns it or None."""
        from napari_unetseg.core import UnetSegError
        from napari_unetseg.core.layout import resolve_layout

        from ._common import start_worker

        if self.worker is not None:
            return None
        if self.session.busy not in ("", "training"):
            show_warning(f"Wait until {self.session.busy} has finished, or stop it.")
            return None
        image = self.train.image_picker.layer()
        painting = self.train.labels_picker.layer()
        segmenter = self.session.segmenter
        if image is None:
            show_error("There is no image layer: choose one under Train > image.")
            return None
        if segmenter is None or not segmenter.is_trained:
            show_error(
                "Train a model first (a few seconds are enough): the suggestions come from "
                "where that model is unsure."
            )
            return None
        axes = image_axes(image)
        try:
            resolve_layout(image_data(image), segmenter.config.in_channels, axes)
        except UnetSegError as error:
            show_error(f"Cannot look at '{image.name}' with this model: {error}")
            return None
        fits = painting is not None and painting.data.shape == spatial_shape(image)
        painted = np.array(painting.data, copy=True) if fits else None
        self._job = {"image": image, "painting": painting if fits else None}
        cancel = self.begin(f"Looking for uncertain places in '{image.name}'…")
        self.worker = start_worker(
            suggest_job,
            segmenter,
            image_data(image),
            axes,
            painted,
            int(self.count.value()),
            int(self.place_size.value()),
            cancel,
            connect={
                "yielded": self._on_progress,
                "returned": self._on_result,
                "errored": self._on_error,
                "finished": self._on_finished,
            },
        )
        return self.worker

    # ------------------------------------------------------------------ main thread

    def _on_progress(self, progress: Any) -> None:
        self.progress.setValue(int(1000 * progress.fraction))

    def _on_error(self, error: BaseException) -> None:
        self.status.setText("No suggestions; see the message.")
        report_exception(error, "Suggesting where to paint")

    def _on_result(self, result: tuple[np.ndarray, list[Any]] | None) -> None:
        image: Image | None = self._job.get("image")
        if result is None or image is None or find_layer(self.viewer, image.name) is None:
            self.status.setText("Cancelled.")
            self.progress.setValue(0)
            return
        self.result = result
        unsure, found = result
        if self.show_map.isChecked():
            show_uncertainty(self.viewer, image, unsure)
        mark_suggestions(self.viewer, image, found, int(self.place_size.value()))
        if found:
            go_to(self.viewer, image, found[0].position)
            first = found[0]
            where = f"plane {first.index}, " if first.index else ""
            self.status.setText(
                f"{len(found)} places marked in '{suggestions_name(image)}'. The view is on the "
                f"most uncertain ({where}y {first.centre[0]}, x {first.centre[1]}; uncertainty "
                f"{first.score:.2f}): paint there, train, and ask again."
            )
        else:
            self.status.setText("Nothing left to suggest: every unpainted place looks certain.")
        painting: Labels | None = self._job.get("painting")
        if painting is not None and find_layer(self.viewer, painting.name) is not None:
            self.viewer.layers.selection.active = painting  # ready to paint
        self.progress.setValue(1000)


# --------------------------------------------------------------------------- layers


def show_uncertainty(viewer: napari.Viewer, image: Image, unsure: np.ndarray) -> Any:
    """The map as "<image> uncertainty", updated in place, just above the image."""
    name = uncertainty_name(image)
    layer = find_layer(viewer, name)
    if layer is not None and layer.data.shape == unsure.shape:
        layer.data = unsure
        return layer
    if layer is not None:
        viewer.layers.remove(layer)
    layer = viewer.add_image(
        unsure,
        name=name,
        colormap="inferno",
        contrast_limits=(0.0, 1.0),
        opacity=0.6,
        blending="additive",
        **_spatial_transform(image, unsure.ndim),
    )
    viewer.layers.move(viewer.layers.index(layer), viewer.layers.index(image) + 1)
    return layer


def mark_suggestions(viewer: napari.Viewer, image: Image, found: list[Any], window: int) -> Any:
    """Squares numbered by rank in the Points layer "<image> paint here", made once."""
    ndim = len(spatial_shape(image))
    points = np.array([s.position for s in found], float).reshape(-1, ndim)
    features = {"rank": np.arange(1, len(found) + 1)}
    name = suggestions_name(image)
    layer = find_layer(viewer, name)
    if layer is not None and layer.ndim == ndim:
        layer.data = points
        layer.features = features
        layer.size = window
        layer.refresh()
        return layer
    if layer is not None:
        viewer.layers.remove(layer)
    return viewer.add_points(
        points,
        name=name,
        features=features,
        text={"string": "{rank}", "color": "yellow", "anchor": "upper_left", "size": 12},
        symbol="square",
        size=window,
        face_color="transparent",
        border_color="yellow",
        border_width=0.04,
        out_of_slice_display=False,
        **_spatial_transform(image, ndim),
    )


def go_to(viewer: napari.Viewer, image: Image, position: tuple[int, ...]) -> None:
    """Centre the camera on ``position`` (stack index, y, x) and show its plane."""
    data_ndim = image.ndim
    coords = [0.0] * (data_ndim - len(position)) + [float(v) for v in position]
    world = np.asarray(image.data_to_world(coords), float)
    offset = viewer.dims.ndim - data_ndim
    for axis in range(data_ndim - 2):
        viewer.dims.set_point(offset + axis, world[axis])
    camera_of(viewer).center = tuple(world[-2:])


def camera_of(viewer: napari.Viewer) -> Any:
    """The viewer's camera: ``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera
