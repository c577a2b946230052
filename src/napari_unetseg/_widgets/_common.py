"""Small Qt helpers shared by the sections."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from qtpy.QtWidgets import QLabel, QWidget


def start_worker(
    job: Callable[..., Any],
    *args: Any,
    connect: dict[str, Callable[..., Any]],
    **kwargs: Any,
) -> Any:
    """Run ``job`` in a ``thread_worker``; its errors go to ``connect["errored"]`` only.

    superqt's worker class is used instead of napari's so that napari does not also turn a
    user error into a traceback notification: the widget reports it, in the main thread.
    """
    import inspect

    from napari.qt.threading import create_worker
    from superqt.utils import FunctionWorker, GeneratorWorker

    worker_class = GeneratorWorker if inspect.isgeneratorfunction(job) else FunctionWorker
    return create_worker(
        job,
        *args,
        _start_thread=True,
        _worker_class=worker_class,
        _connect=connect,
        _ignore_errors=True,
        **kwargs,
    )


def note_label(text: str = "", parent: QWidget | None = None) -> QLabel:
    """A wrapping, selectable label for status and descriptions."""
    label = QLabel(text, parent)
    label.setWordWrap(True)
    label.setTextInteractionFlags(label.textInteractionFlags() | _selectable())
    return label


def _selectable() -> Any:
    from qtpy.QtCore import Qt

    return Qt.TextInteractionFlag.TextSelectableByMouse


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


class WarmUp:
    """:func:`warm_up` in a plain Python thread, shared by every widget of the process.

    No Qt object is created or touched off the main thread: a Qt worker still importing
    torch when napari quits would emit into signal objects PyQt has already deleted
    (``RuntimeError: wrapped C/C++ object of type WorkerBaseSignals has been deleted``).
    The thread is not a daemon, so an exit waits for the import to finish cleanly.
    Widgets poll :attr:`done` from a timer they own, which dies with them.
    """

    _lock = threading.Lock()
    _shared: WarmUp | None = None

    def __init__(self) -> None:
        self.text: str | None = None
        self.thread = threading.Thread(target=self._run, name="napari-unetseg warm-up")
        self.thread.start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # the device stays unnamed; loading reports it
            self.text = warm_up()

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    @classmethod
    def start(cls) -> WarmUp:
        with cls._lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared


def warm_up() -> str:
    """Import what training needs, then say where the model computes (run in a worker).

    torch imports ``torch._dynamo`` the first time an optimiser is made, which holds the
    interpreter for up to half a second at a time; doing it here, when the widget docks,
    keeps that pause out of the first training run.
    """
    with contextlib.suppress(ImportError):
        import torch._dynamo  # noqa: F401
    return device_text()


def device_text() -> str:
    """Where the model computes, said plainly; imports the core (and so torch)."""
    from napari_unetseg.core.devices import describe_device, select_device

    device = select_device("auto")
    text = describe_device(device)
    if device.type == "cpu":
        return f"CPU — no GPU found. {text.split(';')[0]}."
    return text
