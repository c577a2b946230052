"""User-facing messages: napari notifications, shown from the main thread only.

A toast holds about one line; a longer message is shown shortened, with a "Details…" button
that opens the full text, which also goes to the ``napari_unetseg`` logger.
"""

from __future__ import annotations

import logging
from typing import Any

from napari.utils.notifications import (
    Notification,
    NotificationSeverity,
    notification_manager,
)

__all__ = ["report_exception", "short_message", "show_error", "show_info", "show_warning"]

#: Longest message a toast shows whole (characters); longer ones get a "Details…" button.
TOAST_CHARS = 160

logger = logging.getLogger("napari_unetseg")


def short_message(message: str, limit: int = TOAST_CHARS) -> str:
    """``message`` itself when short; else its first sentences that fit, or a cut at a word."""
    if len(message) <= limit:
        return message
    cut = message[: limit - 1]
    end = max(cut.rfind(". "), cut.rfind(": "), cut.rfind("; "))
    if end >= limit // 3:
        return cut[: end + 1] + " …"
    return cut.rsplit(" ", 1)[0] + " …"


def show_details(message: str, parent: Any = None) -> None:
    """The full text of a message, in a dialog the user can read and copy from."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QMessageBox

    box = QMessageBox(parent)
    box.setWindowTitle("napari-unetseg")
    box.setText(message)
    box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    box.setStandardButtons(QMessageBox.StandardButton.Close)
    box.exec_() if hasattr(box, "exec_") else box.exec()


def _notify(message: str, severity: NotificationSeverity, level: int) -> None:
    logger.log(level, message)
    short = short_message(message)
    actions = () if short == message else (("Details…", lambda toast: show_details(message)),)
    notification_manager.dispatch(Notification(short, severity, actions=actions))


def show_error(message: str) -> None:
    _notify(message, NotificationSeverity.ERROR, logging.ERROR)


def show_warning(message: str) -> None:
    _notify(message, NotificationSeverity.WARNING, logging.WARNING)


def show_info(message: str) -> None:
    _notify(message, NotificationSeverity.INFO, logging.INFO)


def report_exception(error: BaseException, doing: str) -> str:
    """Show a worker's error: the core's own message for user errors, a traceback for bugs.

    Returns the text for the section's status line (the whole message, which wraps there).
    """
    from napari_unetseg.core import UnetSegError

    from ._jobs import JobFailed

    if isinstance(error, JobFailed):
        error = error.cause
    if isinstance(error, UnetSegError):
        message = f"{doing}: {error}"
    elif "out of memory" in str(error).lower():
        message = (
            f"{doing} ran out of memory. Lower the tile size (Segment) or segment the visible "
            "plane only; for training, paint a smaller region or close other programs."
        )
    else:  # a bug: napari shows it with its traceback
        notification_manager.receive_error(type(error), error, error.__traceback__)
        return f"{doing} failed: {type(error).__name__}: {error}"
    show_error(message)
    return message
