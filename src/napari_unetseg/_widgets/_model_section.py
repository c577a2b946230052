"""Model section: what is loaded; load any weights file, make a new model, save."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._common import Fold, compact, narrow_form, note_label, start_worker
from ._notify import report_exception, show_error, show_info

if TYPE_CHECKING:
    from ._session import Session

NO_MODEL = (
    "No model yet. Paint on a Labels layer and press Start under Train to make one, "
    "load a weights file, or make a new model (under Details)."
)
#: What the Model box says about a model while it trains (instead of "not trained yet").
TRAINING = "training… (the best weights are kept when it ends)"
WEIGHTS_FILTER = (
    "Weights (*.safetensors *.pth *.pt *.ckpt *.bin *.ts *.torchscript *.zip);;All files (*)"
)


#: Save dialog filters: napari-unetseg's own file, then the exchange formats of ``export``.
SAVE_FILTERS = {
    "napari-unetseg weights (*.safetensors)": ".safetensors",
    "bioimage.io package (*.zip)": ".zip",
    "ONNX (*.onnx)": ".onnx",
    "TorchScript (*.ts)": ".ts",
}
EXPORT_SUFFIXES = (".zip", ".onnx", ".ts", ".torchscript")


def _load(path: str, trust_code: bool = False) -> Any:
    from napari_unetseg.core import Segmenter

    return Segmenter.load(path, trust_code=trust_code)


def ask_trust(parent: QWidget | None, path: str | Path) -> bool:
    """Ask before loading a file that holds code; No is the default answer."""
    from napari_unetseg.core.trust import CONSENT_QUESTION

    answer = QMessageBox.question(
        parent,
        "This file contains code",
        CONSENT_QUESTION.format(name=Path(path).name),
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return bool(answer == QMessageBox.StandardButton.Yes)


def summarise(segmenter: Any, lines: list[str]) -> str:
    """Two short lines: what the model is and how it was trained; its file."""
    config = segmenter.config
    kind = "objects" if segmenter.is_objects else f"{config.n_classes} classes"
    state = next(
        (line for line in lines if line.startswith(("trained", "not trained", TRAINING))), ""
    )
    if segmenter.source is None:
        file = "not saved"
    else:
        file = Path(segmenter.source).name
        if segmenter.changed_since_saved:
            file += " (changed since; not saved)"
    return f"U-Net, {config.in_channels} channel(s) → {kind}; {state}\nfile: {file}"


class ModelSection(QGroupBox):
    """Shows ``describe()`` of the session's model and changes the model."""

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__("Model", parent)
        self.session = session
        self.worker: Any = None

        self.summary = note_label(NO_MODEL)
        self.summary.setObjectName("model_summary")
        self.info = note_label(NO_MODEL)
        self.info.setObjectName("model_info")
        self.load_button = QPushButton("Load…")
        self.load_button.setToolTip(
            "Load weights: napari-unetseg .safetensors, Pytorch-UNet .pth, TorchScript, "
            "bioimage.io .zip."
        )
        self.save_button = QPushButton("Save…")
        self.load_button.clicked.connect(self._ask_load)
        self.save_button.clicked.connect(self._ask_save)
        self.details = Fold("Details")
        files = QHBoxLayout()
        files.addWidget(self.load_button)
        files.addWidget(self.save_button)
        files.addWidget(self.details.button)  # the fold's arrow sits beside the buttons

        self.channels = QSpinBox()
        self.channels.setRange(1, 64)
        self.channels.setToolTip("Image channels: 1 for grayscale, 3 for RGB.")
        self.classes = QSpinBox()
        self.classes.setRange(2, 64)
        self.classes.setToolTip("Classes including background: 2 = background + one class.")
        self.objects = QCheckBox("objects")
        self.objects.setToolTip(
            "Separate touching objects: each object gets its own label (3 outputs)."
        )
        self.objects.toggled.connect(lambda on: self.classes.setEnabled(not on))
        self.new_button = QPushButton("New model")
        self.new_button.clicked.connect(self.new_model)
        new = narrow_form()
        new.addRow("channels", self.channels)
        new.addRow("classes", self.classes)
        make = QHBoxLayout()
        make.addWidget(self.objects)
        make.addWidget(self.new_button)
        new.addRow(make)

        self.details.add(self.info)
        self.details.add(new)
        layout = QVBoxLayout(self)
        compact(layout)
        layout.addWidget(self.summary)
        layout.addLayout(files)
        layout.addWidget(self.details)

        session.changed.connect(self.show_model)
        session.busy_changed.connect(self._busy)
        self.show_model(session.segmenter)

    # ------------------------------------------------------------------ display

    def show_model(self, segmenter: Any = None) -> None:
        """Show the session's model as it is now, and set the new-model controls to match."""
        segmenter = self.session.segmenter
        training = self.session.busy == "training"
        self.save_button.setEnabled(segmenter is not None and not self.session.busy)
        if segmenter is None:
            self.summary.setText(TRAINING.capitalize() if training else NO_MODEL)
            self.info.setText(self.summary.text())
            return
        lines = segmenter.describe().splitlines()
        if training:
            lines = [
                TRAINING if line.startswith(("trained", "not trained yet")) else line
                for line in lines
            ]
        self.info.setText("\n".join(lines))
        self.summary.setText(summarise(segmenter, lines))
        config = segmenter.config
        self.channels.setValue(int(config.in_channels))
        self.objects.setChecked(segmenter.is_objects)
        if not segmenter.is_objects:
            self.classes.setValue(int(config.n_classes))

    def _busy(self, busy: str) -> None:
        for button in (self.load_button, self.new_button):
            button.setEnabled(not busy)
        self.show_model()

    # ------------------------------------------------------------------ actions

    def _ask_load(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load U-Net weights", "", WEIGHTS_FILTER)
        if path:
            self.load(path)

    def load(self, path: str | Path) -> Any:
        """Load a weights file in a worker thread; the model replaces the current one.

        A file that holds code (TorchScript) is loaded only after the user confirms a question.
        """
        from napari_unetseg.core.trust import requires_trust

        if self.session.busy:
            show_error(f"The model is busy {self.session.busy}; wait or press Stop, then load.")
            return None
        name = Path(path).name
        trust = requires_trust(path)
        if trust and not ask_trust(self, path):
            show_info(f"{name} was not loaded: it contains code and was not trusted.")
            return None
        self.load_button.setEnabled(False)
        self.info.setText(f"Loading {name}…")
        self.worker = start_worker(
            _load,
            str(path),
            trust,
            connect={
                "returned": self._loaded,
                "errored": lambda error: report_exception(error, f"Could not load {name}"),
                "finished": self._load_finished,
            },
        )
        return self.worker

    def _loaded(self, segmenter: Any) -> None:
        self.session.segmenter = segmenter

    def _load_finished(self) -> None:
        self.worker = None
        self.load_button.setEnabled(not self.session.busy)
        self.show_model()

    def new_model(self) -> None:
        from napari_unetseg.core import Segmenter, UnetSegError

        if self.session.busy:
            show_error(f"The model is busy {self.session.busy}; wait or press Stop first.")
            return
        try:
            self.session.segmenter = Segmenter.create(
                in_channels=self.channels.value(),
                n_classes=3 if self.objects.isChecked() else self.classes.value(),
                task="objects" if self.objects.isChecked() else "semantic",
            )
        except UnetSegError as error:
            show_error(f"Could not make the model: {error}")

    def _ask_save(self) -> None:
        path, chosen = QFileDialog.getSaveFileName(
            self, "Save U-Net weights", "unet.safetensors", ";;".join(SAVE_FILTERS)
        )
        if not path:
            return
        suffix = SAVE_FILTERS.get(chosen, ".safetensors")
        if Path(path).suffix.lower() not in (*SAVE_FILTERS.values(), ".torchscript", ".pt", ".pth"):
            path += suffix
        authors: list[str] = []
        if Path(path).suffix.lower() == ".zip":
            text, ok = QInputDialog.getText(
                self, "bioimage.io package", "Authors of the model (comma-separated):"
            )
            authors = [name.strip() for name in text.split(",") if name.strip()]
            if not (ok and authors):
                show_info("Not saved: a bioimage.io package names its authors.")
                return
        self.save(path, authors=authors)

    def save(self, path: str | Path, *, authors: list[str] | None = None) -> Path | None:
        """Save the current model, or export it when the name ends in .zip, .onnx or .ts.

        ``.safetensors`` (recommended) keeps everything napari-unetseg needs; ``.zip`` writes a
        bioimage.io package (``authors`` required), ``.onnx`` ONNX, ``.ts`` TorchScript.
        """
        from napari_unetseg.core import UnetSegError

        segmenter = self.session.segmenter
        if segmenter is None:
            show_error("There is no model to save yet: train or load one first.")
            return None
        try:
            if Path(path).suffix.lower() in EXPORT_SUFFIXES:
                details = {"authors": authors} if authors else {}
                saved: Path = segmenter.export(path, **details)
            else:
                saved = segmenter.save(path)
        except (UnetSegError, OSError) as error:
            show_error(f"Could not save to {path}: {error}")
            return None
        show_info(f"Saved the model to {saved}")
        self.show_model()
        return saved
