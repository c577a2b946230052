"""User errors become notifications that say what to do; the widget stays usable."""

from __future__ import annotations

import numpy as np
import pytest
from widget_helpers import errors, wait_idle


def assert_one_error(notes, *words):
    found = errors(notes)
    assert len(found) == 1, found
    for word in words:
        assert word.lower() in found[0].lower(), found[0]
    # plain notifications, never a traceback dialog
    assert all(kind == "Notification" for _, _, kind in notes), notes


def assert_usable(widget):
    assert not widget.session.busy
    assert widget.train_section.start_button.isEnabled()
    assert widget.segment_section.start_button.isEnabled()


def test_no_image_layer(widget, notes):
    assert widget.train_section.start() is None
    assert_one_error(notes, "no image layer")
    notes.clear()
    assert widget.segment_section.run() is None
    assert_one_error(notes, "no image layer")
    assert_usable(widget)


def test_labels_shape_mismatch(viewer, widget, notes, scene):
    viewer.add_image(scene.image, name="cells")
    viewer.add_labels(np.ones((64, 64), np.uint8), name="small strokes")
    widget.train_section.labels_picker.set_layer(viewer.layers["small strokes"])
    assert widget.train_section.start() is None
    assert_one_error(notes, "small strokes", "(64, 64)", "(192, 192)")
    assert_usable(widget)


def test_nothing_painted(viewer, widget, qtbot, notes, scene):
    viewer.add_image(scene.image, name="cells")
    empty = viewer.add_labels(np.zeros(scene.image.shape, np.uint8), name="strokes")
    before = widget.segmenter
    widget.train_section.start()
    wait_idle(qtbot, widget)
    qtbot.waitUntil(lambda: len(notes) > 0, timeout=10_000)
    assert_one_error(notes, "nothing is painted", "label 1")
    assert widget.segmenter is before  # a failed start does not replace the model
    assert not empty.data.any()
    assert_usable(widget)


@pytest.mark.parametrize("section", ["train", "segment"])
def test_channel_mismatch(viewer, widget, qtbot, notes, scene, section):
    rgb = np.stack([scene.image.astype(np.float32)] * 3, axis=-1)
    viewer.add_image(rgb, name="rgb", rgb=True)
    viewer.add_labels(scene.painted, name="strokes")
    widget.train_section.start_from.setCurrentText("current model (fine-tune)")
    if section == "train":
        widget.train_section.start()
        wait_idle(qtbot, widget)
        qtbot.waitUntil(lambda: len(notes) > 0, timeout=10_000)
    else:
        assert widget.segment_section.run() is None
    assert_one_error(notes, "3 channel", "expects 1")
    assert_usable(widget)


def test_unreadable_weights_file(widget, qtbot, notes, tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"this is not a weights file")
    before = widget.segmenter
    widget.model_section.load(bad)
    qtbot.waitUntil(lambda: widget.model_section.worker is None, timeout=30_000)
    qtbot.waitUntil(lambda: len(notes) > 0, timeout=10_000)
    assert_one_error(notes, "broken.pth")
    assert widget.segmenter is before
    assert widget.model_section.load_button.isEnabled()
    assert "broken.pth" not in widget.model_section.info.text()


def test_segment_without_model(viewer, widget, notes, scene):
    widget.session.segmenter = None
    viewer.add_image(scene.image, name="cells")
    assert widget.segment_section.run() is None
    assert_one_error(notes, "no model", "train")
