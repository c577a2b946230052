"""Helpers for the widget tests (imported by name: tests/ is not a package)."""

from __future__ import annotations

PLUGIN, WIDGET = "napari-unetseg", "U-Net Segmentation"
#: Training settings that keep tests to a few seconds on two CPU cores.
QUICK = {"steps_per_epoch": 4, "batch_size": 2, "patch_size": 64}


def errors(seen):
    return [message for severity, message, _ in seen if severity.lower() == "error"]


def wait_idle(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: not widget.session.busy, timeout=timeout)
