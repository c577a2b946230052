"""Issue 13: one dock, a 0-step stop that changes nothing, the selection left on the painting,
result colours that keep the painting's meaning, a current Model box, a plot that survives a
failed start, and toasts that fit."""

from __future__ import annotations

import numpy as np
import pytest
from widget_helpers import PLUGIN, WIDGET, errors, wait_idle

from napari_unetseg._widgets._train_section import FINE_TUNE, SCRATCH


def unet_widgets(viewer):
    from napari_unetseg._widgets._main import UNetSegWidget

    return [w for w in viewer.window.dock_widgets.values() if isinstance(w, UNetSegWidget)]


def one_epoch(widget, start_from):
    train = widget.train_section
    train.start_from.setCurrentText(start_from)
    train.budget_unit.setCurrentText("epochs")
    train.budget.setValue(1)


# ------------------------------------------------------------------ one dock


def test_menu_api_and_layer_menu_share_one_dock(make_napari_viewer, qtbot, scene, tiny_segmenter):
    from napari._app_model import get_app_model

    from napari_unetseg._widgets import current_segmenter
    from napari_unetseg._widgets._context import segment_with_unet
    from napari_unetseg._widgets._docking import DOCK_NAME

    viewer = make_napari_viewer(show=True)
    get_app_model().commands.execute_command("napari-unetseg.make_widget")  # Plugins menu
    qtbot.waitUntil(lambda: len(unet_widgets(viewer)) == 1, timeout=10_000)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)  # the API
    image = viewer.add_image(scene.image, name="cells")
    viewer.layers.selection.active = image
    segment_with_unet(viewer)  # the layer menu: no model yet, so only a message
    assert unet_widgets(viewer) == [widget]
    assert list(viewer.window.dock_widgets) == [DOCK_NAME]
    widget.session.segmenter = tiny_segmenter()
    assert current_segmenter(viewer) is widget.segmenter
    qtbot.waitUntil(lambda: widget.warm_up is None, timeout=30_000)


# ------------------------------------------------------------------ stop at once


@pytest.mark.parametrize("start_from", [SCRATCH, FINE_TUNE])
def test_stop_right_after_start_changes_nothing(viewer, widget, qtbot, scene, notes, start_from):
    viewer.add_image(scene.image, name="cells")
    viewer.add_labels(scene.painted, name="strokes")
    before = widget.segmenter
    text_before = widget.model_section.info.text()
    train = widget.train_section
    train.start_from.setCurrentText(start_from)
    train.start()
    train.stop()
    wait_idle(qtbot, widget)
    assert train.history is not None and train.history.steps == 0
    assert widget.segmenter is before
    assert not widget.segmenter.is_trained
    assert train.start_from.currentText() == start_from
    assert widget.model_section.info.text() == text_before
    assert "training…" not in widget.model_section.summary.text()


# ------------------------------------------------------------------ layers at a glance


def test_selection_stays_on_the_painting_and_results_go_under_it(viewer, widget, qtbot, notes):
    viewer.open_sample(PLUGIN, "nuclei")
    strokes = viewer.layers["nuclei strokes"]
    viewer.layers.selection.active = strokes
    train = widget.train_section
    train.live_preview.setChecked(True)  # makes the result layer at Start
    one_epoch(widget, FINE_TUNE)
    train.start_button.click()
    assert viewer.layers.selection.active is strokes
    wait_idle(qtbot, widget)
    assert viewer.layers.selection.active is strokes
    widget.segment_section.probabilities.setChecked(True)
    widget.segment_section.start_button.click()
    wait_idle(qtbot, widget)
    assert viewer.layers.selection.active is strokes
    names = [layer.name for layer in viewer.layers]
    assert names == ["nuclei", "nuclei probabilities", "nuclei segmentation", "nuclei strokes"]
    assert errors(notes) == []


def test_result_colours_keep_the_paintings_meaning(viewer, widget, qtbot):
    viewer.open_sample(PLUGIN, "nuclei")
    strokes = viewer.layers["nuclei strokes"]
    widget.segment_section.run()
    wait_idle(qtbot, widget)
    result = viewer.layers["nuclei segmentation"]

    def colour(layer, value):
        return np.asarray(layer.colormap.map(np.array([value]))[0])

    # strokes: 1 background, 2 nuclei; result: 1 nuclei
    np.testing.assert_allclose(colour(result, 1), colour(strokes, 2), atol=1e-6)
    assert np.abs(colour(result, 1) - colour(strokes, 1)).max() > 0.2


# ------------------------------------------------------------------ the Model box


def test_model_box_follows_training_and_saving(viewer, widget, qtbot, scene, tmp_path, notes):
    viewer.add_image(scene.image, name="cells")
    viewer.add_labels(scene.painted, name="strokes")
    box = widget.model_section
    box.save(tmp_path / "model.safetensors")
    assert "model.safetensors" in box.summary.text()
    assert "not saved" not in box.summary.text()

    one_epoch(widget, FINE_TUNE)
    widget.train_section.start()
    assert "training…" in box.info.text() and "training…" in box.summary.text()
    wait_idle(qtbot, widget)
    first = widget.segmenter.config.training["steps"]
    assert "training…" not in box.info.text()
    assert "changed since; not saved" in box.info.text()
    assert "not saved" in box.summary.text()

    widget.train_section.start()
    wait_idle(qtbot, widget)
    second = widget.segmenter.config.training["steps"]
    assert f"{first + second} steps in 2 runs" in box.info.text()
    box.save(tmp_path / "again.safetensors")
    assert "again.safetensors" in box.info.text() and "not saved" not in box.info.text()
    assert errors(notes) == []


def test_new_model_controls_follow_the_loaded_model(widget, tiny_segmenter):
    from napari_unetseg._widgets import set_segmenter

    box = widget.model_section
    set_segmenter(widget.viewer, tiny_segmenter(in_channels=3, n_classes=4))
    assert (box.channels.value(), box.classes.value(), box.objects.isChecked()) == (3, 4, False)
    set_segmenter(widget.viewer, tiny_segmenter(in_channels=2, n_classes=3, task="objects"))
    assert box.channels.value() == 2 and box.objects.isChecked()
    assert not box.classes.isEnabled()


def test_a_new_model_from_scratch_keeps_the_current_models_size(widget, tiny_segmenter):
    from napari_unetseg._widgets import set_segmenter

    set_segmenter(widget.viewer, tiny_segmenter(base_width=8, depth=3))
    assert widget.train_section.base_width.value() == 8
    assert widget.train_section.depth_box.value() == 3


# ------------------------------------------------------------------ plot and messages


def test_the_plot_survives_a_failed_start(viewer, widget, qtbot, scene, notes):
    viewer.add_image(scene.image, name="cells")
    viewer.add_labels(scene.painted, name="strokes")
    train = widget.train_section
    one_epoch(widget, FINE_TUNE)
    train.start()
    wait_idle(qtbot, widget)
    points = list(train.plot.step_x)
    assert points
    empty = viewer.add_labels(np.zeros(scene.image.shape, np.uint8), name="nothing")
    train.labels_picker.set_layer(empty)
    train.start()
    wait_idle(qtbot, widget)
    qtbot.waitUntil(lambda: len(errors(notes)) == 1, timeout=10_000)
    assert train.plot.step_x == points
    assert "nothing is painted" in train.status.text()


def test_a_long_message_is_a_short_toast_with_its_details(qtbot):
    from napari.utils.notifications import notification_manager

    from napari_unetseg._widgets._notify import TOAST_CHARS, show_error

    seen = []
    notification_manager.notification_ready.connect(seen.append)
    try:
        long = "The first sentence says what went wrong. " + "More detail follows here. " * 20
        show_error(long)
        show_error("short")
    finally:
        notification_manager.notification_ready.disconnect(seen.append)
    toast, short = seen
    assert len(toast.message) <= TOAST_CHARS + 2
    assert toast.message.startswith("The first sentence says what went wrong.")
    assert [name for name, _ in toast.actions] == ["Details…"]
    assert short.message == "short" and not short.actions
