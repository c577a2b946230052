"""The one model a viewer's widgets share, reachable from the napari console."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from psygnal import Signal

if TYPE_CHECKING:
    import napari

    from napari_unetseg.core import Segmenter


class Session:
    """Holds the viewer's current :class:`~napari_unetseg.core.Segmenter` and what uses it.

    ``changed`` fires (in the main thread) whenever another model is put in place, so every
    section shows the same model. ``busy`` names the job that holds the model ("training",
    "segmenting") or is empty.
    """

    changed = Signal(object)
    busy_changed = Signal(str)

    def __init__(self) -> None:
        self._segmenter: Segmenter | None = None
        self._busy = ""

    @property
    def segmenter(self) -> Segmenter | None:
        return self._segmenter

    @segmenter.setter
    def segmenter(self, value: Segmenter | None) -> None:
        self._segmenter = value
        self.changed.emit(value)

    @property
    def busy(self) -> str:
        return self._busy

    @busy.setter
    def busy(self, value: str) -> None:
        self._busy = value
        self.busy_changed.emit(value)


_SESSIONS: weakref.WeakKeyDictionary[Any, Session] = weakref.WeakKeyDictionary()


def session_for(viewer: napari.Viewer) -> Session:
    """The session of ``viewer``, made on first use."""
    session = _SESSIONS.get(viewer)
    if session is None:
        session = _SESSIONS[viewer] = Session()
    return session


def _viewer_or_current(viewer: napari.Viewer | None) -> napari.Viewer:
    if viewer is None:
        import napari

        viewer = napari.current_viewer()
        if viewer is None:
            raise RuntimeError(
                "no napari viewer is open; pass the viewer: current_segmenter(viewer)."
            )
    return viewer


def current_segmenter(viewer: napari.Viewer | None = None) -> Segmenter | None:
    """The model the U-Net widget of ``viewer`` trains and segments with (None before any).

    Examples
    --------
    In the napari console (``viewer`` is defined there)::

        from napari_unetseg._widgets import current_segmenter
        seg = current_segmenter(viewer)
        print(seg.describe())
    """
    return session_for(_viewer_or_current(viewer)).segmenter


def set_segmenter(viewer: napari.Viewer | None, segmenter: Segmenter | None) -> None:
    """Make ``segmenter`` the model of ``viewer``'s U-Net widget (it shows it at once)."""
    session = session_for(_viewer_or_current(viewer))
    if session.busy:
        raise RuntimeError(
            f"the U-Net widget is {session.busy}; stop it before changing the model."
        )
    session.segmenter = segmenter
