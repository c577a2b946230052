"""A new model from the Train section starts from the synthetic-scene weights unless unchecked."""

from __future__ import annotations

import pytest
from widget_helpers import errors, wait_idle

from napari_unetseg._widgets._train_section import SCRATCH


@pytest.mark.parametrize(("checked", "started_from"), [(True, "synthetic scenes"), (False, "")])
def test_a_new_model_starts_where_the_advanced_box_says(
    viewer, widget, qtbot, scene, notes, checked, started_from
):
    viewer.add_image(scene.image, name="cells")
    viewer.add_labels(scene.painted, name="strokes")
    train = widget.train_section
    assert train.synthetic_start.isChecked()  # the default
    train.synthetic_start.setChecked(checked)
    train.start_from.setCurrentText(SCRATCH)
    train.base_width.setValue(16)  # the fixture's tiny model set its own size here
    train.depth_box.setValue(4)
    train.budget_unit.setCurrentText("epochs")
    train.budget.setValue(1)
    train.start()
    assert not train.synthetic_start.isEnabled()  # fixed while training
    wait_idle(qtbot, widget)
    model = widget.session.segmenter
    assert model.is_trained and model.config.encoder_channels[0] == 16
    assert model.config.started_from == started_from
    shown = widget.model_section.info.text()
    assert ("synthetic scenes" in shown) == checked
    assert train.synthetic_start.isEnabled()
    assert errors(notes) == []
