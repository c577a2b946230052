"""The main path: sample, train a few seconds, stop, segment, rerun in place."""

from __future__ import annotations

import numpy as np
import pytest
from widget_helpers import PLUGIN, errors, wait_idle


def test_widget_docks_from_manifest_and_shows_device(viewer, qtbot):
    from napari_unetseg._widgets._main import UNetSegWidget

    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "U-Net Segmentation")
    assert isinstance(widget, UNetSegWidget)
    assert dock.isVisible() or dock is not None
    qtbot.waitUntil(lambda: widget.warm_up is None, timeout=30_000)
    assert (
        "CPU" in widget.segment_section.device.text()
        or "GPU" in widget.segment_section.device.text()
    )
    assert "No model yet" in widget.model_section.info.text()


def test_sample_train_stop_segment(viewer, widget, qtbot, notes):
    viewer.open_sample(PLUGIN, "nuclei")
    image, painted = viewer.layers["nuclei"], viewer.layers["nuclei strokes"]
    assert widget.train_section.image_picker.layer() is image
    assert widget.train_section.labels_picker.layer() is painted
    before = np.array(painted.data, copy=True)

    train = widget.train_section
    train.budget.setValue(120)  # stopped by hand long before
    train.live_preview.setChecked(True)
    train.start()
    qtbot.waitUntil(lambda: len(train.plot.epoch_x) >= 2, timeout=60_000)
    train.stop_button.click()
    wait_idle(qtbot, widget)
    assert train.history is not None and train.history.stop_reason == "stopped"
    assert train.history.best_epoch is not None  # the best weights were kept
    assert widget.session.segmenter.is_trained
    assert "trained" in widget.model_section.info.text()
    assert "nuclei segmentation" in viewer.layers  # the live preview of the visible plane
    np.testing.assert_array_equal(painted.data, before)

    segment = widget.segment_section
    segment.probabilities.setChecked(True)
    segment.start_button.click()
    wait_idle(qtbot, widget)
    result = viewer.layers["nuclei segmentation"]
    assert result.data.shape == image.data.shape
    assert np.issubdtype(result.data.dtype, np.integer)
    assert set(np.unique(result.data)) <= {0, 1}
    assert viewer.layers["nuclei probabilities"].data.shape == image.data.shape
    segment.start_button.click()  # a rerun updates the same layers in place
    wait_idle(qtbot, widget)
    names = [layer.name for layer in viewer.layers]
    assert names.count("nuclei segmentation") == 1 and names.count("nuclei probabilities") == 1
    assert viewer.layers["nuclei segmentation"] is result
    np.testing.assert_array_equal(painted.data, before)
    assert errors(notes) == []


def test_console_reaches_the_same_model(viewer, widget, tiny_segmenter):
    from napari_unetseg._widgets import current_segmenter, set_segmenter

    assert current_segmenter(viewer) is widget.segmenter
    other = tiny_segmenter(n_classes=3)
    set_segmenter(viewer, other)
    assert widget.segmenter is other
    assert "class 2" in widget.model_section.info.text()


def train_objects_one_epoch(widget, qtbot):
    train = widget.train_section
    train.mode.setCurrentIndex(train.mode.findData("objects"))
    train.budget_unit.setCurrentText("epochs")
    train.budget.setValue(1)
    train.start()
    wait_idle(qtbot, widget)


def test_objects_model_segments_objects(viewer, widget, qtbot, scene, tiny_segmenter, notes):
    viewer.add_image(scene.image, name="cells")
    painted = viewer.add_labels(scene.painted_objects, name="objects painted")
    before = np.array(painted.data, copy=True)
    train_objects_one_epoch(widget, qtbot)
    assert widget.segmenter.is_objects
    widget.segment_section.run()
    wait_idle(qtbot, widget)
    assert viewer.layers["cells segmentation"].data.shape == scene.image.shape
    np.testing.assert_array_equal(painted.data, before)
    assert errors(notes) == []


def test_an_object_painted_as_label_one_is_flagged_once_at_the_start(
    viewer, widget, qtbot, scene, notes
):
    painted = np.zeros(scene.instances.shape, np.uint16)
    for number, object_id in enumerate(np.unique(scene.instances)[1:6], 1):
        painted[scene.instances == object_id] = number  # objects from 1, no background
    viewer.add_image(scene.image, name="cells")
    viewer.add_labels(painted, name="objects painted")
    train_objects_one_epoch(widget, qtbot)
    flagged = [message for _, message, _ in notes if "label 1 is painted" in message]
    assert len(flagged) == 1 and flagged[0].startswith("Paint: ")
    assert errors(notes) == []


def test_visible_plane_only_keeps_other_planes(viewer, widget, qtbot, scene):
    stack = np.stack([scene.image] * 3)
    image = viewer.add_image(stack, name="stack")
    previous = viewer.add_labels(np.full(stack.shape, 7, np.uint8), name="stack segmentation")
    viewer.dims.set_current_step(0, 1)
    segment = widget.segment_section
    segment.image_picker.set_layer(image)
    segment.planes.setCurrentText("visible plane only (quick preview)")
    segment.run()
    wait_idle(qtbot, widget)
    data = viewer.layers["stack segmentation"].data
    assert viewer.layers["stack segmentation"] is previous
    assert (data[0] == 7).all() and (data[2] == 7).all()
    assert set(np.unique(data[1])) <= {0, 1}


def test_cancel_segmentation(viewer, widget, qtbot, tiny_segmenter, scene, notes):
    stack = np.random.default_rng(0).random((16, 512, 512), dtype=np.float32)
    viewer.add_image(stack, name="big")
    widget.session.segmenter = tiny_segmenter(base_width=16, depth=4)
    segment = widget.segment_section
    segment.tile_size.setValue(128)
    seen = []
    worker = segment.run()
    worker.yielded.connect(seen.append)
    qtbot.waitUntil(lambda: len(seen) >= 1, timeout=30_000)
    segment.stop_button.click()
    wait_idle(qtbot, widget)
    assert "big segmentation" not in viewer.layers
    assert "Cancelled" in segment.status.text()
    assert seen[-1].tiles_done < seen[-1].tiles_total
    # the worker threads are reused: training right after a cancel must still work
    widget.session.segmenter = tiny_segmenter()
    widget.train_section.start_from.setCurrentText("current model (fine-tune)")
    for _ in range(2):
        viewer.add_image(scene.image, name="cells")
        viewer.add_labels(scene.painted, name="strokes")
        train = widget.train_section
        train.budget_unit.setCurrentText("epochs")
        train.budget.setValue(1)
        train.start()
        wait_idle(qtbot, widget)
        assert train.history is not None and train.history.steps > 0
        viewer.layers.clear()
    assert errors(notes) == []


def test_save_and_load(viewer, widget, qtbot, tmp_path, notes):
    path = widget.model_section.save(tmp_path / "model.safetensors")
    assert path is not None and path.exists()
    widget.session.segmenter = None
    widget.model_section.load(path)
    qtbot.waitUntil(lambda: widget.model_section.worker is None, timeout=30_000)
    assert widget.segmenter is not None
    assert "model.safetensors" in widget.model_section.info.text()
    assert errors(notes) == []


def test_layer_context_menu_segments(viewer, widget, qtbot, scene):
    from napari_unetseg._widgets._context import segment_with_unet

    image = viewer.add_image(scene.image, name="ctx")
    viewer.layers.selection.active = image
    segment_with_unet(viewer)
    wait_idle(qtbot, widget)
    assert viewer.layers["ctx segmentation"].data.shape == scene.image.shape


def test_demo_loads_the_sample_and_docks_the_widget(viewer, qtbot):
    from napari_unetseg._widgets._demo import open_demo

    widget = open_demo(viewer)
    assert [layer.name for layer in viewer.layers] == ["nuclei", "nuclei strokes"]
    assert widget.train_section.labels_picker.layer().name == "nuclei strokes"
    qtbot.waitUntil(lambda: widget.warm_up is None, timeout=30_000)


def test_done_says_how_the_output_was_matched_to_the_image(widget, tiny_segmenter):
    from napari_unetseg.core import TrainingDone
    from napari_unetseg.core.training_events import TrainingHistory

    widget.session.segmenter = tiny_segmenter(n_classes=2)
    history = TrainingHistory(
        steps=300, class_shares=[0.8, 0.2], class_shares_applied=1.0, border_shift=-0.5
    )
    widget.train_section._on_event(TrainingDone(history))
    text = widget.train_section.status.text()
    assert "Done (all epochs done): 300 steps" in text
    assert "background 80 %, class 1 20 %" in text and "brightness step" in text


def test_each_painting_mode_explains_itself_on_hover(widget):
    from qtpy.QtCore import Qt

    mode = widget.train_section.mode
    tips = {mode.itemData(i): mode.itemData(i, Qt.ItemDataRole.ToolTipRole) for i in range(4)}
    assert set(tips) == {"sparse", "objects", "dense", "objects-dense"}
    assert "just outside each one are learnt as background" in tips["objects"]
    assert all(tips.values())


@pytest.mark.parametrize(
    ("all_right_from", "expected"),
    [(2, "validation Dice cannot judge the borders"), (None, "best validation Dice 0.950")],
)
def test_done_line_says_when_the_validation_dice_cannot_judge(widget, all_right_from, expected):
    from napari_unetseg.core import TrainingDone, TrainingHistory

    history = TrainingHistory(
        epoch_losses=[0.5] * 12,
        best_validation_dice=0.95 if all_right_from is None else 1.0,
        steps=300,
        all_right_from=all_right_from,
    )
    widget.train_section._on_done(TrainingDone(history))
    text = widget.train_section.status.text()
    assert expected in text and ("1.000" not in text)
