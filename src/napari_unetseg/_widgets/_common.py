"""Small Qt helpers shared by the sections."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QLabel,
    QLayout,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)


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


def narrow_form() -> QFormLayout:
    """A form whose labels go above their fields when the dock is too narrow for both."""
    form = QFormLayout()
    form.setVerticalSpacing(4)
    form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    return form


def narrow_combo(min_chars: int = 10) -> QComboBox:
    """A combo box that asks for ``min_chars`` characters of width, not its longest item."""
    combo = QComboBox()
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(min_chars)
    return combo


def compact(layout: QLayout) -> QLayout:
    """Tighter margins and spacing than Qt's defaults: the dock must fit a laptop's height."""
    layout.setContentsMargins(6, 6, 6, 6)
    layout.setSpacing(4)
    return layout


class Fold(QWidget):
    """A titled part of a section that folds away under a small arrow button."""

    toggled = Signal(bool)

    def __init__(self, title: str, expanded: bool = False, parent: QWidget | None = None) -> None:
        from qtpy.QtCore import Qt

        super().__init__(parent)
        self.button = QToolButton()
        self.button.setText(title)
        self.button.setCheckable(True)
        self.button.setAutoRaise(True)
        self.button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.body = QWidget()
        self.body_layout = QVBoxLayout(self.body)
        self.body_layout.setContentsMargins(8, 0, 0, 0)
        self.body_layout.setSpacing(4)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.button)
        layout.addWidget(self.body)
        self.button.toggled.connect(self.set_expanded)
        self.set_expanded(expanded)

    def add(self, item: QWidget | QLayout) -> None:
        if isinstance(item, QLayout):
            self.body_layout.addLayout(item)
        else:
            self.body_layout.addWidget(item)

    def is_expanded(self) -> bool:
        return self.button.isChecked()

    def set_expanded(self, expanded: bool) -> None:
        from qtpy.QtCore import Qt

        self.button.blockSignals(True)
        self.button.setChecked(expanded)
        self.button.blockSignals(False)
        self.button.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        self.body.setVisible(expanded)
        self.toggled.emit(expanded)


def tall_screen(height: int = 1000) -> bool:
    """True when the screen leaves at least ``height`` px for the window (room for the plot)."""
    from qtpy.QtWidgets import QApplication

    screen = QApplication.primaryScreen()
    return screen is not None and screen.availableGeometry().height() >= height


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
    with contextlib.suppress(Exception):  # the ordinary import then loads the libraries
        preload_torch_libraries()
    with contextlib.suppress(ImportError):
        import torch._dynamo  # noqa: F401
    return device_text()


def preload_torch_libraries() -> bool:
    """Load torch's shared libraries without holding the GIL, before ``import torch``.

    CPython holds the GIL while it loads an extension module, so loading libtorch (hundreds
    of MB, and its static initialisers) stopped napari's event loop for 0.3-0.4 s even from
    this background thread. libc's ``dlopen`` called through ctypes runs with the GIL
    released; ``import torch`` then finds the libraries loaded. Linux only; returns whether
    the libraries were loaded here.
    """
    import ctypes
    import importlib.util
    import os
    import sys
    from pathlib import Path

    if not sys.platform.startswith("linux") or "torch" in sys.modules:
        return False
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    library = Path(next(iter(spec.submodule_search_locations))) / "lib" / "libtorch_python.so"
    if not library.is_file():
        return False
    dlopen = ctypes.CDLL(None).dlopen
    dlopen.restype = ctypes.c_void_p
    dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return bool(dlopen(os.fsencode(library), os.RTLD_NOW | os.RTLD_LOCAL))


def device_text() -> str:
    """Where the model computes, said plainly; imports the core (and so torch)."""
    from napari_unetseg.core.devices import describe_device, select_device

    device = select_device("auto")
    text = describe_device(device)
    if device.type == "cpu":
        return f"CPU — no GPU found. {text.split(';')[0]}."
    return text
