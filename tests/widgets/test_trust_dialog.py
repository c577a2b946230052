"""Loading a TorchScript file in the widget asks first; No loads nothing and runs nothing."""

from __future__ import annotations

import warnings

import pytest
from widget_helpers import errors


def _archive(tmp_path, tiny_segmenter):
    import torch

    seg = tiny_segmenter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and torch.jit deprecation warnings
        traced = torch.jit.trace(seg.model, torch.zeros(1, 1, 16, 16), check_trace=False)
        path = tmp_path / "model.ts"
        torch.jit.save(traced, str(path))
    return path


@pytest.mark.parametrize("answer", ["No", "Yes"])
def test_torchscript_load_asks_for_consent(
    widget, qtbot, tmp_path, notes, tiny_segmenter, monkeypatch, answer
):
    from qtpy.QtWidgets import QMessageBox

    from napari_unetseg._widgets import _model_section

    path = _archive(tmp_path, tiny_segmenter)
    asked: list[str] = []

    def question(parent, title, text, *args):
        asked.append(text)
        return getattr(QMessageBox.StandardButton, answer)

    monkeypatch.setattr(_model_section.QMessageBox, "question", question)
    before = widget.segmenter
    worker = widget.model_section.load(path)
    assert len(asked) == 1 and "contains code" in asked[0] and "trust its source" in asked[0]
    if answer == "No":
        assert worker is None
        assert widget.segmenter is before
    else:
        qtbot.waitUntil(lambda: widget.model_section.worker is None, timeout=30_000)
        assert widget.segmenter is not before
        assert widget.segmenter.config.origin == "torchscript"
    assert errors(notes) == []


def test_plain_weights_load_without_a_question(widget, qtbot, tmp_path, monkeypatch):
    from napari_unetseg._widgets import _model_section

    def question(*args):
        raise AssertionError("asked about a file that holds no code")

    monkeypatch.setattr(_model_section.QMessageBox, "question", question)
    path = widget.segmenter.save(tmp_path / "model.safetensors")
    widget.model_section.load(path)
    qtbot.waitUntil(lambda: widget.model_section.worker is None, timeout=30_000)
    assert widget.segmenter.source == path
