"""Fixtures for widget tests: a real viewer with the plugin docked from its manifest."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from widget_helpers import PLUGIN, QUICK, WIDGET


@pytest.fixture
def tiny_segmenter():
    from napari_unetseg.core import Segmenter

    def make(**kwargs):
        kwargs.setdefault("base_width", 4)
        kwargs.setdefault("depth", 2)
        kwargs.setdefault("device", "cpu")
        return Segmenter.create(**kwargs)

    return make


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def widget(viewer, qtbot, tiny_segmenter):
    """The dock widget, added through the manifest, holding a tiny model for speed."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget.session.segmenter = tiny_segmenter()
    widget.train_section.extra_settings = dict(QUICK)
    widget.train_section.live_preview.setChecked(False)
    yield widget
    # no worker may outlive its test
    widget.train_section.stop()
    widget.segment_section.cancel()
    qtbot.waitUntil(lambda: not widget.session.busy and widget.warm_up is None, timeout=30_000)


@pytest.fixture
def notes():
    """Notifications napari shows while a test runs, as (severity, message, kind)."""
    from napari.utils.notifications import notification_manager

    seen: list[tuple[str, str, str]] = []

    def record(notification):
        seen.append((str(notification.severity), notification.message, type(notification).__name__))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


@pytest.fixture
def scene():
    from napari_unetseg.core.synthetic import nuclei_scene

    return nuclei_scene(shape=(192, 192), seed=1)
