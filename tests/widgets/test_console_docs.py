"""docs/console.md's examples run as written in napari's console (with one short epoch)."""

from __future__ import annotations

import re
from pathlib import Path

from widget_helpers import PLUGIN, WIDGET

DOC = Path(__file__).resolve().parents[2] / "docs" / "console.md"


def test_console_examples_run_with_and_without_a_model(viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    viewer.open_sample(PLUGIN, "nuclei")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 3
    namespace = {"viewer": viewer}
    quick = "max_epochs=1, steps_per_epoch=2, batch_size=2, patch_size=64"
    for block in blocks:  # the first runs before any model exists
        code = re.sub(r"max_seconds=\d+", quick, block)
        exec(compile(code, str(DOC), "exec"), namespace)
    assert (tmp_path / "nuclei.safetensors").exists()
    assert widget.segmenter is not None and widget.segmenter.is_trained
    assert "nuclei segmentation (console)" in viewer.layers
    qtbot.waitUntil(lambda: widget.warm_up is None, timeout=30_000)
