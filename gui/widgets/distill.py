"""The *Distil into a smaller model* dialog (Predict & Export): a finished run teaches a smaller model.

The dialog asks for the student (any catalogue model and its weight source), the epochs, the weights of the
teacher's soft targets and of the labels, the temperature and an optional folder of unlabelled pictures; it runs
``engine.edge.distill`` -- the same ``distill_config`` and ``distill`` as ``python main.py distill`` -- as a
background job of the window's job service, shows its progress and log, and ends with the teacher-vs-student table.
The result is a new run in the project's runs folder (``distilled`` carries its folder)."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QProgressBar, QPushButton, QSpinBox,
                               QVBoxLayout, QWidget)

from engine.config import DEFAULT_FEATURE_WEIGHT
from gui.support.jobs import Jobs

# Small models first: the point is a model that runs on a modest computer.
SUGGESTED = ("timm:mobilenetv3_small_100", "timm:mobilenetv2_050", "timm:mobilenetv3_small_050", "timm:lcnet_050",
             "timm:efficientnet_b0", "timm:resnet18", "torchvision:mobilenet_v3_small", "torchvision:squeezenet1_1")
WEIGHTS = [("pretrained", "Pretrained (found on this computer, or downloaded)"),
           ("none", "None: start from random weights"),
           ("file", "A weight file...")]
INTRO = ("<b>Distil this model into a smaller one.</b> The chosen run is the <i>teacher</i>: a smaller "
         "<i>student</i> learns from its answers on the same pictures (how sure it is of each class, not only the "
         "right class) and, where the two see pictures alike, from what its last layer reads (its features). The "
         "result is a new run next to this one; this run is not changed.")


def _acc(v) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def table_html(table: dict) -> str:
    """The teacher-vs-student table, for a QLabel."""
    t, s = table["teacher"], table["student"]
    rows = [("Model", html.escape(t["model"]), html.escape(s["model"])),
            ("Accuracy (validation)", _acc(t["accuracy"]), _acc(s["accuracy"])),
            ("Parameters", f"{t['parameters']:,}", f"{s['parameters']:,}"),
            ("Weight file", _size(t["file_bytes"]), _size(s["file_bytes"])),
            ("Time per picture (this CPU)", f"{t['latency_ms']:.1f} ms", f"{s['latency_ms']:.1f} ms")]
    cells = "".join(f"<tr><td>{a}</td><td align='right'>{b}</td><td align='right'><b>{c}</b></td></tr>"
                    for a, b, c in rows)
    return ("<p><b>Teacher and student</b>, measured on this computer:</p>"
            "<table cellspacing='0' cellpadding='3'><tr><th></th><th align='right'>Teacher</th>"
            f"<th align='right'>Student</th></tr>{cells}</table>")


class DistillDialog(QDialog):
    distilled = Signal(str)  # the new run's folder

    def __init__(self, teacher_run: str, jobs: Jobs | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Distil into a smaller model")
        self.teacher_run = teacher_run
        self.jobs = Jobs(self, service=jobs)
        self.run_dir: str | None = None

        intro = QLabel(INTRO)
        intro.setWordWrap(True)
        self.teacher_label = QLabel(f"<b>{html.escape(Path(teacher_run).name)}</b>")
        self.teacher_label.setToolTip(teacher_run)
        self.student_combo = QComboBox()
        self.student_combo.setEditable(True)
        self.student_combo.addItems(SUGGESTED)
        self.student_combo.setCurrentText("timm:mobilenetv2_050")
        self.student_combo.setToolTip("The smaller model to train: any model of the catalogue (type its name, such "
                                      "as timm:resnet18). Smaller models run faster on modest computers.")
        self.weights_combo = QComboBox()
        for key, label in WEIGHTS:
            self.weights_combo.addItem(label, key)
        self.weights_combo.setToolTip("Where the student's starting weights come from. Pretrained weights give a "
                                      "far better small model; without them the student starts from scratch.")
        self.weights_file = ""
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 1000)
        self.epochs_spin.setValue(20)
        self.epochs_spin.setToolTip("How many times the student sees every picture. A student from random weights "
                                    "needs more epochs than a pretrained one.")
        self.soft_spin = QDoubleSpinBox()
        self.soft_spin.setRange(0.0, 1.0)
        self.soft_spin.setSingleStep(0.1)
        self.soft_spin.setValue(0.7)
        self.soft_spin.setToolTip("How much the student follows the teacher's answers (its soft targets); the "
                                  "labels get the rest. 0 trains on the labels alone.")
        self.hard_label = QLabel()
        self.temperature_spin = QDoubleSpinBox()
        self.temperature_spin.setRange(0.5, 20.0)
        self.temperature_spin.setSingleStep(0.5)
        self.temperature_spin.setValue(4.0)
        self.temperature_spin.setToolTip("Softens both models' answers before they are compared, so that the student "
                                         "also learns which wrong classes the teacher finds likely. 2 to 5 is usual.")
        self.feature_spin = QDoubleSpinBox()
        self.feature_spin.setRange(0.0, 100.0)
        self.feature_spin.setSingleStep(1.0)
        self.feature_spin.setDecimals(1)
        self.feature_spin.setValue(DEFAULT_FEATURE_WEIGHT)
        self.feature_spin.setToolTip("How much the student's features (what its last layer reads) must resemble "
                                     "the teacher's on the same pictures. With few classes the teacher's answer "
                                     "says little more than the label; its features say much more. 0 leaves them "
                                     "out.")
        self.pool_edit = QLineEdit()
        self.pool_edit.setPlaceholderText("optional: a folder of pictures without labels")
        self.pool_edit.setClearButtonEnabled(True)
        self.pool_edit.setToolTip("More pictures of the same kind, not sorted into classes: the teacher labels "
                                  "them for the student (its answers only; they are not used as true labels).")
        self.pool_button = QPushButton("Choose...")
        self.pool_button.setToolTip("Choose a folder of unlabelled pictures.")

        self.start_button = QPushButton("Distil")
        self.start_button.setDefault(True)
        self.start_button.setToolTip("Train the student (in the background; you can keep working).")
        self.cancel_button = QPushButton("Stop")
        self.cancel_button.setToolTip("Stop the student's training; it can be resumed from the Train step.")
        self.progress = QProgressBar()
        self.progress.setFormat("epoch %v of %m")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        # Always rich text: its messages are escaped HTML, which Qt's guess would show as plain text when they hold
        # no tag (a failure's "'none'" appeared as "&#x27;none&#x27;").
        self.status.setTextFormat(Qt.TextFormat.RichText)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(500)
        self.log.setPlaceholderText("What the training does appears here.")
        self.log.setMinimumHeight(90)
        self.log.setMaximumHeight(160)
        self.table = QLabel("")
        self.table.setTextFormat(Qt.TextFormat.RichText)
        self.table.setToolTip("Accuracy on this run's validation pictures; time per picture measured on this "
                              "computer, one picture at a time.")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)

        form = QFormLayout()
        form.addRow("Teacher (this run)", self.teacher_label)
        form.addRow("Student model", self.student_combo)
        form.addRow("Starting weights", self.weights_combo)
        form.addRow("Epochs", self.epochs_spin)
        soft_row = QHBoxLayout()
        soft_row.addWidget(self.soft_spin)
        soft_row.addWidget(self.hard_label, 1)
        form.addRow("Teacher's answers weight", soft_row)
        form.addRow("Temperature", self.temperature_spin)
        form.addRow("Teacher's features weight", self.feature_spin)
        pool_row = QHBoxLayout()
        pool_row.addWidget(self.pool_edit, 1)
        pool_row.addWidget(self.pool_button)
        form.addRow("Unlabelled pictures", pool_row)
        run_row = QHBoxLayout()
        run_row.addWidget(self.start_button)
        run_row.addWidget(self.cancel_button)
        run_row.addWidget(self.progress, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addLayout(run_row)
        layout.addWidget(self.status)
        layout.addWidget(self.log, 1)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(640, 600)

        self.soft_spin.valueChanged.connect(self._weights_changed)
        self.weights_combo.activated.connect(self._weights_chosen)
        self.pool_button.clicked.connect(self._choose_pool)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(lambda: self.jobs.cancel("distill"))
        self.jobs.busy_changed.connect(lambda _: self._update())
        self._weights_changed(self.soft_spin.value())
        self._update()

    # -- the settings ---------------------------------------------------------------------------------------

    def _weights_changed(self, soft: float) -> None:
        self.hard_label.setText(f"labels: {1 - soft:.2f}")

    def _weights_chosen(self, index: int) -> None:
        if self.weights_combo.itemData(index) != "file":
            return
        path, _ = QFileDialog.getOpenFileName(self, "Choose the student's weight file", "",
                                              "Weights (*.safetensors *.pth *.pt *.bin)")
        if path:
            self.weights_file = path
            self.weights_combo.setItemText(index, f"File: {Path(path).name}")
        else:
            self.weights_combo.setCurrentIndex(0)

    def _choose_pool(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder of unlabelled pictures")
        if folder:
            self.pool_edit.setText(folder)

    def weights(self) -> str:
        key = self.weights_combo.currentData()
        return self.weights_file if key == "file" else key

    def _update(self) -> None:
        busy = self.jobs.running("distill")
        for w in (self.student_combo, self.weights_combo, self.epochs_spin, self.soft_spin, self.temperature_spin,
                  self.feature_spin, self.pool_edit, self.pool_button, self.start_button):
            w.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.progress.setVisible(busy or self.progress.value() > 0)

    # -- the work -------------------------------------------------------------------------------------------

    def start(self) -> None:
        teacher, student, weights = self.teacher_run, self.student_combo.currentText().strip(), self.weights()
        epochs, pool = self.epochs_spin.value(), self.pool_edit.text().strip() or None
        temperature, soft, features = (self.temperature_spin.value(), self.soft_spin.value(),
                                       self.feature_spin.value())

        def work(progress, stop):
            from engine import events as ev
            from engine.edge.distill import distill, distill_config

            config = distill_config(teacher, student, weights, epochs=epochs, pool=pool, temperature=temperature,
                                    soft_weight=soft, feature_weight=features)

            def on_event(event):
                if isinstance(event, ev.Log):
                    progress.say(event.message)
                elif isinstance(event, ev.RunStarted):
                    progress.say(f"New run: {event.run_dir}")
                elif isinstance(event, ev.EpochEnded):
                    progress(event.epoch, event.total_epochs)
                    progress.say(f"Epoch {event.epoch} of {event.total_epochs}: validation accuracy "
                                 f"{100 * event.val_acc:.1f} %" + (" (best so far)" if event.is_best else ""))
                elif isinstance(event, ev.Failed):
                    progress.say(event.message)

            return distill(config, on_event, stop)

        self.log.clear()
        self.table.setText("")
        self.progress.setRange(0, epochs)
        self.progress.setValue(0)
        self.status.setText("Asking the teacher, then training the student ...")
        self.jobs.start("distill", work, self._done, on_error=self._failed, on_progress=self._progress,
                        on_phase=self.log.appendPlainText, on_cancel=self._cancelled,
                        what="The distillation")
        self._update()

    def _progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)

    def _done(self, result) -> None:
        run = result.run
        self.run_dir = run.run_dir
        if run.status == "completed":
            self.status.setText(f"Done: the student is the run <b>{html.escape(Path(run.run_dir).name)}</b>; choose "
                                "it above to predict with it or export it.")
            if result.table:
                self.table.setText(table_html(result.table))
        elif run.status == "stopped":
            self.status.setText("Stopped. The student's run keeps a checkpoint: resume it from the Train step.")
        else:
            self.status.setText(f"The distillation failed: {html.escape(run.error or '')}")
        if run.run_dir:
            self.distilled.emit(run.run_dir)
        self._update()

    def _failed(self, message: str) -> None:
        self.status.setText(html.escape(message))
        self._update()

    def _cancelled(self) -> None:
        self.status.setText("Stopping ...")
        self._update()

    def done(self, code: int) -> None:  # closing the dialog stops its work (a stopped run can be resumed)
        self.jobs.cancel("distill", notify=False)
        super().done(code)


def open_distill_dialog(parent: QWidget, teacher_run: str | None, jobs: Jobs | None, on_distilled=None) -> None:
    """The Predict & Export step's button: the dialog for the chosen run (nothing without one)."""
    if not teacher_run:
        return
    dialog = DistillDialog(teacher_run, jobs, parent)
    if on_distilled is not None:
        dialog.distilled.connect(lambda _run: on_distilled())
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.show()


def distill_button(parent: QWidget, current_run, jobs: Jobs | None, on_distilled=None) -> QPushButton:
    """The Predict & Export step's *Distil into a smaller model...* button: opens the dialog for ``current_run()``."""
    from PySide6.QtWidgets import QMessageBox

    button = QPushButton("Distil into a smaller model...")
    button.setToolTip("Train a smaller, faster model that learns from this one (knowledge distillation): for a "
                      "microscope PC, a phone or a Raspberry Pi. The result is a new run; this one is not changed.")

    def clicked() -> None:
        run = current_run()
        if not run:
            QMessageBox.information(parent, "Distil into a smaller model",
                                    "Choose a trained model first: it is the teacher of the smaller one.")
            return
        open_distill_dialog(parent, run, jobs, on_distilled)

    button.clicked.connect(clicked)
    return button
