"""Issue 13: the dock fits a laptop: 400 px wide with nothing cut off, an honest minimum size,
advanced options folded away, Segment reachable without scrolling at 1366x768."""

from __future__ import annotations

import pytest
from qtpy.QtCore import QPoint
from qtpy.QtWidgets import QApplication, QWidget
from widget_helpers import PLUGIN, WIDGET

from napari_unetseg._widgets._common import Fold


@pytest.fixture
def shown(make_napari_viewer, qtbot):
    """The widget docked in a shown viewer, with the sample loaded."""
    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "nuclei")
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    yield viewer, dock, widget
    qtbot.waitUntil(lambda: widget.warm_up is None, timeout=30_000)


def settle(times: int = 5) -> None:
    for _ in range(times):
        QApplication.processEvents()


#: Pixels a field may lose to QFormLayout's rounding with wrapping rows (seen: 2 px on a combo
#: box, whose hint includes its padding); a cut-off button or unit loses tens of pixels.
TOLERANCE = 3


def effective_minimum(child) -> int:
    """The width Qt's layouts keep: an explicit minimum (napari's style sets some), else the hint."""
    return child.minimumWidth() if child.minimumWidth() > 0 else child.minimumSizeHint().width()


def cut_off(widget) -> list[str]:
    """Visible children narrower than they need, or reaching past the scroll area's viewport."""
    viewport = widget.scroll_area.viewport()
    found = []
    for child in widget.content.findChildren(QWidget):
        if not child.isVisibleTo(widget) or child.parent() is None:
            continue
        needed = effective_minimum(child)
        right = child.mapTo(widget.content, QPoint(child.width(), 0)).x()
        if child.width() + TOLERANCE < needed or right > viewport.width() + 1:
            text = child.text() if hasattr(child, "text") and callable(child.text) else ""
            found.append(f"{type(child).__name__} {text!r}: {child.width()} < {needed} or {right}")
    return found


def float_at_width(dock, widget, width: int) -> None:
    dock.setFloating(True)
    settle()
    dock.resize(width + (dock.width() - widget.width()), 700)
    settle()


def test_advanced_options_fold_away(shown):
    _, _, widget = shown
    train, segment = widget.train_section, widget.segment_section
    for option in (train.base_width, train.depth_box, train.learning_rate, train.validation):
        assert not option.isVisibleTo(widget)
    assert not segment.tile_size.isVisibleTo(widget)
    train.advanced.set_expanded(True)
    assert train.learning_rate.isVisibleTo(widget)


def test_nothing_is_cut_off_at_400_px(shown):
    _, dock, widget = shown
    for fold in widget.findChildren(Fold):
        fold.set_expanded(True)
    settle()
    assert widget.minimumSizeHint().width() <= 400
    float_at_width(dock, widget, 400)
    assert widget.width() <= 400
    assert cut_off(widget) == []
    assert widget.content.width() <= widget.scroll_area.viewport().width()
    assert not widget.scroll_area.horizontalScrollBar().isVisible()


def test_the_reported_minimum_width_is_the_truth(shown):
    """At its reported minimum nothing is cut; 20 px less and something would be."""
    _, dock, widget = shown
    for fold in widget.findChildren(Fold):
        fold.set_expanded(True)
    settle()
    minimum = widget.minimumSizeHint().width()
    dock.setFloating(True)
    widget.setFixedWidth(minimum)
    settle()
    assert widget.width() == minimum
    assert cut_off(widget) == []
    widget.scroll_area.setMinimumWidth(0)  # overrule the widget: 20 px less than it reports
    widget.setFixedWidth(minimum - 20)
    settle()
    assert cut_off(widget) != []


def test_long_texts_wrap_instead_of_widening(shown):
    _, dock, widget = shown
    float_at_width(dock, widget, 400)
    widget.train_section.status.setText("a long status line " * 20)
    settle()
    assert widget.minimumSizeHint().width() <= 400
    assert cut_off(widget) == []


def test_segment_is_reachable_without_scrolling_on_a_laptop(shown):
    viewer, _, widget = shown
    # 1366x768 less a taskbar and a title bar
    viewer.window._qt_window.resize(1366, 768 - 70)
    settle(10)
    button = widget.segment_section.start_button
    bottom = button.mapTo(widget.scroll_area.viewport(), QPoint(0, button.height())).y()
    assert 0 < bottom <= widget.scroll_area.viewport().height()


def test_the_demo_window_shows_the_image(make_napari_viewer, qtbot):
    from napari_unetseg._widgets._demo import DEMO_SIZE, fit_window, open_demo

    viewer = make_napari_viewer(show=True)
    width, height = fit_window(viewer, DEMO_SIZE)
    assert (width, height) <= DEMO_SIZE
    window = viewer.window._qt_window
    window.resize(*DEMO_SIZE)  # as on a screen that has room for it
    widget = open_demo(viewer)
    settle(10)
    canvas = viewer.window._qt_viewer.canvas.native
    assert canvas.width() >= 512 and canvas.height() >= 512  # the sample at 100 %
    assert widget.width() <= 400
    qtbot.waitUntil(lambda: widget.warm_up is None, timeout=30_000)
