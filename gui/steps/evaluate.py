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
from PySide6.QtGui import QBrush, QColor, QFont, QFontInfo, QFontMetrics, QPainter, QPalette, QPen
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QFrame, QGroupBox, QHBoxLayout,
                               QHeaderView, QLabel, QProgressBar, QPushButton, QSizePolicy, QSplitter,
                               QStackedWidget, QStyle, QStyledItemDelegate, QStyleOptionHeader, QTableView,
                               QTableWidget,
                               QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget)

from engine.project import runs
from engine.results.cam import viridis
from engine.results.evaluate import SPLIT_NAMES, Evaluation, SplitEvaluation, evaluate_run, load_evaluation
from gui import style
from gui.support.dialogs import start_folder
from gui.support.jobs import Jobs, ModelCache
from gui.widgets.format import plural
from gui.widgets.pictures import (KeyRole, Gallery, PictureItem, PictureItemsModel, PicturePanel, error_html,
                                file_name, percent)
from gui.widgets.run_chooser import RunChooser, has_weights
from gui.widgets.thumbnails import ThumbnailCache, ThumbnailLoader

OKABE_BLUE, OKABE_VERMILLION, OKABE_GREY = "#0072B2", "#D55E00", "#999999"
MATRIX_STRETCH_UP_TO = 8  # classes: up to this many, each cell shows its share too (when there is room)
MATRIX_CELL = 46  # pixels per cell before the cells are stretched or shrunk to fill the matrix's box
MATRIX_MIN_CELL = 8  # pixels: cells shrink to fit their box down to this (30 classes fit at 1280x800)
HEADER_MAX = 120  # pixels: the most a class-name header takes across (the columns' height, the rows' width)
HEADER_SHARE = 0.3, 0.22  # ... and at most this share of the matrix's height (columns) or width (rows), for a
# few classes and for many
SMALLEST_FONT = 7  # pixels: text smaller than this is left out of a cell (its tooltip still tells)
MANY_CLASSES = 12  # more classes than this: the matrix gets most of the left pane
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
    if split.ece_before is not None and split.temperature != 1.0:
        text += (f" Before calibration (temperature scaling, T = {split.temperature:.2f}) the error was "
                 f"{split.ece_before:.3f}; every confidence shown is the calibrated one.")
    if split.count < 100:
        text += f" With only {plural(split.count, 'picture')}, this figure is rough."
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
            text = f"True {true}, predicted {said}: {count} picture{'' if count == 1 else 's'}"
            if t == p:
                text += (f"\n{count} of the {plural(total, 'picture')} of '{true}' were recognised "
                         f"({percent(share, 0)}).")
            else:
                text += (f"\n{count} of the {plural(total, 'picture')} of '{true}' were taken for '{said}' "
                         f"({percent(share, 0)}).")
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
                return f"{self.classes[section]}\nColumn: the pictures the model called '{self.classes[section]}'."
            return f"{self.classes[section]}\nRow: the pictures that really are '{self.classes[section]}'."
        return None


def abbreviate(name: str, metrics: QFontMetrics, width: int) -> str:
    """``name`` as it fits in ``width`` pixels: whole; else each word cut to its first letters and a dot ("outdoor
    swimming pool" -> "outd. swim. pool"), as long as they can be; else cut at the end with an ellipsis."""
    if metrics.horizontalAdvance(name) <= width:
        return name
    words = name.replace("_", " ").split()
    if len(words) > 1:
        for keep in range(max(len(w) for w in words) - 1, 1, -1):
            short = " ".join(w if len(w) <= keep + 1 else w[:keep] + "." for w in words)
            if metrics.horizontalAdvance(short) <= width:
                return short
    return metrics.elidedText(name, Qt.TextElideMode.ElideRight, max(0, width))


def _fitting_font(base: QFont, pixels: int) -> QFont:
    """``base`` no taller than ``pixels`` (never below SMALLEST_FONT)."""
    font = QFont(base)
    size = QFontInfo(base).pixelSize()
    if size > pixels:
        font.setPixelSize(max(SMALLEST_FONT, pixels))
    return font


class _ClassHeader(QHeaderView):
    """The matrix's class names: columns written bottom-to-top, rows left-to-right, in a font that shrinks with the
    cells, abbreviated when they do not fit (the full name is in the tooltip); the chosen cell's row and column are
    bold."""

    def __init__(self, orientation: Qt.Orientation, parent: QWidget | None = None) -> None:
        super().__init__(orientation, parent)
        self.setSectionsClickable(True)
        self.setHighlightSections(True)
        self.setMinimumSectionSize(MATRIX_MIN_CELL)
        self.setDefaultSectionSize(MATRIX_CELL)
        self.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)

    def _names(self) -> list[str]:
        model = self.model()
        if model is None:
            return []
        return [str(model.headerData(i, self.orientation()) or "") for i in range(self.count())]

    def _extent(self) -> int:
        """How far the header reaches across its sections: the longest name, within limits."""
        names = self._names()
        if not names:
            return 0
        longest = max(self.fontMetrics().horizontalAdvance(n) for n in names) + 12
        view = self.parentWidget()
        room = (view.height() if self.orientation() == Qt.Orientation.Horizontal else view.width()) if view else 0
        share = HEADER_SHARE[self.count() > MANY_CLASSES]
        limit = HEADER_MAX if room <= 0 else min(HEADER_MAX, max(40, int(share * room)))
        return min(longest, limit)

    def sizeHint(self) -> QSize:
        hint = super().sizeHint()
        if self.orientation() == Qt.Orientation.Horizontal:
            hint.setHeight(max(self.fontMetrics().height() + 6, self._extent()))
        else:
            hint.setWidth(self._extent())
        return hint

    def paintSection(self, painter: QPainter, rect: QRect, section: int) -> None:
        if not rect.isValid():
            return
        painter.save()
        option = QStyleOptionHeader()
        self.initStyleOption(option)
        option.rect = rect
        option.section = section
        option.text = ""
        self.style().drawControl(QStyle.ControlElement.CE_HeaderSection, option, painter, self)
        horizontal = self.orientation() == Qt.Orientation.Horizontal
        across = rect.width() if horizontal else rect.height()  # the section's size: the font fits in it
        font = _fitting_font(self.font(), across - 3)
        current = self.selectionModel().currentIndex() if self.selectionModel() else QModelIndex()
        if current.isValid() and section == (current.column() if horizontal else current.row()):
            font.setBold(True)
        painter.setFont(font)
        painter.setPen(self.palette().color(QPalette.ColorRole.ButtonText))
        metrics = QFontMetrics(font)
        name = str(self.model().headerData(section, self.orientation()) or "")
        if metrics.height() <= across + 2:
            if horizontal:  # bottom-to-top, starting next to the matrix
                painter.translate(rect.left(), rect.bottom() + 1)
                painter.rotate(-90)
                box = QRect(4, 0, rect.height() - 8, rect.width())
                painter.drawText(box, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                                 abbreviate(name, metrics, box.width()))
            else:
                box = rect.adjusted(4, 0, -4, 0)
                painter.drawText(box, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                                 abbreviate(name, metrics, box.width()))
        painter.restore()


class _CellDelegate(QStyledItemDelegate):
    """Paints a cell in its own colour even when selected; the chosen cell gets a frame instead of the highlight."""

    def paint(self, painter: QPainter, option, index) -> None:
        painter.save()
        rect = option.rect
        background = index.data(Qt.ItemDataRole.BackgroundRole)
        if background is not None:
            painter.fillRect(rect, background)
        painter.setPen(index.data(Qt.ItemDataRole.ForegroundRole) or option.palette.color(QPalette.ColorRole.Text))
        # What fits: the count and its share, the count alone (in a smaller font if need be), or nothing (small
        # cells of many classes: the colour and the tooltip tell).
        lines = (index.data(Qt.ItemDataRole.DisplayRole) or "").split("\n")
        font = QFont(option.font)
        if index.row() == index.column():
            font.setBold(True)
        metrics = QFontMetrics(font)
        fits = lambda m, texts: (len(texts) * m.height() <= rect.height() - 2  # noqa: E731
                                 and max(m.horizontalAdvance(t) for t in texts) <= rect.width() - 2)
        if not fits(metrics, lines):
            lines = lines[:1]
            font = _fitting_font(font, rect.height() - 2)
            metrics = QFontMetrics(font)
            if not fits(metrics, lines):
                lines = []
        if lines:
            painter.setFont(font)
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, "\n".join(lines))
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
        self.table.setHorizontalHeader(_ClassHeader(Qt.Orientation.Horizontal, self.table))
        self.table.setVerticalHeader(_ClassHeader(Qt.Orientation.Vertical, self.table))
        self.table.setModel(self.model)
        self.table.setItemDelegate(_CellDelegate(self.table))
        self.table.setMinimumSize(80, 80)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setShowGrid(True)
        self.table.setCornerButtonEnabled(False)
        self.table.setAccessibleName("Confusion matrix")
        self.table.setToolTip("")
        self.table.selectionModel().currentChanged.connect(lambda *_: self._repaint_headers())
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
        """Show the matrix; its cells share the box evenly (down to MATRIX_MIN_CELL pixels, then it scrolls)."""
        self.model.set_matrix(classes, confusion)
        self.table.updateGeometry()

    def _repaint_headers(self) -> None:
        for header in (self.table.horizontalHeader(), self.table.verticalHeader()):
            header.viewport().update()

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
        self.jobs = Jobs(self, service=jobs)
        self.cache = cache or ModelCache()
        self.evaluation: Evaluation | None = None
        self.split: SplitEvaluation | None = None
        self.current_cell: tuple[int, int] | None = None
        self._shown_run: str | None = None
        self.loader = ThumbnailLoader(GALLERY_THUMB, parent=self, jobs=self.jobs)
        thumbnails = thumbnails or ThumbnailCache(600)
        self.small_loader = ThumbnailLoader(MISTAKE_THUMB, parent=self, jobs=self.jobs)

        # -- the top bar: which run, which pictures, Evaluate / Cancel
        self.run_chooser = RunChooser("The trained model to evaluate: each run of this project, newest first.")
        self.run_combo, self.refresh_button = self.run_chooser.combo, self.run_chooser.refresh_button
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
        bar.addWidget(self.run_chooser, 1)
        bar.addSpacing(12)
        from gui.widgets.task_chooser import TaskChooser  # a multi-task run: which task is shown (issue #17)

        self.task_chooser = TaskChooser()
        self.task_chooser.chosen.connect(lambda _: self.show_evaluation(self._all_tasks))
        bar.addWidget(self.task_chooser)
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

        self.run_chooser.runChosen.connect(self._run_chosen)
        self.run_chooser.refreshRequested.connect(self.refresh_runs)
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

    @property
    def infos(self) -> list[runs.RunInfo]:
        return self.run_chooser.infos

    def set_runs_folder(self, folder: str | os.PathLike | None) -> None:
        if self.run_chooser.set_folder(folder):
            self.refresh_runs()

    def refresh_runs(self, select: str | None = None) -> None:
        """List the runs again; keep the run shown (or choose ``select``, else the newest completed run)."""
        self.run_chooser.refresh(select)
        if self.current_run() != self._shown_run or select:
            self._run_chosen()
        self.runsChanged.emit()
        self._update_controls()

    def current_run(self) -> str | None:
        return self.run_chooser.current_run()

    def select_run(self, path: str) -> None:
        self.run_chooser.select_run(path)

    def completed_runs(self) -> list[runs.RunInfo]:
        return self.run_chooser.completed_runs()

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
        return QFileDialog.getExistingDirectory(self, "Evaluate on a folder of pictures sorted into class folders",
                                                start_folder(self, pictures=True))

    def cancel(self) -> None:
        self.jobs.cancel("evaluate")

    def _progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)

    def _evaluated(self, run: str, evaluation: Evaluation) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        total = sum(s.count for s in evaluation.splits.values())
        self.status.setText(f"Evaluated {plural(total, 'picture')} in {evaluation.seconds:.0f} s on "
                            f"{evaluation.device}; "
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
        self._all_tasks = evaluation  # several tasks: the chosen one is shown (gui.widgets.task_chooser)
        self.task_chooser.set_evaluation(evaluation)
        evaluation = self.task_chooser.view(evaluation)
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
        if self.split is None or (len(split.classes) > MANY_CLASSES) != (len(self.split.classes) > MANY_CLASSES):
            self._share_space(len(split.classes))
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

    def _share_space(self, classes: int) -> None:
        """Many classes: the matrix gets most of the left pane, and the left pane half the page, so that each cell
        keeps a few pixels (the per-class table scrolls instead)."""
        width = sum(self.splitter.sizes()) or 980
        height = sum(self.left.sizes()) or 500
        if classes > MANY_CLASSES:
            self.splitter.setSizes([width // 2, width - width // 2])
            self.left.setSizes([int(0.8 * height), height - int(0.8 * height)])
        else:
            self.splitter.setSizes([int(0.43 * width), width - int(0.43 * width)])
            self.left.setSizes([int(0.66 * height), height - int(0.66 * height)])

    def _show_summary(self, split: SplitEvaluation) -> None:
        words = split_words(split.name, self.evaluation)
        colour = OKABE_VERMILLION if split.accuracy < 0.7 else "palette(text)"
        text = (f"<span style='font-size:16pt; font-weight:600; color:{colour}'>{percent(split.accuracy)}</span>"
                f"&nbsp;&nbsp;right: {split.correct} of the {split.count} {html.escape(words)} pictures. "
                f"Average F1 over the classes {split.macro_f1:.3f}.")
        if split.unreadable:
            text += (f" <span style='color:{OKABE_VERMILLION}'>{plural(len(split.unreadable), 'picture')} could "
                     "not be read "
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
            text = (f"{plural(len(indices), 'picture')} of '{t}' recognised correctly, the ones the model was most "
                    "sure of first.")
        else:
            text = (f"{plural(len(indices), 'picture')} of '{t}' that the model took for '{p}', the ones it was "
                    "most sure of "
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
