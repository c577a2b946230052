"""Issue 14, item 18: docking the widget and closing napari at once leaves no error behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import napari_unetseg

OPEN_AND_CLOSE = """
import sys
import napari

viewer = napari.Viewer(show=False)
_, widget = viewer.window.add_plugin_dock_widget("napari-unetseg", "U-Net Segmentation")
assert "torch._dynamo" not in sys.modules, "the warm-up had nothing to do"
assert widget.warm_up is not None
viewer.close()
print("closed while warming up", flush=True)
"""


def test_closing_napari_while_the_widget_warms_up_is_clean() -> None:
    src = str(Path(napari_unetseg.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src, "QT_QPA_PLATFORM": "offscreen"}
    run = subprocess.run(
        [sys.executable, "-c", OPEN_AND_CLOSE],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "closed while warming up" in run.stdout
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert "has been deleted" not in run.stderr
