"""The *Adapt to these pictures* dialog (without labels: AdaBN or TENT) and the *Adapt with labels* dialog.

The dialog only asks and shows: the page that opens it runs the work (engine.shift.adapt) as a background job and
reports back with ``show_progress``, ``show_result`` and ``show_error``."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QButtonGroup, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QProgressBar, QPushButton, QRadioButton, QSpinBox, QVBoxLayout, QWidget)

from gui.widgets.pictures import VERMILLION

INTRO = {
    "unlabelled": ("<b>Adapt the model to new pictures, without labels.</b> The model re-learns how bright, how "
                   "colourful and how sharp pictures are from the new pictures (it re-estimates its BatchNorm "
                   "statistics in the layers that see colour, contrast, blur and noise). It learns nothing about the "
                   "classes, so it cannot fix a model that confuses them. The result is a <b>new run</b> next to "
                   "this one; this run is not changed."),
    "labels": ("<b>Adapt with labels.</b> Put a few labelled new pictures in sub-folders named like the model's "
               "classes (for example <i>new/ants</i>, <i>new/bees</i>). A short run trains on them, starting from "
               "this run's weights with its strategy; then both models are compared on labelled pictures held out "
               "from training, and the better one is suggested."),
}
METHODS = [("adabn", "AdaBN (recommended, fast)",
            "Re-estimates the BatchNorm statistics of the first half of the network from the new pictures, mixed "
            "with the original ones. Fast, and safe when there is a real change in how pictures look."),
           ("tent", "TENT (AdaBN, then a pass of fine-tuning without labels)",
            "AdaBN first, then the model is nudged to be more certain on the new pictures (entropy minimisation on "
            "the BatchNorm scale and shift). Slower, and measured worse than AdaBN alone on blurred and JPEG-damaged "
            "pictures; a result that pushes the answers towards one class is refused.")]


class AdaptDialog(QDialog):
    """``mode``: "unlabelled" (AdaBN / TENT) or "labels"."""

    adaptRequested = Signal(str, str, int)  # folder, method ("adabn", "tent" or "labels"), epochs
    useRequested = Signal(str)  # a run folder the user wants to predict with
    cancelRequested = Signal()

    def __init__(self, mode: str, run_name: str, folder: str = "", drift_sentence: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.mode = mode
        self.result_run: str | None = None
        self.setWindowTitle("Adapt to these pictures" if mode == "unlabelled" else "Adapt with labels")
        self.setMinimumWidth(620)
        intro = QLabel(INTRO[mode] + f"<br><br>Model: <b>{html.escape(run_name)}</b>")
        intro.setWordWrap(True)
        intro.setTextFormat(Qt.TextFormat.RichText)
        self.folder_edit = QLineEdit(folder)
        self.folder_edit.setToolTip("The folder of new pictures (its sub-folders too).")
        self.folder_button = QPushButton("Choose...")
        self.folder_button.clicked.connect(self._choose)
        row = QHBoxLayout()
        row.addWidget(self.folder_edit, 1)
        row.addWidget(self.folder_button)
        form = QFormLayout()
        form.addRow("New pictures", row)
        self.methods = QButtonGroup(self)
        self.epochs = QSpinBox()
        if mode == "unlabelled":
            box = QVBoxLayout()
            for i, (key, label, tip) in enumerate(METHODS):
                button = QRadioButton(label)
                button.setToolTip(tip)
                button.setProperty("method", key)
                button.setChecked(i == 0)
                self.methods.addButton(button, i)
                box.addWidget(button)
                note = QLabel(f"<small>{html.escape(tip)}</small>")
                note.setWordWrap(True)
                note.setContentsMargins(22, 0, 0, 4)
                box.addWidget(note)
            form.addRow("Method", box)
        else:
            self.epochs.setRange(1, 50)
            self.epochs.setValue(5)
            self.epochs.setToolTip("Epochs of the short run on the labelled pictures.")
            form.addRow("Epochs", self.epochs)
        self.measured = QLabel(drift_sentence and f"<b>What the drift report says:</b> {html.escape(drift_sentence)}")
        self.measured.setWordWrap(True)
        self.measured.setTextFormat(Qt.TextFormat.RichText)
        self.measured.setVisible(bool(drift_sentence))
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.result = QLabel("")
        self.result.setWordWrap(True)
        self.result.setTextFormat(Qt.TextFormat.RichText)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.buttons = QDialogButtonBox()
        self.go_button = self.buttons.addButton("Adapt" if mode == "unlabelled" else "Train on them",
                                                QDialogButtonBox.ButtonRole.ActionRole)
        self.use_button = self.buttons.addButton("Predict with the adapted model",
                                                 QDialogButtonBox.ButtonRole.AcceptRole)
        self.use_button.setVisible(False)
        self.cancel_button = self.buttons.addButton("Stop", QDialogButtonBox.ButtonRole.ActionRole)
        self.cancel_button.setVisible(False)
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.go_button.clicked.connect(self._go)
        self.use_button.clicked.connect(lambda: self.result_run and self.useRequested.emit(self.result_run))
        self.cancel_button.clicked.connect(self.cancelRequested.emit)
        self.close_button.clicked.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.measured)
        layout.addWidget(self.progress)
        layout.addWidget(self.result)
        layout.addStretch(1)
        layout.addWidget(self.buttons)

    def method(self) -> str:
        if self.mode == "labels":
            return "labels"
        button = self.methods.checkedButton()
        return button.property("method") if button is not None else "adabn"

    def ask_folder(self) -> str:  # tests replace it
        return QFileDialog.getExistingDirectory(self, "Choose the folder of new pictures", self.folder_edit.text())

    def _choose(self) -> None:
        folder = self.ask_folder()
        if folder:
            self.folder_edit.setText(folder)

    def _go(self) -> None:
        folder = self.folder_edit.text().strip()
        if not folder:
            self.show_error("Choose the folder of new pictures first.")
            return
        self.result.setText("")
        self.use_button.setVisible(False)
        self.adaptRequested.emit(folder, self.method(), self.epochs.value())

    def set_busy(self, busy: bool) -> None:
        self.go_button.setEnabled(not busy)
        self.folder_edit.setEnabled(not busy)
        self.folder_button.setEnabled(not busy)
        self.cancel_button.setVisible(busy)
        self.progress.setVisible(busy)
        if busy:
            self.progress.setRange(0, 0)

    def show_progress(self, what: str, done: int, total: int) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)
        self.progress.setFormat(f"{what}: %v of %m")

    def show_result(self, sentence: str, run_dir: str | None, recommended: bool = True) -> None:
        self.set_busy(False)
        self.result_run = run_dir
        self.result.setText("<b>Done.</b> " + html.escape(sentence) + (f"<br><small>New run: {html.escape(run_dir)}</small>"
                                                     if run_dir else ""))
        self.use_button.setVisible(bool(run_dir) and recommended)

    def show_error(self, message: str) -> None:
        self.set_busy(False)
        self.result.setText(f"<span style='color:{VERMILLION}'>{html.escape(message)}</span>")
