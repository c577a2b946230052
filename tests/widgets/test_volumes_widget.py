"""The Train section's choice of a 2-D or 3-D network for stacks, with a real viewer."""

from __future__ import annotations

import numpy as np
from widget_helpers import errors, wait_idle


def _stack():
    zz, yy, xx = np.indices((8, 48, 48))
    inside = ((zz - 4) / 3) ** 2 + ((yy - 24) / 10) ** 2 + ((xx - 24) / 10) ** 2 <= 1
    image = inside.astype(np.float32) + np.random.default_rng(0).normal(0, 0.2, inside.shape)
    painted = np.zeros(inside.shape, np.uint8)
    painted[4][inside[4]] = 2
    painted[4][~inside[4] & (np.indices((48, 48)).sum(0) % 4 == 0)] = 1
    return image.astype(np.float32), painted


def test_stack_trains_a_3d_network_by_default_and_2d_on_request(viewer, widget, qtbot, notes):
    image, painted = _stack()
    viewer.add_image(image, name="stack", scale=(2.0, 0.5, 0.5))
    viewer.add_labels(painted, name="paint")
    train = widget.train_section
    train.image_picker.set_layer(viewer.layers["stack"])
    train.labels_picker.set_layer(viewer.layers["paint"])
    assert train.network.isEnabled()
    assert train.network.currentData() == 3  # the measured default for stacks
    assert train.budget.value() == 180  # 3-D steps are slower: a longer default budget
    assert train.learning_rate.value() == 0.001  # the 3-D default rate, measured
    assert train.settings()["volume_learning_rate"] == 0.001
    train.depth_box.setValue(3)  # the fixture's tiny model set 2; start at the 3-D default
    train.network.setCurrentIndex(train.network.findData(2))
    assert (train.budget.value(), train.learning_rate.value()) == (60, 0.003)
    assert train.depth_box.value() == 4
    train.network.setCurrentIndex(train.network.findData(3))
    assert train.depth_box.value() == 3
    train.network.setCurrentIndex(train.network.findData(2))
    train.learning_rate.setValue(0.002)  # a rate and a depth the user chose stay
    train.depth_box.setValue(5)
    train.network.setCurrentIndex(train.network.findData(3))
    assert (train.budget.value(), train.learning_rate.value()) == (180, 0.002)
    assert train.depth_box.value() == 5
    train.learning_rate.setValue(0.001)
    train.depth_box.setValue(3)
    train.extra_settings |= {"volume_patch_size": (8, 32, 32), "volume_batch_size": 1}
    train.budget_unit.setCurrentText("epochs")
    train.budget.setValue(1)
    train.live_preview.setChecked(True)
    viewer.dims.set_current_step(0, 4)
    statuses = []
    original = train.status.setText

    def record(text):
        statuses.append(text)
        original(text)

    train.status.setText = record
    train.start()
    wait_idle(qtbot, widget)
    model = widget.session.segmenter
    assert model.is_3d
    assert model.config.voxel_size == (2.0, 0.5, 0.5)  # from the layer's scale
    assert any("3-D U-Net (2 networks, averaged)" in text for text in statuses)
    # one epoch is too short a run to be trusted, so no second network was trained
    assert model.config.members == 1 and model.config.training["members_dropped"] == 1
    preview = viewer.layers["stack segmentation"]  # the visible plane of the 3-D prediction
    assert preview.data.shape == image.shape
    np.testing.assert_array_equal(viewer.layers["paint"].data, painted)

    train.start_from.setCurrentIndex(0)  # a new model
    train.network.setCurrentIndex(train.network.findData(2))
    train.budget_unit.setCurrentText("seconds")
    assert train.budget.value() == 60
    train.budget_unit.setCurrentText("epochs")
    train.budget.setValue(1)
    train.start()
    wait_idle(qtbot, widget)
    assert not widget.session.segmenter.is_3d
    assert any("2-D U-Net" in text for text in statuses)
    assert errors(notes) == []


def test_a_single_image_has_no_3d_choice(viewer, widget):
    viewer.add_image(np.zeros((64, 64), np.float32), name="plane")
    widget.train_section.image_picker.set_layer(viewer.layers["plane"])
    assert not widget.train_section.network.isEnabled()
    assert widget.train_section.spatial_dims(viewer.layers["plane"]) == 2
    assert widget.train_section.budget.value() == 60
