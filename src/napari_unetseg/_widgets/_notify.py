"""User-facing messages: napari notifications, shown from the main thread only."""

from __future__ import annotations

from napari.utils.notifications import notification_manager, show_error, show_info, show_warning

__all__ = ["report_exception", "show_error", "show_info", "show_warning"]


def report_exception(error: BaseException, doing: str) -> None:
    """Show a worker's error: the core's own message for user errors, a traceback for bugs."""
    from napari_unetseg.core import UnetSegError

    from ._jobs import JobFailed

    if isinstance(error, JobFailed):
        error = error.cause
    if isinstance(error, UnetSegError):
        show_error(f"{doing}: {error}")
    elif "out of memory" in str(error).lower():
        show_error(
            f"{doing} ran out of memory. Lower the tile size (Segment) or segment the visible "
            "plane only; for training, paint a smaller region or close other programs."
        )
    else:  # a bug: napari shows it with its traceback
        notification_manager.receive_error(type(error), error, error.__traceback__)
