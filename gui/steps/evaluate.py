"""The Evaluate step: how well a trained model recognises each class, which classes it confuses, the pictures behind
each confusion, its most confident mistakes, and how far its confidence can be trusted.

Everything shown comes from ``engine.results.evaluate``: ``evaluate_run`` runs in the background (and can be cancelled);
an ``evaluation.json`` left by an earlier evaluation (from the window or ``python main.py evaluate``) is shown at
once. Clicking a cell of the confusion matrix lists the pictures behind it; choosing a picture shows it large, with
its heat map (Grad-CAM, made in the background) on request.
"""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

import html
import os
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QRect, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QPainter, QPalette, QPen
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QFrame, QGroupBox, QHBoxLayout,
                               QHeaderView, QLabel, QProgressBar, QPushButton, QSizePolicy, QSplitter,
                               QStackedWidget, QStyle, QStyledItemDelegate, QTableView, QTableWidget,
                               QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget)

from engine.project import runs
from engine.results.cam import viridis
from engine.results.evaluate import SPLIT_NAMES, Evaluation, SplitEvaluation, evaluate_run, load_evaluation
from gui import style
from gui.support.jobs import Jobs, ModelCache
from gui.widgets.pictures import (KeyRole, Gallery, PictureItem, PictureItemsModel, PicturePanel, error_html,
                                file_name, percent)
from gui.widgets.thumbnails import ThumbnailCache, ThumbnailLoader

OKABE_BLUE, OKABE_VERMILLION, OKABE_GREY = "#0072B2", "#D55E00", "#999999"
STATUS_WORDS = {"completed": "completed", "stopped": "stopped early", "failed": "failed",
                "running": "running or crashed", "unknown": "unknown state"}
MATRIX_STRETCH_UP_TO = 8  # classes: up to this many, the matrix fills its box; more, and it scrolls
MATRIX_CELL = 46  # pixels per cell when it scrolls
GALLERY_THUMB = 96
MISTAKE_THUMB = 64
METRIC_TIPS = {
    "Precision": "Of the pictures the model called this class, the share that really are of this class. Low "
                 "precision: other classes are often mistaken for this one.",
    "Recall": "Of the pictures of this class, the share the model recognised. Low recall: this class is often "
              "missed (taken for another one).",
    "F1": "One number for both: the harmonic mean of precision and recall (1.0 is perfect).",
    "Pictures": "How many pictures of this class were evaluated (the 'support').",
}


def split_words(name: str, evaluation: Evaluation | None = None) -> str:
    if name == "data" and evaluation is not None:
        return f"the folder {Path(evaluation.data).name}"
    return SPLIT_NAMES.get(name, name)


def run_label(info: runs.RunInfo) -> str:
    best = f", best {percent(info.best_val_acc)}" if info.best_val_acc is not None else ""
    model = info.model.split(":", 1)[-1] if info.model else ""
    details = ", ".join(x for x in (model, info.strategy) if x)
    return (f"{Path(info.path).name}  -  {STATUS_WORDS.get(info.status, info.status)}{best}"
            + (f"  ({details})" if details else ""))


def has_weights(path: str) -> bool:
    return (Path(path) / runs.BEST).is_file()


def fill_run_combo(combo: QComboBox, infos: list[runs.RunInfo], keep: str | None) -> None:
    """List the runs in ``combo`` (without signals) and choose ``keep`` when it is among them, else the newest
    completed run that has its weights (the Evaluate and the Predict & Export steps list runs alike)."""
    combo.blockSignals(True)
    combo.clear()
    for info in infos:
        combo.addItem(run_label(info), info.path)
        combo.setItemData(combo.count() - 1, info.path, Qt.ItemDataRole.ToolTipRole)
    paths = [i.path for i in infos]
    if keep in paths:
        row = paths.index(keep)
    else:
        done = [i for i, info in enumerate(infos) if info.status == "completed" and has_weights(info.path)]
        row = done[0] if done else (0 if infos else -1)
    combo.setCurrentIndex(row)
    combo.blockSignals(False)


def calibration_words(split: SplitEvaluation) -> str:
    """The expected calibration error in words, with the direction of the gap."""
    n = max(1, sum(b.count for b in split.calibration))
    signed = sum(b.count * (b.confidence - b.accuracy) for b in split.calibration) / n
    points = 100 * split.ece
    text = (f"Expected calibration error: {split.ece:.3f}. On average, the confidence the model gives is "
            f"{points:.1f} percentage points away from how often it is really right. ")
    if split.ece < 0.05:
        text += "That is good: when it says it is 90 % sure, it is right about 90 % of the time."
    else:
        way = ("over-confident: it is right less often than it says" if signed > 0 else
               "under-confident: it is right more often than it says")
        text += (f"It is {way}, so read its confidences as a ranking rather than as probabilities"
                 + (" (fairly close)." if split.ece < 0.1 else "."))
    if split.count < 100:
        text += f" With only {split.count} pictures, this figure is rough."
    return text


# --- the confusion matrix -------------------------------------------------------------------------------------


class ConfusionModel(QAbstractTableModel):
    """confusion[true][predicted] as a table: counts, coloured (viridis) by the share of the true class's pictures."""

    ShareRole = Qt.ItemDataRole.UserRole + 10

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.classes: tuple[str, ...] = ()
        self.counts = np.zeros((0, 0), dtype=int)
        self.shares = np.zeros((0, 0))
        self.show_shares = True

    def set_matrix(self, classes, confusion) -> None:
        self.beginResetModel()
        self.classes = tuple(classes)
        self.counts = np.asarray(confusion, dtype=int).reshape(len(self.classes), len(self.classes))
        totals = self.counts.sum(1, keepdims=True)
        self.shares = np.divide(self.counts, totals, out=np.zeros(self.counts.shape), where=totals > 0)
        self.show_shares = len(self.classes) <= MATRIX_STRETCH_UP_TO
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.classes)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.classes)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        t, p = index.row(), index.column()
        count, share = int(self.counts[t, p]), float(self.shares[t, p])
        if role == Qt.ItemDataRole.DisplayRole:
            if self.show_shares and count:
                return f"{count}\n{percent(share, 0)}"
            return str(count)
        if role == Qt.ItemDataRole.BackgroundRole and count:
            r, g, b = (int(v) for v in viridis(np.array(share))[()])
            return QColor(r, g, b)
        if role == Qt.ItemDataRole.ForegroundRole:
            if not count:
                return QColor(OKABE_GREY)
            r, g, b = (int(v) for v in viridis(np.array(share))[()])
            return QColor("black") if 0.299 * r + 0.587 * g + 0.114 * b > 140 else QColor("white")
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            true, said = self.classes[t], self.classes[p]
            total = int(self.counts[t].sum())
            if t == p:
                text = f"{count} of the {total} pictures of '{true}' were recognised ({percent(share, 0)})."
            else:
                text = f"{count} of the {total} pictures of '{true}' were taken for '{said}' ({percent(share, 0)})."
            return text + ("\nClick to see them." if count else "")
        if role == self.ShareRole:
            return share
        return None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if section >= len(self.classes):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.classes[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            if orientation == Qt.Orientation.Horizontal:
                return f"Pictures the model called '{self.classes[section]}'."
            return f"Pictures that really are '{self.classes[section]}'."
        return None


class _CellDelegate(QStyledItemDelegate):
    """Paints a cell in its own colour even when selected; the chosen cell gets a frame instead of the highlight."""

    def paint(self, painter: QPainter, option, index) -> None:
        painter.save()
        rect = option.rect
        background = index.data(Qt.ItemDataRole.BackgroundRole)
        if background is not None:
            painter.fillRect(rect, background)
        painter.setPen(index.data(Qt.ItemDataRole.ForegroundRole) or option.palette.color(QPalette.ColorRole.Text))
        font = QFont(option.font)
        if index.row() == index.column():
            font.setBold(True)
        painter.setFont(font)
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, index.data(Qt.ItemDataRole.DisplayRole) or "")
        if option.state & QStyle.StateFlag.State_Selected:
            pen = QPen(option.palette.color(QPalette.ColorRole.Highlight), 3)
            pen.setJoinStyle(Qt.PenJoinStyle.MiterJoin)
            painter.setPen(pen)
            painter.drawRect(rect.adjusted(2, 2, -2, -2))
        painter.restore()


class _VerticalLabel(QWidget):
    """A short text written bottom-to-top (the matrix's 'True class' axis title)."""

    def __init__(self, text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.text = text
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Preferred)

    def sizeHint(self) -> QSize:
        metrics = self.fontMetrics()
        return QSize(metrics.height() + 4, metrics.horizontalAdvance(self.text) + 8)

    def minimumSizeHint(self) -> QSize:
        return self.sizeHint()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setPen(self.palette().color(QPalette.ColorRole.WindowText))
        painter.translate(0, self.height())
        painter.rotate(-90)
        painter.drawText(QRect(0, 0, self.height(), self.width()), Qt.AlignmentFlag.AlignCenter, self.text)


class ConfusionView(QWidget):
    """The matrix with its axis titles; ``cellChosen(true, predicted)`` when a cell is clicked or chosen with the
    keyboard."""

    cellChosen = Signal(int, int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = ConfusionModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setItemDelegate(_CellDelegate(self.table))
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setShowGrid(True)
        self.table.setCornerButtonEnabled(False)
        self.table.setAccessibleName("Confusion matrix")
        self.table.setToolTip("")
        for header in (self.table.horizontalHeader(), self.table.verticalHeader()):
            header.setHighlightSections(True)
            header.setDefaultAlignment(Qt.AlignmentFlag.AlignCenter)
        self.table.horizontalHeader().setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.clicked.connect(lambda index: self.cellChosen.emit(index.row(), index.column()))
        self.table.selectionModel().currentChanged.connect(self._current_changed)
        top = QLabel("The model's answer \u2192")
        top.setAlignment(Qt.AlignmentFlag.AlignCenter)
        top.setToolTip("Columns: the class the model gave.")
        side = _VerticalLabel("True class \u2192")
        side.setToolTip("Rows: the class the picture really belongs to.")
        grid = QVBoxLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(2)
        grid.addWidget(top)
        row = QHBoxLayout()
        row.setSpacing(2)
        row.addWidget(side)
        row.addWidget(self.table, 1)
        grid.addLayout(row, 1)

    def set_matrix(self, classes, confusion) -> None:
        self.model.set_matrix(classes, confusion)
        stretch = len(classes) <= MATRIX_STRETCH_UP_TO
        mode = QHeaderView.ResizeMode.Stretch if stretch else QHeaderView.ResizeMode.Fixed
        for header in (self.table.horizontalHeader(), self.table.verticalHeader()):
            header.setSectionResizeMode(mode)
            header.setDefaultSectionSize(MATRIX_CELL)
        self.table.horizontalHeader().setMinimumSectionSize(40)

    def _current_changed(self, current: QModelIndex, previous: QModelIndex) -> None:
        if current.isValid() and (current.row(), current.column()) != (previous.row(), previous.column()):
            self.cellChosen.emit(current.row(), current.column())

    def select_cell(self, true: int, predicted: int) -> None:
        self.table.setCurrentIndex(self.model.index(true, predicted))

    def cell_rect(self, true: int, predicted: int) -> QRect:
        """Where a cell is drawn, in the table's viewport (for tests and screenshots)."""
        return self.table.visualRect(self.model.index(true, predicted))


# --- the calibration view -------------------------------------------------------------------------------------


class CalibrationView(QWidget):
    """A reliability diagram (accuracy against confidence, per bin, beside the diagonal of a perfectly calibrated
    model), the number of pictures per bin, and the expected calibration error in words."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        pg.setConfigOptions(antialias=True)
        self.plots = pg.GraphicsLayoutWidget()
        self.plots.setBackground(self.palette().base().color())
        self.reliability = self.plots.addPlot(row=0, col=0, title="How often it is right, by how sure it is")
        self.counts = self.plots.addPlot(row=1, col=0, title="Pictures at each confidence")
        self.plots.ci.layout.setRowStretchFactor(0, 3)
        self.plots.ci.layout.setRowStretchFactor(1, 1)
        for plot in (self.reliability, self.counts):
            plot.showGrid(x=True, y=True, alpha=0.2)
            plot.setMouseEnabled(False, False)
            plot.hideButtons()
            plot.setXRange(0, 1, padding=0.02)
        self.reliability.setYRange(0, 1, padding=0.02)
        self.reliability.setLabel("left", "right (share)")
        self.reliability.setLabel("bottom", "confidence the model gave")
        self.counts.setLabel("left", "pictures")
        self.counts.setXLink(self.reliability)
        self.reliability.addLegend(offset=(10, 10), labelTextSize="8pt")
        self.reliability.setToolTip("Each bar: the pictures the model was about that sure of, and the share of them "
                                    "it got right. A perfectly calibrated model's bars reach the dashed line.")
        self.counts.setToolTip("How many pictures fall in each confidence range. Bars in empty ranges are not drawn.")
        self.words = QLabel()
        self.words.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.plots, 1)
        layout.addWidget(self.words)
        self.bars: pg.BarGraphItem | None = None

    def set_split(self, split: SplitEvaluation | None) -> None:
        self.reliability.clear()
        self.counts.clear()
        self.bars = None
        if split is None:
            self.words.setText("")
            return
        bins = [b for b in split.calibration if b.count]
        centres = [(b.lower + b.upper) / 2 for b in bins]
        width = (split.calibration[0].upper - split.calibration[0].lower) * 0.9 if split.calibration else 0.05
        self.bars = pg.BarGraphItem(x=centres, height=[b.accuracy for b in bins], width=width,
                                    brush=QColor(OKABE_BLUE), pen=pg.mkPen(None), name="share right")
        self.reliability.addItem(self.bars)
        # Where each bar would end if the model were exactly as right as it is sure: the gap is the miscalibration.
        self.reliability.plot(centres, [b.confidence for b in bins], pen=None, symbol="t1", symbolSize=9,
                              symbolBrush=QColor(OKABE_VERMILLION), symbolPen=None,
                              name="how sure it was (mean)")
        diagonal = self.reliability.plot([0, 1], [0, 1], pen=pg.mkPen(OKABE_GREY, width=1.5,
                                                                       style=Qt.PenStyle.DashLine),
                                         name="perfectly calibrated")
        diagonal.setZValue(-1)
        self.counts.addItem(pg.BarGraphItem(x=centres, height=[b.count for b in bins], width=width,
                                            brush=QColor(OKABE_GREY), pen=pg.mkPen(None)))
        self.words.setText(calibration_words(split))


# --- the page -------------------------------------------------------------------------------------------------


class EvaluatePage(QWidget):
    evaluated = Signal(object)  # the Evaluation now shown (fresh or read from evaluation.json)
    runsChanged = Signal()

    def __init__(self, jobs: Jobs | None = None, cache: ModelCache | None = None, parent: QWidget | None = None,
                 thumbnails: ThumbnailCache | None = None) -> None:
        super().__init__(parent)
        self.jobs = jobs or Jobs(self)
        self.cache = cache or ModelCache()
        self.runs_folder: Path | None = None
        self.infos: list[runs.RunInfo] = []
        self.evaluation: Evaluation | None = None
        self.split: SplitEvaluation | None = None
        self.current_cell: tuple[int, int] | None = None
        self._shown_run: str | None = None
        self.loader = ThumbnailLoader(GALLERY_THUMB, parent=self)
        thumbnails = thumbnails or ThumbnailCache(600)
        self.small_loader = ThumbnailLoader(MISTAKE_THUMB, parent=self)

        # -- the top bar: which run, which pictures, Evaluate / Cancel
        self.run_combo = QComboBox()
        self.run_combo.setToolTip("The trained model to evaluate: each run of this project, newest first.")
        self.run_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.run_combo.setMinimumContentsLength(30)
        self.refresh_button = QPushButton(style.icon("refresh"), "")
        self.refresh_button.setToolTip("Read the project's runs folder again.")
        self.split_combo = QComboBox()
        self.split_combo.setToolTip("Which pictures the numbers below are about: the validation pictures the run "
                                    "was checked on while training, or its test pictures (never seen in training), "
                                    "when the data has them.")
        self.split_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.evaluate_button = QPushButton("Evaluate")
        self.evaluate_button.setToolTip("Run the model on the run's validation (and test) pictures and measure where "
                                        "it is right and wrong. The result is saved in the run folder.")
        self.folder_button = QPushButton("Another folder...")
        self.folder_button.setToolTip("Evaluate the model on another folder of pictures sorted into class folders "
                                      "named like the model's classes (some classes may be missing).")
        self.cancel_button = QPushButton(style.icon("cancel"), "Cancel")
        self.cancel_button.setToolTip("Stop the evaluation; nothing is written.")
        self.progress = QProgressBar()
        self.progress.setFormat("%v of %m pictures")
        self.progress.setMaximumWidth(220)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.RichText)
        self.summary = QLabel()
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.setWordWrap(True)
        self.summary.setToolTip("Accuracy: the share of pictures the model classified correctly.")

        # -- the results
        self.matrix = ConfusionView()
        self.matrix.setToolTip("Which class was taken for which. Rows: the true class; columns: the model's answer. "
                               "The diagonal holds the pictures it got right. Click a cell to see its pictures.")
        self.class_table = QTableWidget(0, 5)
        self.class_table.setHorizontalHeaderLabels(["Class", "Precision", "Recall", "F1", "Pictures"])
        for col, name in enumerate(("Class", "Precision", "Recall", "F1", "Pictures")):
            item = self.class_table.horizontalHeaderItem(col)
            item.setToolTip(METRIC_TIPS.get(name, "The class."))
        self.class_table.verticalHeader().setVisible(False)
        self.class_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.class_table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        header = self.class_table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.class_table.setAccessibleName("Figures per class")

        self.cell_model = PictureItemsModel(self.loader, thumbnails, self)
        self.cell_gallery = Gallery(self.cell_model, GALLERY_THUMB, grid=True, lines=2)
        self.cell_title = QLabel("Click a cell of the matrix to see the pictures behind it.")
        self.cell_title.setWordWrap(True)
        self.mistakes_model = PictureItemsModel(self.small_loader, ThumbnailCache(400), self)
        self.mistakes_gallery = Gallery(self.mistakes_model, MISTAKE_THUMB, grid=False)
        self.mistakes_title = QLabel()
        self.mistakes_title.setWordWrap(True)
        self.calibration = CalibrationView()
        self.panel = PicturePanel(self.jobs, self.cache, self.current_run,
                                  "Choose a picture in the matrix's cells or among the mistakes to see it larger.")

        cell_tab = QWidget()
        cell_layout = QVBoxLayout(cell_tab)
        cell_layout.setContentsMargins(4, 4, 4, 4)
        cell_layout.addWidget(self.cell_title)
        cell_layout.addWidget(self.cell_gallery, 1)
        mistakes_tab = QWidget()
        mistakes_layout = QVBoxLayout(mistakes_tab)
        mistakes_layout.setContentsMargins(4, 4, 4, 4)
        mistakes_layout.addWidget(self.mistakes_title)
        mistakes_layout.addWidget(self.mistakes_gallery, 1)
        self.tabs = QTabWidget()
        self.tabs.addTab(cell_tab, "Pictures of the cell")
        self.tabs.addTab(mistakes_tab, "Mistakes")
        self.tabs.addTab(self.calibration, "Calibration")
        self.tabs.setTabToolTip(0, "The pictures behind the chosen cell of the matrix.")
        self.tabs.setTabToolTip(1, "Every picture the model got wrong, the ones it was most sure of first, with its "
                                   "three most likely classes.")
        self.tabs.setTabToolTip(2, "Whether the model's confidence can be trusted as a probability.")
        self.tabs.currentChanged.connect(lambda i: self.panel.setVisible(self.tabs.widget(i) is not self.calibration))

        matrix_box = QGroupBox("Which class was taken for which")
        QVBoxLayout(matrix_box).addWidget(self.matrix)
        self.table_box = table_box = QGroupBox("Per class")
        QVBoxLayout(table_box).addWidget(self.class_table)
        self.left = QSplitter(Qt.Orientation.Vertical)
        self.left.addWidget(matrix_box)
        self.left.addWidget(table_box)
        self.left.setSizes([330, 170])
        self.right = QSplitter(Qt.Orientation.Vertical)
        self.right.addWidget(self.tabs)
        self.right.addWidget(self.panel)
        self.right.setSizes([345, 300])
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.left)
        self.splitter.addWidget(self.right)
        self.splitter.setSizes([420, 560])
        self.splitter.setChildrenCollapsible(False)

        self.empty = QLabel()
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.empty.setMargin(40)
        self.empty.setTextFormat(Qt.TextFormat.RichText)
        self.body = QStackedWidget()
        self.body.addWidget(self.empty)
        self.body.addWidget(self.splitter)

        bar = QHBoxLayout()
        bar.addWidget(QLabel("Model:"))
        bar.addWidget(self.run_combo, 1)
        bar.addWidget(self.refresh_button)
        bar.addSpacing(12)
        bar.addWidget(QLabel("Pictures:"))
        bar.addWidget(self.split_combo)
        bar2 = QHBoxLayout()
        bar2.addWidget(self.evaluate_button)
        bar2.addWidget(self.folder_button)
        bar2.addWidget(self.cancel_button)
        bar2.addWidget(self.progress)
        bar2.addWidget(self.status, 1)
        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addLayout(bar2)
        layout.addWidget(line)
        layout.addWidget(self.summary)
        layout.addWidget(self.body, 1)

        self.run_combo.currentIndexChanged.connect(self._run_chosen)
        self.refresh_button.clicked.connect(lambda: self.refresh_runs())
        self.split_combo.currentIndexChanged.connect(self._split_chosen)
        self.evaluate_button.clicked.connect(lambda: self.evaluate())
        self.folder_button.clicked.connect(self.evaluate_folder)
        self.cancel_button.clicked.connect(self.cancel)
        self.matrix.cellChosen.connect(self.show_cell)
        self.cell_gallery.selectionModel().currentChanged.connect(lambda cur, _: self._sample_chosen(cur))
        self.mistakes_gallery.selectionModel().currentChanged.connect(lambda cur, _: self._sample_chosen(cur))
        self.jobs.busy_changed.connect(lambda _: self._update_controls())
        self._show_empty()
        self._update_controls()

    # -- runs ------------------------------------------------------------------------------------------------

    def set_runs_folder(self, folder: str | os.PathLike | None) -> None:
        new = Path(folder) if folder else None
        if new != self.runs_folder:
            self.runs_folder = new
            self.refresh_runs()

    def refresh_runs(self, select: str | None = None) -> None:
        """List the runs again; keep the run shown (or choose ``select``, else the newest completed run)."""
        keep = select or self.current_run()
        self.infos = runs.list_runs(self.runs_folder) if self.runs_folder else []
        fill_run_combo(self.run_combo, self.infos, keep)
        if self.current_run() != self._shown_run or select:
            self._run_chosen()
        self.runsChanged.emit()
        self._update_controls()

    def current_run(self) -> str | None:
        return self.run_combo.currentData()

    def select_run(self, path: str) -> None:
        index = self.run_combo.findData(str(path))
        if index >= 0:
            self.run_combo.setCurrentIndex(index)

    def completed_runs(self) -> list[runs.RunInfo]:
        return [i for i in self.infos if i.status == "completed" and has_weights(i.path)]

    def _run_chosen(self, *_) -> None:
        run = self.current_run()
        self._shown_run = run
        self.jobs.cancel("evaluate")
        self.panel.clear()
        self.status.setText("")
        evaluation = load_evaluation(run) if run else None
        self.show_evaluation(evaluation)
        if evaluation is not None:
            when = evaluation.created.replace("T", " at ")[:-3] if evaluation.created else "earlier"
            self.status.setText(f"Evaluated on {when}" + (f" on {evaluation.device}" if evaluation.device else "")
                                + ". Press Evaluate again after changing the pictures.")
        self._update_controls()

    # -- evaluating ------------------------------------------------------------------------------------------

    def evaluate(self, data: str | None = None) -> None:
        run = self.current_run()
        if run is None or self.jobs.running("evaluate"):
            return
        self.progress.setRange(0, 0)
        self.progress.setValue(0)
        where = f"the pictures of {data}" if data else "the run's validation and test pictures"
        self.status.setText(f"Evaluating on {where} ...")
        self.jobs.start("evaluate", lambda progress, stop: evaluate_run(run, data, progress, stop),
                        lambda evaluation, run=run: self._evaluated(run, evaluation), on_error=self._failed,
                        on_progress=self._progress, on_cancel=self._cancelled, what="The evaluation")
        self._update_controls()

    def evaluate_folder(self) -> None:
        folder = self.ask_folder()
        if folder:
            self.evaluate(folder)

    def ask_folder(self) -> str:
        return QFileDialog.getExistingDirectory(self, "Evaluate on a folder of pictures sorted into class folders")

    def cancel(self) -> None:
        self.jobs.cancel("evaluate")

    def _progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)

    def _evaluated(self, run: str, evaluation: Evaluation) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        total = sum(s.count for s in evaluation.splits.values())
        self.status.setText(f"Evaluated {total} pictures in {evaluation.seconds:.0f} s on {evaluation.device}; "
                            f"saved in {file_name(evaluation.path)} in the run folder.")
        if run == self.current_run():
            self.show_evaluation(evaluation)
        self._update_controls()

    def _failed(self, message: str) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status.setText(error_html(message))
        self._update_controls()

    def _cancelled(self) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status.setText("The evaluation was stopped; nothing was written.")
        self._update_controls()

    def _update_controls(self) -> None:
        running = self.jobs.running("evaluate")
        has_run = self.current_run() is not None
        self.evaluate_button.setEnabled(has_run and not running)
        self.folder_button.setEnabled(has_run and not running)
        self.run_combo.setEnabled(not running)
        self.cancel_button.setVisible(running)
        self.progress.setVisible(running)
        self.evaluate_button.setText("Evaluate again" if self.evaluation is not None else "Evaluate")
        self.split_combo.setEnabled(self.evaluation is not None and self.split_combo.count() > 1)

    # -- showing ---------------------------------------------------------------------------------------------

    def _show_empty(self) -> None:
        run = self.current_run()
        if not self.infos:
            text = ("<h3>No trained model yet</h3><p>Train a model in the <b>Train</b> step; its run appears here "
                    "when it ends.</p>")
        elif run is None:
            text = "<h3>Choose a model</h3><p>Choose one of the project's runs above.</p>"
        elif not has_weights(run):
            text = ("<h3>This run has no saved model</h3><p>It ended before its first epoch was complete. Choose "
                    "another run, or train again.</p>")
        else:
            text = ("<h3>Not evaluated yet</h3><p>Press <b>Evaluate</b> to run this model on the pictures it was "
                    "checked on during training (and its test pictures, if any) and see which classes it "
                    "recognises and which it confuses.</p>")
        self.empty.setText(text)
        self.body.setCurrentWidget(self.empty)
        self.summary.setText("")

    def show_evaluation(self, evaluation: Evaluation | None) -> None:
        self.evaluation = evaluation
        self.split_combo.blockSignals(True)
        self.split_combo.clear()
        if evaluation is not None:
            for name, split in evaluation.splits.items():
                words = split_words(name, evaluation)
                self.split_combo.addItem(f"{words[0].upper()}{words[1:]} ({split.count})", name)
        self.split_combo.blockSignals(False)
        self._update_controls()
        if evaluation is None:
            self.split = None
            self._show_empty()
            return
        self.body.setCurrentWidget(self.splitter)
        self._split_chosen()
        self.evaluated.emit(evaluation)

    def select_split(self, name: str) -> None:
        index = self.split_combo.findData(name)
        if index >= 0:
            self.split_combo.setCurrentIndex(index)

    def _split_chosen(self, *_) -> None:
        name = self.split_combo.currentData()
        if self.evaluation is None or name not in self.evaluation.splits:
            return
        split = self.evaluation.splits[name]
        self.split = split
        self.panel.clear()
        self._show_summary(split)
        self.matrix.set_matrix(split.classes, split.confusion)
        self._fill_class_table(split)
        self._fill_mistakes(split)
        self.calibration.set_split(split)
        self.current_cell = None
        self.cell_model.set_items([])
        self.cell_title.setText("Click a cell of the matrix to see the pictures behind it.")

    def _show_summary(self, split: SplitEvaluation) -> None:
        words = split_words(split.name, self.evaluation)
        colour = OKABE_VERMILLION if split.accuracy < 0.7 else "palette(text)"
        text = (f"<span style='font-size:16pt; font-weight:600; color:{colour}'>{percent(split.accuracy)}</span>"
                f"&nbsp;&nbsp;right: {split.correct} of the {split.count} {html.escape(words)} pictures. "
                f"Average F1 over the classes {split.macro_f1:.3f}.")
        if split.unreadable:
            text += (f" <span style='color:{OKABE_VERMILLION}'>{len(split.unreadable)} pictures could not be read "
                     "and were left out.</span>")
        self.summary.setText(text)
        if split.unreadable:
            self.summary.setToolTip("Left out:\n" + "\n".join(f"{p}: {r}" for p, r in split.unreadable[:20]))
        else:
            self.summary.setToolTip("Accuracy: the share of pictures the model classified correctly.")

    def _fill_class_table(self, split: SplitEvaluation) -> None:
        rows = [(c.name, c.precision, c.recall, c.f1, c.support) for c in split.per_class]
        rows.append(("Average", split.macro_precision, split.macro_recall, split.macro_f1,
                     split.count))
        self.class_table.setRowCount(len(rows))
        bold = QFont(self.class_table.font())
        bold.setBold(True)
        for r, (name, precision, recall, f1, support) in enumerate(rows):
            cells = [QTableWidgetItem(name)]
            for value in (precision, recall, f1):
                item = QTableWidgetItem(percent(value))
                item.setData(Qt.ItemDataRole.UserRole, value)
                cells.append(item)
            count = QTableWidgetItem(str(support))
            count.setData(Qt.ItemDataRole.UserRole, support)
            cells.append(count)
            for c, item in enumerate(cells):
                if c:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if r == len(rows) - 1:
                    item.setFont(bold)
                    item.setToolTip("The mean over the classes that have pictures here (macro average); "
                                    "'Pictures' is the total.")
                elif c == 2 and support and recall < 0.5:
                    item.setForeground(QBrush(QColor(OKABE_VERMILLION)))
                    item.setToolTip("Fewer than half of these pictures were recognised.")
                self.class_table.setItem(r, c, item)
        # A few classes: the box is as tall as the table, and the matrix gets the rest of the height.
        table = self.class_table
        table.resizeRowsToContents()
        if len(rows) <= 12:
            needed = (table.horizontalHeader().sizeHint().height() + table.verticalHeader().length()
                      + 2 * table.frameWidth() + 2)
            table.setMaximumHeight(needed)
            self.table_box.setMaximumHeight(self.table_box.sizeHint().height())
        else:
            table.setMaximumHeight(16777215)
            self.table_box.setMaximumHeight(16777215)

    def _sample_item(self, index: int, grid: bool) -> PictureItem:
        s = self.split.samples[index]
        classes = self.split.classes
        true, said = classes[s.label], classes[s.predicted]
        top = ", ".join(f"{classes[c]} {percent(p, 0)}" for c, p in s.top)
        tooltip = (f"{file_name(s.path)}\nTrue class: {true}\nThe model said: {said} ({percent(s.confidence)} sure)\n"
                   f"Most likely: {top}\n{s.path}")
        if grid:
            text = f"{said} {percent(s.confidence, 0)}" if s.correct else f"said {said} {percent(s.confidence, 0)}"
            text += f"\n{file_name(s.path)}"
        else:
            text = (f"{file_name(s.path)}\nis {true}, the model said {said} ({percent(s.confidence, 0)})\n"
                    f"most likely: {top}")
        return PictureItem(s.path, text, tooltip, index, wrong=grid and not s.correct)

    def _fill_mistakes(self, split: SplitEvaluation) -> None:
        mistakes = split.mistakes
        self.mistakes_model.set_items([self._sample_item(i, grid=False) for i in mistakes])
        if mistakes:
            self.mistakes_title.setText(f"{len(mistakes)} pictures were classified wrongly; the ones the model was "
                                        "most sure of come first - look at them for mislabelled pictures or for "
                                        "what the classes have in common.")
        else:
            self.mistakes_title.setText("No mistakes: every picture was classified correctly.")
        self.tabs.setTabText(1, f"Mistakes ({len(mistakes)})")

    def show_cell(self, true: int, predicted: int) -> None:
        """List the pictures behind a cell of the confusion matrix (most confident first)."""
        if self.split is None:
            return
        self.tabs.setCurrentIndex(0)
        if self.current_cell == (true, predicted):
            return
        self.current_cell = (true, predicted)
        indices = self.split.cell(true, predicted)
        self.cell_model.set_items([self._sample_item(i, grid=True) for i in indices])
        classes = self.split.classes
        t, p = classes[true], classes[predicted]
        if not indices:
            text = f"No picture of '{t}' was taken for '{p}'." if true != predicted else \
                f"No picture of '{t}' was recognised."
        elif true == predicted:
            text = f"{len(indices)} pictures of '{t}' recognised correctly, the ones the model was most sure of first."
        else:
            text = (f"{len(indices)} pictures of '{t}' that the model took for '{p}', the ones it was most sure of "
                    "first.")
        self.cell_title.setText(text)
        if self.matrix.table.currentIndex() != self.matrix.model.index(true, predicted):
            self.matrix.select_cell(true, predicted)
        if indices:
            self.cell_gallery.select_row(0)
        else:
            self.panel.clear()

    def shown_samples(self) -> list[int]:
        """The sample indices in the cell gallery, in order (for tests)."""
        return [item.key for item in self.cell_model.items]

    def _sample_chosen(self, current: QModelIndex) -> None:
        if not current.isValid() or self.split is None:
            return
        index = current.data(KeyRole)
        s = self.split.samples[index]
        classes = self.split.classes
        verdict = ("<span style='color:#009E73'>right</span>" if s.correct else
                   f"<span style='color:{OKABE_VERMILLION}'>wrong</span>")
        top = " &middot; ".join(f"{html.escape(classes[c])} {percent(p)}" for c, p in s.top)
        info = (f"<b>{html.escape(file_name(s.path))}</b> &mdash; true class <b>{html.escape(classes[s.label])}</b>, "
                f"the model said <b>{html.escape(classes[s.predicted])}</b> ({percent(s.confidence)} sure): {verdict}."
                f"<br>Most likely: {top}")
        choices = [(s.predicted, f"the model's answer ({classes[s.predicted]})")]
        if not s.correct:
            choices.append((s.label, f"the true class ({classes[s.label]})"))
        choices += [(c, classes[c]) for c, _ in s.top if c not in (s.predicted, s.label)]
        self.panel.show_picture(s.path, info, choices)

    # -- closing ---------------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        self.jobs.shutdown()
        self.loader.shutdown()
        self.small_loader.shutdown()
