"""The part the Train and Segment sections share: one job at a time in a worker thread."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import QGroupBox, QHBoxLayout, QProgressBar, QPushButton, QWidget

from ._common import note_label
from ._notify import show_warning

if TYPE_CHECKING:
    import napari

    from ._session import Session


class JobSection(QGroupBox):
    """A start and a stop button, a progress bar and a status line around one worker.

    The session's ``busy`` flag keeps jobs of all sections from overlapping: it names the job
    that runs (``job_name``), every section's start button is off meanwhile, and only the
    running section's stop button is on.
    """

    #: What ``session.busy`` says while this section's job runs.
    job_name = ""

    def __init__(
        self,
        title: str,
        viewer: napari.Viewer,
        session: Session,
        start_text: str,
        stop_text: str,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(title, parent)
        self.viewer = viewer
        self.session = session
        self.worker: Any = None
        self.stop_event = threading.Event()
        self.start_button = QPushButton(start_text)
        self.stop_button = QPushButton(stop_text)
        self.stop_button.setEnabled(False)
        self.buttons = QHBoxLayout()
        self.buttons.addWidget(self.start_button)
        self.buttons.addWidget(self.stop_button)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.setFixedHeight(8)  # a thin bar: the status line says the numbers
        self.status = note_label("")
        session.busy_changed.connect(self._busy)

    def _busy(self, busy: str) -> None:
        self.start_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy == self.job_name)

    def another_job_runs(self) -> bool:
        """True, with a warning to the user, while any section's job runs."""
        if self.session.busy:
            show_warning(f"Wait until {self.session.busy} has finished, or stop it.")
            return True
        return False

    def begin(self, status: str) -> threading.Event:
        """Mark the session busy with this job; returns the job's fresh stop event."""
        self.stop_event = threading.Event()
        self.progress.setValue(0)
        self.status.setText(status)
        self.session.busy = self.job_name
        return self.stop_event

    def request_stop(self, status: str) -> None:
        """Ask the running job to end at its next check."""
        if self.worker is not None:
            self.stop_event.set()
            self.status.setText(status)

    def _on_finished(self) -> None:
        self.worker = None
        self.session.busy = ""
