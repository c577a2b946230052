"""Issue 13: ``Segmenter.train(progress=...)``: a bar only on a terminal unless asked."""

from __future__ import annotations

import io
import sys

import pytest

from napari_unetseg.core import Segmenter, TrainConfig
from napari_unetseg.core.synthetic import nuclei_scene
from napari_unetseg.core.train import wants_bar

QUICK = TrainConfig(max_epochs=1, steps_per_epoch=2, batch_size=2, patch_size=32, device="cpu")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("progress", "terminal", "bar"),
    [(None, True, True), (None, False, False), (True, False, True), (False, True, False)],
)
def test_a_bar_only_on_a_terminal_unless_asked(monkeypatch, progress, terminal, bar):
    stream = Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    assert wants_bar(progress) is bar
    scene = nuclei_scene((64, 64))
    seg = Segmenter.create(base_width=4, depth=2, device="cpu")
    seg.train(scene.image, scene.painted, QUICK, progress=progress)
    assert ("training:" in stream.getvalue()) is bar


def test_describe_counts_every_run_and_a_changed_file(tmp_path):
    scene = nuclei_scene((64, 64))
    seg = Segmenter.create(base_width=4, depth=2, device="cpu")
    seg.save(tmp_path / "m.safetensors")
    assert "file:" in seg.describe() and "not saved" not in seg.describe()
    first = seg.train(scene.image, scene.painted, QUICK, progress=False).steps
    second = seg.train(scene.image, scene.painted, QUICK, progress=False).steps
    text = seg.describe()
    assert f"{first + second} steps in 2 runs" in text
    assert "changed since; not saved" in text
    seg.save(tmp_path / "m.safetensors")
    assert "not saved" not in seg.describe()
