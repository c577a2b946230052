"""The long jobs as plain generators, run by the widgets in ``thread_worker``s.

They hold no Qt and show nothing: they yield the core's events (plus the two below) and the
widgets turn those into progress, plots and layers in the main thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from napari_unetseg.core import Prediction, Segmenter


class JobFailed(Exception):
    """A ``RuntimeError`` raised in a job, passed on under another type.

    superqt's worker takes a ``RuntimeError`` to mean that the worker itself was deleted: it
    would only warn and never emit ``finished``, leaving the widget busy for good. torch
    raises ``RuntimeError`` (out of memory included), so every job passes it on as this.
    """

    def __init__(self, cause: RuntimeError) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(frozen=True)
class ModelCreated:
    """A new model was made for this training run and accepted the inputs."""

    segmenter: Segmenter


@dataclass(frozen=True)
class Preview:
    """Labels of one stack plane, predicted after an epoch (ilastik-style live view)."""

    labels: np.ndarray
    index: tuple[int, ...]


@dataclass(frozen=True)
class NewModel:
    """How to build a fresh model for a 'from scratch' run."""

    in_channels: int
    base_width: int = 16
    depth: int = 4
    spatial_dims: int = 2
    voxel_size: tuple[float, ...] | None = None
    start: str = "auto"


def classes_needed(labels: np.ndarray, mode: str) -> int:
    """Classes (background included) a new semantic model needs for this painting."""
    top = int(labels.max()) if labels.size else 0
    return max(2, top if mode == "sparse" else top + 1)


def train_job(
    segmenter: Segmenter | None,
    new_model: NewModel | None,
    image: Any,
    labels: np.ndarray | Callable[[], np.ndarray],
    settings: dict[str, Any],
    axes: str | None,
    stop: threading.Event,
    preview_plane: tuple[int, ...] | Callable[[], tuple[int, ...]] | None = None,
    until_stopped: bool = False,
    preview_every: float | None = None,
) -> Generator[Any, None, None]:
    """Train (a new model when ``new_model`` is given); yields the core's training events.

    Setting ``stop`` ends training after the current step; the core keeps the best weights.
    Live mode: ``labels`` (and ``preview_plane``) may be callables read again as training
    goes, ``until_stopped`` ignores the budget, and ``preview_every`` seconds (instead of
    after each epoch) the visible plane is predicted again.
    """
    import time

    from napari_unetseg.core import EpochDone, Segmenter, StepDone, TrainConfig

    try:
        config = TrainConfig(**settings)
        if new_model is not None:
            segmenter = Segmenter.create(
                in_channels=new_model.in_channels,
                n_classes=3
                if config.is_objects
                else classes_needed(labels() if callable(labels) else labels, config.mode),
                task="objects" if config.is_objects else "semantic",
                base_width=new_model.base_width,
                depth=new_model.depth,
                spatial_dims=new_model.spatial_dims,
                voxel_size=new_model.voxel_size,
                start=new_model.start,
                # live training keeps one network, so that its preview keeps up with the paint
                members=1 if until_stopped else None,
            )
        assert segmenter is not None
        events = segmenter.train_iter(  # checks the inputs
            image, labels, config, axes=axes, stop=stop, until_stopped=until_stopped
        )
    except RuntimeError as error:
        raise JobFailed(error) from error
    if new_model is not None:
        yield ModelCreated(segmenter)
    from napari_unetseg.core.predict import run_to_end

    last_preview = time.monotonic()
    try:
        for event in events:
            yield event
            if preview_plane is None or stop.is_set():
                continue
            if preview_every is None:
                due = isinstance(event, EpochDone)
            else:
                due = isinstance(event, StepDone | EpochDone) and (
                    time.monotonic() - last_preview >= preview_every
                )
            if due:
                plane = preview_plane() if callable(preview_plane) else preview_plane
                # a glance between epochs: one pass, not a 3-D volume's 8 flips
                yield Preview(
                    labels=run_to_end(
                        segmenter.predict_iter(
                            image,
                            axes=axes,
                            probabilities=False,
                            planes=[plane],
                            volume_flips_up_to=0,
                        )
                    ).labels[plane],
                    index=plane,
                )
                last_preview = time.monotonic()
    except RuntimeError as error:
        raise JobFailed(error) from error
    finally:
        events.close()


def segment_job(
    segmenter: Segmenter,
    image: Any,
    axes: str | None,
    tile_size: int,
    probabilities: bool,
    planes: list[tuple[int, ...]] | None,
    cancel: threading.Event,
) -> Generator[Any, None, Prediction | None]:
    """Segment; yields the core's ``PredictProgress``, returns its ``Prediction``.

    Setting ``cancel`` returns None after the current batch of tiles. The core's generator is
    always finished or closed here, in the worker's thread: it holds torch's thread-local
    inference mode while suspended, and the thread pool reuses threads for later jobs.
    """
    try:
        events = segmenter.predict_iter(
            image,
            axes=axes,
            probabilities=probabilities,
            labels=True,
            planes=planes,
            tile_size=tile_size,
        )
    except RuntimeError as error:
        raise JobFailed(error) from error
    try:
        while not cancel.is_set():
            try:
                progress = next(events)
            except StopIteration as finished:
                result: Prediction = finished.value
                return result
            yield progress
        return None
    except RuntimeError as error:
        raise JobFailed(error) from error
    finally:
        events.close()
