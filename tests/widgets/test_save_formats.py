"""The widget's Save writes our own file or exports: bioimage.io, ONNX, TorchScript."""

from __future__ import annotations

from pathlib import Path

import pytest
from widget_helpers import errors


def _answer_save(monkeypatch, path: Path, chosen: str) -> None:
    from napari_unetseg._widgets import _model_section

    monkeypatch.setattr(
        _model_section.QFileDialog, "getSaveFileName", lambda *args: (str(path), chosen)
    )


def test_save_offers_the_export_formats(widget, tmp_path, monkeypatch, notes):
    from napari_unetseg._widgets._model_section import SAVE_FILTERS

    assert list(SAVE_FILTERS.values()) == [".safetensors", ".zip", ".onnx", ".ts"]
    # The suffix comes from the chosen filter when the name has none.
    _answer_save(monkeypatch, tmp_path / "unet", "TorchScript (*.ts)")
    widget.model_section._ask_save()
    assert (tmp_path / "unet.ts").is_file()
    assert errors(notes) == []


def test_save_onnx(widget, tmp_path, notes):
    pytest.importorskip("onnx")
    saved = widget.model_section.save(tmp_path / "m.onnx")
    assert saved == tmp_path / "m.onnx" and saved.stat().st_size > 0
    assert errors(notes) == []


def test_bioimageio_save_asks_for_authors(widget, tmp_path, monkeypatch, notes):
    from napari_unetseg._widgets import _model_section

    _answer_save(monkeypatch, tmp_path / "model.zip", "bioimage.io package (*.zip)")
    monkeypatch.setattr(_model_section.QInputDialog, "getText", lambda *args: ("", True))
    widget.model_section._ask_save()
    assert not (tmp_path / "model.zip").exists()  # no authors, no package

    pytest.importorskip("bioimageio.spec")
    pytest.importorskip("onnx")
    monkeypatch.setattr(
        _model_section.QInputDialog, "getText", lambda *args: ("Ada Lovelace, Alan Turing", True)
    )
    widget.model_section._ask_save()
    assert (tmp_path / "model.zip").is_file()
    assert errors(notes) == []
