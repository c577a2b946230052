"""Regenerate the screenshots in docs/images/ by driving a real napari viewer.

    python docs/make_screenshots.py [--seconds 20]

Needs a display; on a headless Linux machine it starts Xvfb itself when ``DISPLAY`` is not
set (``apt-get install xvfb libgl1-mesa-dri``). Writes:

- ``docs/images/demo-1920x1080.png`` and ``docs/images/demo-1366x768.png``: the whole window
  at those sizes, after a short training and a segmentation (the result under the strokes);
  the loss plot is unfolded where a screen that size would unfold it;
- ``docs/images/main.png``: the same as the 1920x1080 picture (README shows it);
- ``docs/images/widget.png``: the dock widget alone, at 1366x768;
- ``docs/images/sample.png``: the sample image with its painted strokes, before training.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

IMAGES = Path(__file__).resolve().parent / "images"


@contextlib.contextmanager
def display() -> Iterator[None]:
    """A virtual display when there is none."""
    if os.environ.get("DISPLAY") or shutil.which("Xvfb") is None:
        yield
        return
    number = 90 + os.getpid() % 100
    server = subprocess.Popen(
        ["Xvfb", f":{number}", "-screen", "0", "1920x1200x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ["DISPLAY"] = f":{number}"
    time.sleep(1.0)
    try:
        yield
    finally:
        server.terminate()
        server.wait(timeout=10)


def wait(condition: Callable[[], bool], timeout: float = 600.0) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("the viewer did not finish in time")
        QApplication.processEvents()
        time.sleep(0.01)


def settle(seconds: float = 0.5) -> None:
    """Let the viewer draw for a moment."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def close_notifications() -> None:
    """Close napari's toasts (such as a warning about the Qt version) before a picture."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from qtpy.QtWidgets import QApplication

    for window in QApplication.topLevelWidgets():
        for toast in window.findChildren(NapariQtNotification):
            toast.close()


def picture(viewer: object, widget: object, size: tuple[int, int], name: str) -> None:
    """The whole window at ``size``, as a screen of that size would show it."""
    from napari_unetseg._widgets._demo import fit_window

    window = viewer.window._qt_window  # type: ignore[attr-defined]
    window.showNormal()
    fit_window(viewer, size)
    widget.train_section.plot_fold.set_expanded(size[1] >= 1000)  # type: ignore[attr-defined]
    settle(1.0)
    viewer.reset_view()  # type: ignore[attr-defined]
    settle(0.5)
    close_notifications()
    settle(0.3)
    window.grab().save(str(IMAGES / name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=45.0, help="training budget")
    args = parser.parse_args()
    IMAGES.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
    with display():
        import napari

        from napari_unetseg._widgets._demo import fit_window, open_demo

        viewer = napari.Viewer(title="napari-unetseg", show=True)
        fit_window(viewer, (1920, 1080))
        widget = open_demo(viewer)
        wait(lambda: widget.warm_up is None)
        viewer.reset_view()
        settle(1.0)
        viewer.screenshot(str(IMAGES / "sample.png"), canvas_only=True, flash=False)

        train = widget.train_section
        train.budget.setValue(int(args.seconds))
        # shorter epochs than the default 25 steps, so that a short run draws a curve
        train.extra_settings = {"steps_per_epoch": 8, "batch_size": 4}
        train.start_button.click()
        wait(lambda: not widget.session.busy)
        widget.segment_section.start_button.click()
        wait(lambda: not widget.session.busy)
        viewer.layers["nuclei segmentation"].opacity = 0.6

        picture(viewer, widget, (1920, 1080), "demo-1920x1080.png")
        shutil.copyfile(IMAGES / "demo-1920x1080.png", IMAGES / "main.png")
        picture(viewer, widget, (1366, 768), "demo-1366x768.png")
        widget.grab().save(str(IMAGES / "widget.png"))
        print(train.status.text())
        print("wrote", ", ".join(sorted(p.name for p in IMAGES.glob("*.png"))))
        viewer.close()


if __name__ == "__main__":
    main()
