"""The painting loop in a real viewer: live training that learns new strokes, and suggestions."""

from __future__ import annotations

import numpy as np
import pytest
from widget_helpers import QUICK, errors, wait_idle


def test_live_mode_learns_a_new_stroke_and_keeps_the_painting_selected(
    viewer, widget, qtbot, scene, notes
):
    from napari_unetseg._widgets._jobs import Preview
    from napari_unetseg.core import EpochDone, PaintUpdated, TrainingStarted

    viewer.add_image(scene.image, name="cells")
    first = scene.painted.copy()
    first[:, 96:] = 0  # the right half is painted later, while training runs
    painted = viewer.add_labels(first, name="strokes")
    viewer.layers.selection.active = painted
    train = widget.train_section
    assert train.labels_picker.layer() is painted

    events = []
    train.live.click()
    assert train.live.isChecked() and train.worker is not None
    train.worker.yielded.connect(events.append)
    qtbot.waitUntil(lambda: any(isinstance(e, EpochDone) for e in events), timeout=60_000)
    assert viewer.layers.selection.active is painted  # not the result layer
    started = next(e for e in events if isinstance(e, TrainingStarted))

    stroke = (slice(150, 156), slice(120, 180))
    new_paint = np.array(painted.data, copy=True)
    new_paint[stroke] = 1
    added = int((new_paint > 0).sum() - (painted.data > 0).sum())
    painted.data_setitem(np.nonzero(new_paint != painted.data), 1)  # a stroke, as the brush does
    qtbot.waitUntil(lambda: any(isinstance(e, PaintUpdated) for e in events), timeout=60_000)
    update = next(e for e in events if isinstance(e, PaintUpdated))
    assert update.problem is None and added == 6 * 60
    total = update.train_pixels + update.validation_pixels
    assert total == started.train_pixels + started.validation_pixels + added
    qtbot.waitUntil(lambda: any(isinstance(e, Preview) for e in events), timeout=60_000)
    assert "cells segmentation" in viewer.layers
    assert viewer.layers.selection.active is painted  # the preview did not take it either
    qtbot.waitUntil(lambda: "new paint learnt" in train.status.text(), timeout=30_000)

    train.live.click()  # off: stops, keeps the weights
    wait_idle(qtbot, widget)
    assert not train.live.isChecked()
    history = train.history
    assert history.stop_reason == "stopped" and history.paint_updates >= 1
    assert history.steps > QUICK["steps_per_epoch"]
    assert widget.session.segmenter.is_trained
    np.testing.assert_array_equal(painted.data, new_paint)  # only the user's strokes
    assert viewer.layers.selection.active is painted
    assert errors(notes) == []


@pytest.mark.parametrize(("live", "members"), [(True, 1), (False, 2)])
def test_live_training_of_a_new_3d_model_trains_one_network(live, members):
    """Live training keeps one network so its preview keeps up; a budgeted run trains two."""
    import threading

    from napari_unetseg._widgets._jobs import ModelCreated, NewModel, train_job

    image = np.random.default_rng(0).random((8, 32, 32), dtype=np.float32)
    painted = np.zeros(image.shape, np.uint8)
    painted[4, :8], painted[4, -8:] = 1, 2
    new = NewModel(in_channels=1, base_width=4, depth=2, spatial_dims=3)
    job = train_job(None, new, image, painted, {}, "ZYX", threading.Event(), until_stopped=live)
    created = next(job)
    assert isinstance(created, ModelCreated)
    assert created.segmenter.config.members == members
    job.close()


def trained_tiny_model(tiny_segmenter, image, painted):
    from napari_unetseg.core import TrainConfig

    model = tiny_segmenter()
    config = TrainConfig(max_seconds=None, max_epochs=1, **QUICK)
    model.train(image, painted, config, progress=False)
    return model


def test_suggestions_show_the_uncertainty_mark_places_and_move_the_view(
    viewer, widget, qtbot, scene, tiny_segmenter, notes
):
    from napari_unetseg._widgets._suggest import camera_of

    stack = np.stack([scene.image[:128, :128], scene.image[64:, 64:], scene.image[:128, 64:]])
    paint = np.zeros(stack.shape, np.uint8)
    paint[0] = scene.painted[:128, :128]
    image = viewer.add_image(stack, name="cells")
    painted = viewer.add_labels(paint, name="strokes")
    widget.session.segmenter = trained_tiny_model(tiny_segmenter, stack, paint)
    section = widget.suggest_section
    section.count.setValue(3)
    section.place_size.setValue(32)

    assert section.run() is not None
    qtbot.waitUntil(lambda: section.worker is None, timeout=60_000)
    _, found = section.result
    plane, y, x = found[0].position
    viewer.dims.set_current_step(0, (plane + 1) % 3)  # look elsewhere, then ask again
    camera_of(viewer).center = (0, 0)
    assert section.run() is not None  # a rerun updates the same layers
    qtbot.waitUntil(lambda: section.worker is None, timeout=60_000)
    assert section.result[1] == found  # same model, same suggestions
    names = [layer.name for layer in viewer.layers]
    assert names.count("cells uncertainty") == 1 and names.count("cells paint here") == 1
    shown = viewer.layers["cells uncertainty"]
    assert shown.data.shape == stack.shape and shown.data.dtype == np.float32
    assert shown.data.min() >= 0 and shown.data.max() <= 1
    assert names.index("cells uncertainty") == names.index("cells") + 1  # under the painting
    marks = viewer.layers["cells paint here"]
    assert 1 <= len(marks.data) <= 3
    np.testing.assert_array_equal(marks.data[0], found[0].position)
    assert [s.score for s in found] == sorted((s.score for s in found), reverse=True)

    assert viewer.dims.current_step[0] == plane
    np.testing.assert_allclose(camera_of(viewer).center[-2:], (y, x), atol=1)
    assert viewer.layers.selection.active is painted
    np.testing.assert_array_equal(painted.data, paint)
    assert image.data is stack
    assert errors(notes) == []


def test_suggestions_need_a_trained_model(viewer, widget, scene, notes):
    viewer.add_image(scene.image, name="cells")
    viewer.add_labels(scene.painted, name="strokes")
    assert widget.suggest_section.run() is None
    assert any("Train a model first" in message for message in errors(notes))
    assert "cells uncertainty" not in viewer.layers


def test_paint_feed_copies_after_each_stroke_and_follows_the_plane_on_screen(viewer, qtbot):
    from napari_unetseg._widgets._live import PaintFeed

    image = viewer.add_image(np.zeros((3, 40, 50), np.float32), name="stack")
    painted = viewer.add_labels(np.zeros((3, 40, 50), np.uint8), name="strokes")
    viewer.dims.set_current_step(0, 0)
    feed = PaintFeed(viewer, painted, image, "ZYX")
    first = feed()
    assert first is not painted.data and feed() is first  # one copy until the next stroke
    painted.data_setitem((np.array([2]), np.array([5]), np.array([7])), 2)
    second = feed()
    assert second is not first and second[2, 5, 7] == 2 and first[2, 5, 7] == 0
    assert feed.copies == 2
    viewer.dims.set_current_step(0, 2)
    assert feed.plane() == (2,)
    feed.close()
    painted.data_setitem((np.array([0]), np.array([0]), np.array([0])), 1)
    assert feed() is second  # no longer following
