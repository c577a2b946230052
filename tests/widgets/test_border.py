"""The Segment section's border slider: it moves the model's border and updates the result."""

from __future__ import annotations

import numpy as np
from widget_helpers import errors, wait_idle


def foreground(layer):
    return int((np.asarray(layer.data) == 1).sum())


def test_the_slider_moves_the_border_and_updates_the_one_result_layer(
    viewer, widget, qtbot, scene, notes
):
    viewer.add_image(scene.image, name="cells")
    painted = viewer.add_labels(scene.painted, name="cells painted")
    painting = np.array(painted.data, copy=True)
    segment = widget.segment_section
    assert segment.border.isVisibleTo(widget) and segment.border.isEnabled()
    segment.run()
    wait_idle(qtbot, widget)
    result = viewer.layers["cells segmentation"]
    before = np.array(result.data, copy=True)
    model = widget.session.segmenter

    # -2 in foreground log-odds: less foreground (the untrained model calls everything
    # foreground, at log-odds 0.33)
    assert int((before == 1).sum()) > 0
    segment.border.setValue(-8)
    assert segment.border_value.text() == "-2.00"
    qtbot.waitUntil(lambda: model.config.border_moved == -2.0, timeout=10_000)
    qtbot.waitUntil(lambda: foreground(result) < int((before == 1).sum()), timeout=30_000)
    wait_idle(qtbot, widget)
    assert viewer.layers["cells segmentation"] is result
    assert [layer.name for layer in viewer.layers].count("cells segmentation") == 1
    assert "border moved by hand: -2" in widget.model_section.info.text()

    segment.border.setValue(0)
    qtbot.waitUntil(lambda: model.config.border_moved == 0.0, timeout=10_000)
    qtbot.waitUntil(lambda: np.mean(np.asarray(result.data) == before) > 0.999, timeout=30_000)
    wait_idle(qtbot, widget)
    np.testing.assert_array_equal(painted.data, painting)
    assert errors(notes) == []


def test_the_slider_shows_for_two_class_and_object_models_and_follows_the_model(
    widget, tiny_segmenter
):
    segment = widget.segment_section
    widget.session.segmenter = tiny_segmenter(n_classes=3)
    assert not segment.border.isVisibleTo(widget)
    widget.session.segmenter = tiny_segmenter(task="objects")
    assert segment.border.isVisibleTo(widget)
    moved = tiny_segmenter()
    moved.move_border(-1.25)
    widget.session.segmenter = moved
    assert segment.border.isVisibleTo(widget)
    assert segment.border.value() == -5 and segment.border_value.text() == "-1.25"


def test_the_slider_is_held_while_training_runs(widget):
    segment = widget.segment_section
    widget.session.busy = "training"
    assert not segment.border.isEnabled()
    widget.session.busy = ""
    assert segment.border.isEnabled()


def test_without_a_result_on_screen_the_slider_only_moves_the_model(viewer, widget, qtbot, scene):
    image = viewer.add_image(scene.image, name="cells")
    segment = widget.segment_section
    segment.run()
    wait_idle(qtbot, widget)
    result = viewer.layers["cells segmentation"]
    before = np.array(result.data, copy=True)
    viewer.layers.remove(image)
    segment.border.setValue(-4)
    model = widget.session.segmenter
    qtbot.waitUntil(lambda: model.config.border_moved == -1.0, timeout=10_000)
    assert "press Segment" in segment.status.text() and not widget.session.busy
    np.testing.assert_array_equal(result.data, before)
