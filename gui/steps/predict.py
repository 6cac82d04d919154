"""The Predict & Export step: use a trained model on new pictures, and save it for other programs.

Pictures or folders dropped on the page (or added with the buttons) are predicted in the background with
``engine.results.predict``: each gets a thumbnail, the most likely class, the confidence and the next most likely classes; a
picture that cannot be read gets the reason instead. The chosen picture is shown large, with its heat map on request
(a picture that cannot be read shows no picture, only its reason). When a given folder sorts its pictures into
sub-folders named like the model's classes, a column shows each one's true class, right or wrong, and the summary the
accuracy over them.
Each picture is also scored for how unlike the training pictures it is (``engine.shift.ood``): a flagged picture is
marked in its own column, and on request answers "unknown" instead of a class. The box *New pictures unlike the
training pictures?* gives the drift report of a folder (a sentence and a plot, ``engine.shift.drift``), *Adapt to
these pictures* (AdaBN or TENT, a new run: ``engine.shift.adapt``) and *Adapt with labels* (a short run on labelled
new pictures from this run's weights, and the better of the two models suggested).
"Save as CSV..." writes exactly the table (``engine.results.predict.write_csv``). The Export box runs
``engine.results.export.export_run`` in the background and shows what it wrote and how closely the exported model matches the
PyTorch one.
"""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

import html
import os
from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSize, Qt, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices, QFont, QImage
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout,
                               QHeaderView, QLabel, QLineEdit, QProgressBar, QPushButton, QSplitter, QStackedWidget,
                               QTableView, QVBoxLayout, QWidget)

from engine.project import runs
from engine.errors import UserError
from engine.results.export import CARD, EXPORT_DIR, FORMAT_NAMES, ExportResult, export_run
from engine.data.images import is_image_path
from engine.results.predict import Prediction, summary_line, write_csv
from engine.shift import adapt as shift_adapt
from engine.shift import ood as shift_ood
from engine.shift.drift import drift_report
from gui import style
from gui.support.dialogs import start_folder, start_path
from gui.support.jobs import Jobs, ModelCache
from gui.widgets.format import plural
from gui.widgets.pictures import GREEN, VERMILLION, PicturePanel, error_html, file_name, percent, square_pixmap
from gui.widgets.adapt_dialog import AdaptDialog
from gui.widgets.distill import distill_button
from gui.widgets.drift_plot import DriftPlot
from gui.widgets.run_chooser import RunChooser
from gui.widgets.task_predictions import TaskBatch, TaskPredictions
from gui.widgets.thumbnails import ThumbnailCache, ThumbnailLoader, placeholder_pixmap

THUMB = 48
TOP_K = 3
FORMATS = [("bundle", "Bundle (safetensors + description)",
            "The weights in safetensors format with a description of the model and its preprocessing. Transfer "
            "Studio, 'python main.py predict' and plain timm or torchvision code can load it."),
           ("onnx", "ONNX",
            "One .onnx file for other programs and languages: onnxruntime (Python, C#, C++, Java, JavaScript), "
            "OpenCV, many image-analysis tools."),
           ("torchscript", "TorchScript",
            "A .pt file for PyTorch without Python code: C++ (LibTorch) programs and PyTorch Mobile."),
           ("onnx-int8", "ONNX int8 (smaller and faster, for small computers)",
            "The ONNX file plus a copy in 8-bit numbers (model.int8.onnx): about a third of the size and faster on "
            "most processors. Its accuracy, speed and size against the full-precision file are measured on this "
            "computer and shown after the export.")]
COLUMNS = ("Picture", "Prediction", "Confidence", "Next most likely", "True class", "Like training?")
PANEL_HINT = "Choose a picture in the list to see it larger, with its heat map."
TRUTH_COLUMN = 4  # shown only when a given folder sorts pictures into sub-folders named like the model's classes
RIGHT_MARK, WRONG_MARK = "\u2714", "\u2718"  # a tick and a cross: told apart by shape, not only by colour
FLAG_COLUMN = 5  # how unlike the training pictures (engine.shift.ood); shown when the model has the statistics
FLAG_MARK = "\u26a0"  # a warning sign
SHIFT_HINT = ("Are new pictures still like the training pictures? Add a folder of new pictures, then ask for its "
              "drift report; adapt the model to them, without labels or with a few.")


def difference_words(probs: float) -> str:
    if probs < 1e-4:
        return "the same answers for practical purposes"
    if probs < 1e-2:
        return "very close answers"
    return "noticeably different answers: check the exported model before relying on it"


class PredictionsModel(QAbstractTableModel):
    """One row per picture: thumbnail and name, the predicted class, its confidence, the next classes (or the reason
    the picture could not be read)."""

    def __init__(self, loader: ThumbnailLoader, parent=None) -> None:
        super().__init__(parent)
        self.loader = loader
        self.cache = ThumbnailCache(800)
        self.rows: list[Prediction] = []
        self.unknown = False  # flagged pictures answer "unknown" (engine.shift.ood)
        self.threshold: float | None = None
        self._row_of: dict[str, int] = {}
        self._broken: set[str] = set()
        self._placeholder = placeholder_pixmap(loader.size, QColor(128, 128, 128, 40))
        self._broken_pixmap = placeholder_pixmap(loader.size, QColor(213, 94, 0, 90))
        loader.loaded.connect(self._on_loaded)
        loader.failed.connect(lambda path, _: self._on_failed(path))

    def set_rows(self, rows: list[Prediction]) -> None:
        self.loader.cancel_pending()
        self.beginResetModel()
        self.rows = list(rows)
        self._row_of = {p.path: i for i, p in enumerate(self.rows)}
        self.endResetModel()

    def append(self, rows: list[Prediction]) -> None:
        rows = [p for p in rows if p.path not in self._row_of]
        if not rows:
            return
        first = len(self.rows)
        self.beginInsertRows(QModelIndex(), first, first + len(rows) - 1)
        for p in rows:
            self._row_of[p.path] = len(self.rows)
            self.rows.append(p)
        self.endInsertRows()

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation != Qt.Orientation.Horizontal or section >= len(COLUMNS):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return ("The picture.", "The class the model gives the picture.",
                    "How sure the model is (its probability for that class). A low value is a hint to check the "
                    "picture yourself.",
                    "The next most likely classes and their probabilities.",
                    "The class the picture's folder names (a sub-folder of a folder you gave, named like one of the "
                    "model's classes), with \u2714 when the model got it right and \u2718 when it got it "
                    "wrong.",
                    "Whether the picture is like the pictures the model was trained on. \u26a0 unlike them: the "
                    "model has not seen pictures like it, so its answer is a guess; about 5 % of pictures like the "
                    "training ones are flagged too.")[section]
        return None

    def has_truth(self) -> bool:
        return any(p.true_class is not None for p in self.rows)

    def has_flags(self) -> bool:
        return any(p.in_domain is not None for p in self.rows)

    def shown(self, p: Prediction) -> Prediction:
        """The row as shown and saved: "unknown" for a flagged picture when asked."""
        if self.unknown and p.in_domain is False and p.error is None:
            import dataclasses

            return dataclasses.replace(p, class_name=shift_ood.UNKNOWN, class_index=None, confidence=None)
        return p

    def set_unknown(self, on: bool) -> None:
        self.beginResetModel()
        self.unknown = on
        self.endResetModel()

    def _flag_data(self, p: Prediction, role):
        if role == Qt.ItemDataRole.UserRole:
            return p
        if p.in_domain is None:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{FLAG_MARK} unlike them" if not p.in_domain else "yes"
        if role == Qt.ItemDataRole.ToolTipRole:
            limit = "" if self.threshold is None else f" (the threshold is {self.threshold:.1f})"
            if p.in_domain:
                return (f"Like the training pictures: score {p.ood_score:.1f}{limit}. About 95 % of the validation "
                        "pictures score under the threshold.")
            return (f"Unlike the training pictures: score {p.ood_score:.1f}{limit}. The model was not trained on "
                    "pictures like this one; do not trust its answer without checking. About 5 % of pictures like "
                    "the training ones are flagged too.")
        if role == Qt.ItemDataRole.ForegroundRole and not p.in_domain:
            return QColor(VERMILLION)
        if role == Qt.ItemDataRole.FontRole and not p.in_domain:
            font = QFont()
            font.setBold(True)
            return font
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        p = self.shown(self.rows[index.row()])
        col = index.column()
        if col == TRUTH_COLUMN:
            return self._truth_data(p, role)
        if col == FLAG_COLUMN:
            return self._flag_data(p, role)
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return file_name(p.path)
            if p.error is not None:
                return ("Cannot be read", "", p.error)[col - 1]
            if col == 1:
                return p.class_name
            if col == 2:
                return percent(p.confidence) if p.confidence is not None else "-"
            return ",  ".join(f"{name} {percent(prob)}" for name, prob in p.top[1:]) or "-"
        if role == Qt.ItemDataRole.DecorationRole and col == 0:
            pixmap = self.cache.get(p.path)
            if pixmap is not None:
                return pixmap
            if p.path in self._broken or p.error is not None:
                return self._broken_pixmap
            self.loader.request(p.path)
            return self._placeholder
        if role == Qt.ItemDataRole.ForegroundRole and p.error is not None and col > 0:
            return QColor(VERMILLION)
        if role == Qt.ItemDataRole.FontRole and col == 1 and p.error is None:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.TextAlignmentRole and col == 2:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            if p.error is not None:
                return f"{p.path}\n{p.error}"
            top = "\n".join(f"  {name}: {percent(prob)}" for name, prob in p.top)
            return f"{p.path}\nMost likely:\n{top}"
        if role == Qt.ItemDataRole.UserRole:
            return p
        return None

    @staticmethod
    def _truth_data(p: Prediction, role):
        if role == Qt.ItemDataRole.UserRole:
            return p
        if p.true_class is None:
            if role == Qt.ItemDataRole.ToolTipRole:
                return "The picture's folder does not name one of the model's classes."
            return None
        correct = p.correct
        if role == Qt.ItemDataRole.DisplayRole:
            if correct is None:
                return p.true_class
            return f"{RIGHT_MARK if correct else WRONG_MARK} {p.true_class}"
        if role == Qt.ItemDataRole.ToolTipRole:
            if correct is None:
                return f"The folder says {p.true_class}; the picture could not be read."
            if correct:
                return f"The folder says {p.true_class}, and so does the model: right."
            return f"The folder says {p.true_class}, but the model said {p.class_name}: wrong."
        if role == Qt.ItemDataRole.ForegroundRole and correct is not None:
            return QColor(GREEN if correct else VERMILLION)
        if role == Qt.ItemDataRole.FontRole and correct is False:
            font = QFont()
            font.setBold(True)
            return font
        return None

    def _on_loaded(self, path: str, image: QImage) -> None:
        self.cache.put(path, square_pixmap(image, self.loader.size))
        self._changed(path)

    def _on_failed(self, path: str) -> None:
        self._broken.add(path)
        self._changed(path)

    def _changed(self, path: str) -> None:
        row = self._row_of.get(path)
        if row is not None:
            index = self.index(row, 0)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])


class PredictPage(QWidget):
    predicted = Signal(int)  # rows in the table after a batch of predictions
    exported = Signal(object)  # ExportResult
    runsChanged = Signal()

    def __init__(self, jobs: Jobs | None = None, cache: ModelCache | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.jobs = Jobs(self, service=jobs)
        self.cache = cache or ModelCache()
        self.inputs: list[str] = []  # every picture or folder given, in order
        self.pending: list[str] = []  # those not predicted yet
        self.last_export: ExportResult | None = None
        self._predicted_with: str | None = None
        self.loader = ThumbnailLoader(THUMB, parent=self, jobs=self.jobs)
        self.setAcceptDrops(True)

        # -- the model
        self.run_chooser = RunChooser("The trained model that predicts: each run of this project, newest first.")
        self.run_combo, self.refresh_button = self.run_chooser.combo, self.run_chooser.refresh_button
        # A multi-task model: which task's answers the table shows (the CSV has them all): gui.widgets.task_predictions
        self.task_view = TaskPredictions(self._task_chosen)
        self.task_chooser = self.task_view.chooser

        # -- pictures
        self.add_files_button = QPushButton(style.icon("open-folder"), "Add pictures...")
        self.add_files_button.setToolTip("Choose pictures to classify (JPEG, PNG, BMP, GIF, TIFF, WebP). You can "
                                         "also drop pictures or folders on this page.")
        self.add_folder_button = QPushButton("Add folder...")
        self.add_folder_button.setToolTip("Classify every picture in a folder and its sub-folders.")
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Remove every picture from the list (the files are not touched).")
        self.csv_button = QPushButton(style.icon("save"), "Save as CSV...")
        self.csv_button.setToolTip("Save the table as a CSV file (path, prediction, confidence, next classes, error; "
                                   "and the true class when the folders name it) for a spreadsheet.")
        self.cancel_button = QPushButton(style.icon("cancel"), "Cancel")
        self.cancel_button.setToolTip("Stop predicting; the pictures already done stay in the list.")
        self.progress = QProgressBar()
        self.progress.setFormat("%v of %m pictures")
        self.progress.setMaximumWidth(220)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.RichText)

        self.model = PredictionsModel(self.loader, self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setIconSize(QSize(THUMB, THUMB))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(THUMB + 8)
        self.table.setWordWrap(True)  # a reason that cannot be read is a sentence: wrapped, not cut in the middle
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.setAlternatingRowColors(True)
        self.table.setAccessibleName("Predictions")
        header = self.table.horizontalHeader()
        # The answers at their own width; the file name takes what is left (elided): with the true class and the
        # unlike-the-training-pictures columns shown, a stretched "Next most likely" was squeezed to "s...".
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(TRUTH_COLUMN, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setColumnHidden(TRUTH_COLUMN, True)
        header.setSectionResizeMode(FLAG_COLUMN, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setColumnHidden(FLAG_COLUMN, True)
        self.unknown_check = QCheckBox('Answer "unknown" when unlike the training pictures')
        self.unknown_check.setToolTip("For pictures flagged as unlike the training pictures, show and save "
                                      "\"unknown\" instead of a class (the model's guesses stay listed).")
        self.unknown_check.toggled.connect(self._unknown_toggled)

        # -- new pictures unlike the training pictures (engine.shift)
        self.drift_button = QPushButton("Drift report")
        self.drift_button.setToolTip("Compare a folder of new pictures with the training pictures: the share flagged "
                                     "as unlike them, how well they can be told apart, how the predicted classes "
                                     "moved.")
        self.adapt_button = QPushButton("Adapt to these pictures...")
        self.adapt_button.setToolTip("Adapt the model to a folder of new pictures without labels (AdaBN or TENT); "
                                     "the result is a new run.")
        self.labels_button = QPushButton("Adapt with labels...")
        self.labels_button.setToolTip("Train briefly on a few labelled new pictures, starting from this model, and "
                                      "keep whichever of the two models is more accurate on them.")
        self.shift_cancel = QPushButton(style.icon("cancel"), "Cancel")
        self.shift_cancel.setToolTip("Stop the drift report.")
        self.shift_progress = QProgressBar()
        self.shift_progress.setMaximumWidth(220)
        self.shift_status = QLabel(SHIFT_HINT)
        self.shift_status.setWordWrap(True)
        self.shift_status.setTextFormat(Qt.TextFormat.RichText)
        self.drift_plot = DriftPlot()
        self.drift_plot.setVisible(False)
        self.last_report = None
        self.adapt_dialog: AdaptDialog | None = None
        self.drift_button.clicked.connect(lambda: self.drift())
        self.adapt_button.clicked.connect(lambda: self.open_adapt("unlabelled"))
        self.labels_button.clicked.connect(lambda: self.open_adapt("labels"))
        self.shift_cancel.clicked.connect(lambda: self.jobs.cancel("drift"))
        self.drop_hint = QLabel("<h3>Drop pictures or a folder here</h3><p>or use <b>Add pictures...</b> or "
                                "<b>Add folder...</b> above. The chosen model gives each picture its most likely "
                                "class, how sure it is, and the next most likely classes.</p>")
        self.drop_hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.drop_hint.setWordWrap(True)
        self.drop_hint.setMargin(30)
        self.drop_hint.setFrameShape(QLabel.Shape.StyledPanel)
        self.drop_hint.setStyleSheet("QLabel { border: 2px dashed palette(mid); border-radius: 8px; }")
        self.pictures = QStackedWidget()
        self.pictures.addWidget(self.drop_hint)
        self.pictures.addWidget(self.table)
        self.panel = PicturePanel(self.jobs, self.cache, self.current_run, PANEL_HINT)

        # -- export
        self.format_combo = QComboBox()
        for key, label, tip in FORMATS:
            self.format_combo.addItem(label, key)
            self.format_combo.setItemData(self.format_combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.format_combo.setToolTip("The file format to save the model in; hover over each for what it is for.")
        self.out_edit = QLineEdit()
        self.out_edit.setClearButtonEnabled(True)
        self.out_edit.setToolTip("The folder the export is written to. Left empty: the 'export' folder inside the "
                                 "run folder.")
        self.out_button = QPushButton("Choose...")
        self.out_button.setToolTip("Choose the folder to export into.")
        self.export_button = QPushButton(style.icon("step-export"), "Export")
        self.export_button.setToolTip("Save the model in the chosen format, with a description (model.json) and a "
                                      "model card, and check that it gives the same answers as the model here.")
        self.export_cancel = QPushButton(style.icon("cancel"), "Cancel")
        self.export_cancel.setToolTip("Stop the export after its current step.")
        self.export_progress = QProgressBar()
        self.export_progress.setRange(0, 4)
        self.export_progress.setFormat("step %v of %m")
        self.export_progress.setMaximumWidth(160)
        self.export_result = QLabel("")
        self.export_result.setWordWrap(True)
        self.export_result.setTextFormat(Qt.TextFormat.RichText)
        self.export_result.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.export_result.setOpenExternalLinks(False)
        self.export_result.linkActivated.connect(lambda url: QDesktopServices.openUrl(QUrl(url)))

        # -- layout
        top = QHBoxLayout()
        top.addWidget(QLabel("Model:"))
        top.addWidget(self.run_chooser, 1)
        top.addWidget(self.task_chooser)
        buttons = QHBoxLayout()
        for w in (self.add_files_button, self.add_folder_button, self.clear_button, self.csv_button,
                  self.cancel_button, self.progress):
            buttons.addWidget(w)
        buttons.addWidget(self.unknown_check)
        buttons.addWidget(self.status, 1)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.pictures)
        self.splitter.addWidget(self.panel)
        self.splitter.setSizes([600, 380])
        self.splitter.setChildrenCollapsible(False)

        shift_box = QGroupBox("New pictures unlike the training pictures?")
        shift_box.setToolTip(SHIFT_HINT)
        shift_buttons = QVBoxLayout()
        for w in (self.drift_button, self.adapt_button, self.labels_button, self.shift_cancel, self.shift_progress):
            shift_buttons.addWidget(w)
        shift_buttons.addStretch(1)
        shift_text = QVBoxLayout()
        shift_text.addWidget(self.shift_status)
        shift_text.addWidget(self.drift_plot, 1)
        shift_layout = QHBoxLayout(shift_box)
        shift_layout.addLayout(shift_buttons)
        shift_layout.addLayout(shift_text, 1)

        export_box = QGroupBox("Export the model")
        export_box.setToolTip("Save the trained model in a format other programs can use.")
        form = QFormLayout()
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(self.out_button)
        form.addRow("Format", self.format_combo)
        form.addRow("Folder", out_row)
        run_row = QHBoxLayout()
        run_row.addWidget(self.export_button)
        run_row.addWidget(self.export_cancel)
        run_row.addWidget(self.export_progress)
        run_row.addStretch(1)
        self.distill_button = distill_button(self, self.current_run, self.jobs, self.refresh_runs)  # (issue #20)
        run_row.addWidget(self.distill_button)
        form.addRow("", run_row)
        export_layout = QHBoxLayout(export_box)
        export_layout.addLayout(form, 2)
        export_layout.addWidget(self.export_result, 3)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(buttons)
        layout.addWidget(self.splitter, 1)
        layout.addWidget(shift_box)
        layout.addWidget(export_box)

        self.run_chooser.runChosen.connect(self._run_chosen)
        self.run_chooser.refreshRequested.connect(self.refresh_runs)
        self.add_files_button.clicked.connect(self.choose_files)
        self.add_folder_button.clicked.connect(self.choose_folder)
        self.clear_button.clicked.connect(self.clear)
        self.csv_button.clicked.connect(self.save_csv)
        self.cancel_button.clicked.connect(lambda: self.jobs.cancel("predict"))
        self.out_button.clicked.connect(self.choose_export_folder)
        self.export_button.clicked.connect(lambda: self.export())
        self.export_cancel.clicked.connect(lambda: self.jobs.cancel("export"))
        self.table.selectionModel().currentRowChanged.connect(lambda cur, _: self._row_chosen(cur))
        self.jobs.busy_changed.connect(lambda _: self._update_controls())
        self._update_controls()

    # -- runs ------------------------------------------------------------------------------------------------

    @property
    def infos(self) -> list[runs.RunInfo]:
        return self.run_chooser.infos

    def set_runs_folder(self, folder: str | os.PathLike | None) -> None:
        if self.run_chooser.set_folder(folder):
            self.refresh_runs()

    def refresh_runs(self, select: str | None = None) -> None:
        self.run_chooser.refresh(select)
        if self.current_run() != self._predicted_with:
            self._run_chosen()
        self.runsChanged.emit()
        self._update_controls()

    def current_run(self) -> str | None:
        return self.run_chooser.current_run()

    def select_run(self, path: str) -> None:
        self.run_chooser.select_run(path)

    def _run_chosen(self, *_) -> None:
        run = self.current_run()
        self._predicted_with = run
        self.panel.clear()
        self._reset_panel()
        self.export_result.setText("")
        self._clear_drift()
        self.task_view.clear()
        self.out_edit.setPlaceholderText(str(Path(run) / EXPORT_DIR) if run else "")
        if self.inputs and run:  # the other model's answers: predict everything again
            self.pending = list(self.inputs)
            self.model.set_rows([])
            self._predict()
        self._update_controls()

    # -- pictures --------------------------------------------------------------------------------------------

    def add_paths(self, paths: list[str]) -> None:
        """Predict these pictures and folders (added after those already in the list)."""
        new = [str(p) for p in paths if str(p) not in self.inputs]
        if not new:
            return
        self.inputs += new
        self.pending += new
        self._predict()

    def _predict(self) -> None:
        run = self.current_run()
        if not self.pending:
            return
        if run is None:
            self.status.setText(error_html("Train a model first: there is no model to predict with."))
            return
        paths = list(self.pending)
        self.progress.setRange(0, 0)
        self.status.setText(f"Predicting with {Path(run).name} ...")

        def work(progress, stop):
            with self.cache.use(run) as bundle:
                if bundle.info.get("tasks"):  # several tasks: every task's answers, no flag (engine.results.multitask)
                    from engine.results.multitask import predict_tasks, tasks_of_bundle

                    return TaskBatch(tuple(tasks_of_bundle(bundle)), tuple(predict_tasks(
                        bundle, paths, top_k=TOP_K, on_progress=progress, stop=stop)))
                try:  # fitted once per run, the first time (engine.shift.ood)
                    progress.say("Measuring the training pictures (once per model) ...")
                    ood = shift_ood.ensure(bundle, on_progress=progress, stop=stop)
                except shift_ood.UserError as exc:
                    if stop.is_set():
                        raise
                    progress.send(str(exc))
                    ood = None
                progress.send(None if ood is None else ood.threshold)
                return shift_ood.predict_paths(bundle, paths, ood, top_k=TOP_K, on_progress=progress, stop=stop)

        self.jobs.start("predict", work, lambda rows: self._predicted(run, paths, rows), on_error=self._failed,
                        on_item=self._ood_item, on_phase=lambda text: self.status.setText(html.escape(text)),
                        on_progress=self._progress, on_cancel=self._cancelled, what="Predicting")
        self._update_controls()

    def _progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)

    def _predicted(self, run: str, paths: list[str], rows: list[Prediction]) -> None:
        if run != self.current_run():
            return
        rows = self.task_view.take(rows)  # a multi-task model's: the chosen task's answers
        self.pending = [p for p in self.pending if p not in paths]
        first = self.model.rowCount() == 0
        self.model.append(rows)
        self.pictures.setCurrentWidget(self.table)
        total = self.model.rowCount()
        self.table.setColumnHidden(TRUTH_COLUMN, not self.model.has_truth())
        self.table.setColumnHidden(FLAG_COLUMN, not self.model.has_flags())
        summary = summary_line(self.model.rows)
        flags = shift_ood.flag_words(self.model.rows)
        summary += f"; {flags}" if flags else ""
        self.status.setText(f"{html.escape(summary)} (model: {html.escape(Path(run).name)}).")
        self.status.setToolTip(summary)
        if first and total:
            self.table.selectRow(0)
        self.predicted.emit(total)
        self._update_controls()
        if self.pending:  # more were added while these were predicted
            self._predict()

    def _failed(self, message: str) -> None:
        self.status.setText(error_html(message))
        self._update_controls()

    def _task_chosen(self, rows: list[Prediction]) -> None:
        """A multi-task model: another task chosen; the table, summary and picture show its answers."""
        current = self.table.currentIndex().row()
        self.model.set_rows(rows)
        run = self.current_run()
        summary = summary_line(self.model.rows)
        self.status.setText(f"{html.escape(summary)} (model: {html.escape(Path(run).name if run else '')}).")
        self.status.setToolTip(summary)
        if rows:
            self.table.selectRow(max(0, min(current, len(rows) - 1)))

    def _cancelled(self) -> None:
        self.status.setText("Prediction was stopped. Add the pictures again to predict them.")
        self.inputs = [p for p in self.inputs if p not in self.pending]
        self.pending = []
        self._update_controls()

    def clear(self) -> None:
        self.jobs.cancel("predict", notify=False)
        self.inputs, self.pending = [], []
        self.task_view.clear()
        self.model.set_rows([])
        self.table.setColumnHidden(TRUTH_COLUMN, True)
        self.table.setColumnHidden(FLAG_COLUMN, True)
        self._clear_drift()
        self.panel.clear()
        self._reset_panel()
        self.pictures.setCurrentWidget(self.drop_hint)
        self.status.setText("")
        self.status.setToolTip("")
        self._update_controls()

    def predictions(self) -> list[Prediction]:
        """The rows as shown (and saved as CSV)."""
        return [self.model.shown(p) for p in self.model.rows]

    def _ood_item(self, value) -> None:
        if isinstance(value, str):  # the statistics could not be fitted: predictions without the flag
            self.shift_status.setText(f"Pictures unlike the training pictures cannot be flagged: {html.escape(value)}")
        else:
            self.model.threshold = value

    def _unknown_toggled(self, on: bool) -> None:
        self.model.set_unknown(on)
        current = self.table.currentIndex()
        if current.isValid():
            self._row_chosen(current)

    def _row_chosen(self, current: QModelIndex) -> None:
        if not current.isValid():
            return
        p = self.model.rows[current.row()]
        name = html.escape(file_name(p.path))
        if p.error is not None:
            self._show_unreadable(p)
            return
        self._reset_panel("Loading the picture ...")  # never the previous picture while this one loads
        top = " &middot; ".join(f"{html.escape(c)} {percent(prob)}" for c, prob in p.top)
        info = f"<b>{name}</b> &mdash; <b>{html.escape(p.class_name)}</b> ({percent(p.confidence)} sure)"
        if p.correct is not None:
            verdict = (f"<span style='color:{GREEN}'>{RIGHT_MARK} right</span>" if p.correct else
                       f"<span style='color:{VERMILLION}'>{WRONG_MARK} wrong</span>")
            info += f"; its folder says <b>{html.escape(p.true_class)}</b>: {verdict}"
        if p.in_domain is False:
            info += (f"<br><span style='color:{VERMILLION}'><b>{FLAG_MARK} Unlike the training pictures</b></span> "
                     f"(score {p.ood_score:.1f}): check this answer yourself.")
        info += f"<br>Most likely: {top}"
        names = [c for c, _ in p.top]
        classes = self.task_view.columns() or self._classes()  # several tasks: the chosen task's output columns
        choices = [(classes.index(c), f"the model's answer ({c})" if i == 0 else c)
                   for i, c in enumerate(names) if c in classes]
        if p.correct is False and p.true_class in classes:
            choices = [x for x in choices if x[0] != classes.index(p.true_class)]
            choices.insert(1, (classes.index(p.true_class), f"the true class ({p.true_class})"))
        self.panel.show_picture(p.path, info, choices)

    def _reset_panel(self, placeholder: str = PANEL_HINT) -> None:
        self.panel.view.set_image(None)
        self.panel.view.set_placeholder(placeholder)
        for w in (self.panel.view, self.panel.info):
            w.setToolTip("")

    def _show_unreadable(self, p: Prediction) -> None:
        """No picture and no heat map (not the previous picture's), and the whole reason, wrapped."""
        self.panel.clear()
        reason = f"{file_name(p.path)} could not be read. {p.error}"
        self.panel.view.set_placeholder(reason)
        self.panel.info.setText(f"<b>{html.escape(file_name(p.path))}</b> could not be read.<br>"
                                f"{error_html(p.error)}<br><small>{html.escape(p.path)}</small>")
        for w in (self.panel.view, self.panel.info):
            w.setToolTip(f"{p.path}\n{p.error}")

    def _classes(self) -> list[str]:
        import json

        run = self.current_run()
        try:
            return list(json.loads((Path(run) / runs.LABELS).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return []

    # -- files and folders from the user (tests replace the ask_* methods) ------------------------------------

    def choose_files(self) -> None:
        paths = self.ask_files()
        if paths:
            self.add_paths(paths)

    def choose_folder(self) -> None:
        folder = self.ask_folder("Choose a folder of pictures to classify")
        if folder:
            self.add_paths([folder])

    def ask_files(self) -> list[str]:
        paths, _ = QFileDialog.getOpenFileNames(
            self, "Choose pictures to classify", start_folder(self, pictures=True),
            "Pictures (*.jpg *.jpeg *.png *.bmp *.gif *.tif *.tiff *.webp);;All files (*)")
        return paths

    def ask_folder(self, title: str) -> str:
        return QFileDialog.getExistingDirectory(self, title, start_folder(self, pictures=True))

    def ask_csv_path(self) -> str:
        path, _ = QFileDialog.getSaveFileName(self, "Save the predictions", start_path(self, "predictions.csv"),
                                              "CSV files (*.csv);;All files (*)")
        return path

    def save_csv(self) -> None:
        rows = self.predictions()
        if not rows:
            return
        path = self.ask_csv_path()
        if not path:
            return
        if not path.lower().endswith(".csv"):
            path += ".csv"
        try:  # several tasks: every task's answer and confidence (gui.widgets.task_predictions)
            written = self.task_view.write_csv(path) if self.task_view.active else write_csv(rows, path, top_k=TOP_K)
        except UserError as exc:
            self.status.setText(error_html(str(exc)))
            return
        self.status.setText(f"Saved {plural(len(rows), 'row')} in {html.escape(str(written))}.")

    def choose_export_folder(self) -> None:
        folder = self.ask_folder("Choose the folder to export the model into")
        if folder:
            self.out_edit.setText(folder)

    # -- drag and drop ---------------------------------------------------------------------------------------

    @staticmethod
    def _dropped(mime) -> list[str]:
        if not mime.hasUrls():
            return []
        paths = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]
        return [p for p in paths if os.path.isdir(p) or is_image_path(p)]

    def dragEnterEvent(self, event) -> None:
        if self._dropped(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:
        self.dragEnterEvent(event)

    def dropEvent(self, event) -> None:
        paths = self._dropped(event.mimeData())
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        self.add_paths(paths)

    # -- export ----------------------------------------------------------------------------------------------

    def export(self) -> None:
        run = self.current_run()
        if run is None or self.jobs.running("export"):
            return
        fmt = self.format_combo.currentData()
        out = self.out_edit.text().strip() or None
        self.export_progress.setValue(0)
        self.export_result.setText(f"Exporting as {FORMAT_NAMES[fmt]} and checking the result ...")
        def work(progress, stop):
            with self.cache.use(run) as bundle:  # the statistics for the flag travel with the export
                try:
                    if bundle.kind == "run" and not bundle.info.get("tasks"):
                        shift_ood.ensure(bundle, stop=stop)
                except UserError:
                    if stop.is_set():
                        raise
            return export_run(run, fmt, out, on_progress=progress, stop=stop)

        self.jobs.start("export", work,
                        self._exported, on_error=self._export_failed, on_progress=self._export_step,
                        on_cancel=self._export_cancelled, what="The export")
        self._update_controls()

    def _export_step(self, done: int, total: int) -> None:
        self.export_progress.setRange(0, total)
        self.export_progress.setValue(done)

    def _exported(self, result: ExportResult) -> None:
        self.last_export = result
        names = ", ".join(file_name(f) for f in result.files)
        on = f"{result.pictures} validation pictures" if result.pictures else "random inputs"
        card = Path(result.out_dir) / CARD
        folder_url = QUrl.fromLocalFile(result.out_dir).toString()
        card_url = QUrl.fromLocalFile(str(card)).toString()
        self.export_result.setText(
            f"<b>Written</b> to <a href='{folder_url}'>{html.escape(result.out_dir)}</a>: {html.escape(names)}."
            + (f"<br><b>8 bits</b>: {html.escape(result.measured())}" if hasattr(result, "measured") else  # int8
               f"<br><b>Check</b> on {on}: largest difference from the model here "
               f"{result.max_abs_diff_probs:.2g} in probability ({result.max_abs_diff_logits:.2g} in the raw scores) "
               f"&mdash; {difference_words(result.max_abs_diff_probs)}.")
            + f"<br><b>Model card</b>: <a href='{card_url}'>{html.escape(str(card))}</a> (what the model is for, its "
            "data, figures and limits).")
        self.exported.emit(result)
        self._update_controls()

    def _export_failed(self, message: str) -> None:
        self.export_result.setText(error_html(message))
        self._update_controls()

    def _export_cancelled(self) -> None:
        self.export_result.setText("The export was stopped.")
        self._update_controls()

    # -- new pictures unlike the training pictures (engine.shift) -------------------------------------------

    def new_folder(self) -> str | None:
        """The folder of new pictures: the last folder given, else None."""
        folders = [p for p in self.inputs if os.path.isdir(p)]
        return folders[-1] if folders else None

    def drift(self, folder: str | None = None) -> None:
        """The drift report of ``folder`` (default: the last folder given; else one is asked for)."""
        run = self.current_run()
        folder = folder or self.new_folder() or self.ask_folder("Choose a folder of new pictures to compare")
        if run is None or not folder:
            return
        self.shift_status.setText(f"Comparing {html.escape(file_name(folder))} with the training pictures ...")
        self.shift_progress.setRange(0, 0)

        def work(progress, stop):
            with self.cache.use(run) as bundle:
                progress.say("Measuring the training pictures (once per model) ...")
                ood = shift_ood.ensure(bundle, on_progress=progress, stop=stop)
                if ood is None:
                    raise UserError("This exported model carries no statistics of its training pictures: choose its "
                                    "run, or export it again.")
                progress.say(f"Measuring the pictures in {file_name(folder)} ...")
                return drift_report(bundle, folder, ood, on_progress=progress, stop=stop)

        self.jobs.start("drift", work, lambda report: self._drift_done(run, report), on_error=self._drift_failed,
                        on_progress=self._shift_step, on_phase=lambda text: self.shift_status.setText(html.escape(text)),
                        on_cancel=lambda: self._drift_failed("The drift report was stopped."), what="The drift report")
        self._update_controls()

    def _shift_step(self, done: int, total: int) -> None:
        self.shift_progress.setRange(0, max(1, total))
        self.shift_progress.setValue(done)

    def _drift_done(self, run: str, report) -> None:
        if run != self.current_run():
            return
        self.last_report = report
        colour = {"none": GREEN, "some": style.ORANGE, "strong": VERMILLION}[report.verdict]
        self.shift_status.setText(f"<b style='color:{colour}'>{html.escape(file_name(report.folder))}:</b> "
                                  f"{html.escape(report.sentence())}")
        self.drift_plot.show_report(report.histogram(), report.classes, report.reference_mix, report.new_mix)
        self.drift_plot.setVisible(True)
        self._update_controls()

    def _drift_failed(self, message: str) -> None:
        self.shift_status.setText(error_html(message))
        self._update_controls()

    def _clear_drift(self) -> None:
        self.jobs.cancel("drift", notify=False)
        self.last_report = None
        self.drift_plot.clear()
        self.drift_plot.setVisible(False)
        self.shift_status.setText(SHIFT_HINT)

    def open_adapt(self, mode: str) -> AdaptDialog | None:
        """The *Adapt to these pictures* ("unlabelled") or *Adapt with labels* ("labels") dialog, not modal: the
        work runs in the background and reports into it."""
        run = self.current_run()
        if run is None:
            return None
        folder = self.last_report.folder if self.last_report is not None else (self.new_folder() or "")
        sentence = self.last_report.sentence() if self.last_report is not None and mode == "unlabelled" else ""
        dialog = AdaptDialog(mode, Path(run).name, folder, sentence, self)
        dialog.adaptRequested.connect(lambda f, method, epochs: self._adapt(dialog, run, f, method, epochs))
        dialog.cancelRequested.connect(lambda: self.jobs.cancel("adapt"))
        dialog.useRequested.connect(lambda path: (self.refresh_runs(select=path), dialog.accept()))
        dialog.rejected.connect(lambda: self.jobs.cancel("adapt", notify=False))
        self.adapt_dialog = dialog
        dialog.show()
        return dialog

    def _adapt(self, dialog: AdaptDialog, run: str, folder: str, method: str, epochs: int) -> None:
        dialog.set_busy(True)

        if method == "labels":
            def work(progress, stop):
                progress.say("Training on the labelled pictures")
                return shift_adapt.adapt_with_labels(run, folder, epochs=epochs, stop=stop, device=self.cache.device)
        else:
            def work(progress, stop):
                def step(what, done, total):
                    progress.say(what)
                    progress(done, total)
                return shift_adapt.adapt_run(run, folder, method, on_progress=step, stop=stop,
                                             device=self.cache.device)

        phase = {"text": ""}

        def on_phase(text):
            phase["text"] = text
            dialog.show_progress(text, 0, 0)

        def done(result):
            if isinstance(result, shift_adapt.LabelledResult):
                dialog.show_result(result.sentence(), result.run_dir or None, result.keep == "adapted")
            else:
                dialog.show_result(result.sentence(), result.run_dir)
            self.refresh_runs(select=run)  # the new run is listed; the chosen model stays until the user switches
            self._update_controls()

        self.jobs.start("adapt", work, done, on_error=dialog.show_error, on_phase=on_phase,
                        on_progress=lambda d, t: dialog.show_progress(phase["text"] or "Working", d, t),
                        on_cancel=lambda: dialog.show_error("The adaptation was stopped; nothing was written."),
                        what="The adaptation")

    # -- state -----------------------------------------------------------------------------------------------

    def _update_controls(self) -> None:
        has_run = self.current_run() is not None
        predicting = self.jobs.running("predict")
        exporting = self.jobs.running("export")
        for w in (self.add_files_button, self.add_folder_button):
            w.setEnabled(has_run)
        self.clear_button.setEnabled(bool(self.inputs))
        self.csv_button.setEnabled(self.model.rowCount() > 0 and not predicting)
        self.cancel_button.setVisible(predicting)
        self.progress.setVisible(predicting)
        self.run_combo.setEnabled(not predicting and not exporting)
        self.export_button.setEnabled(has_run and not exporting)
        self.export_cancel.setVisible(exporting)
        self.export_progress.setVisible(exporting)
        drifting = self.jobs.running("drift")
        for w in (self.drift_button, self.adapt_button, self.labels_button):
            w.setEnabled(has_run and not drifting and not self.jobs.running("adapt"))
        self.shift_cancel.setVisible(drifting)
        self.shift_progress.setVisible(drifting)
        self.unknown_check.setVisible(self.model.has_flags())
        if not has_run:
            self.drop_hint.setText("<h3>No trained model yet</h3><p>Train a model in the <b>Train</b> step; then "
                                   "drop pictures here to classify them.</p>")
        elif not self.inputs:
            self.drop_hint.setText("<h3>Drop pictures or a folder here</h3><p>or use <b>Add pictures...</b> or "
                                   "<b>Add folder...</b> above. The chosen model gives each picture its most likely "
                                   "class, how sure it is, and the next most likely classes.</p>")
        if not self.inputs:
            self.pictures.setCurrentWidget(self.drop_hint)

    def shutdown(self) -> None:
        self.jobs.shutdown()
        self.loader.shutdown()


