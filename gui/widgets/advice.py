"""The advisor's widgets: which model suits the user's pictures (the Model step's "Suggest models") and which layers
to keep (the Layers step's per-stage bars with the suggested freeze point). Both run the engine's scores
(engine.advise.transfer) as jobs of the window's job service: progress, cancel, errors as sentences."""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFontMetrics, QPainter, QPen
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QDialogButtonBox, QHBoxLayout, QHeaderView, QLabel,
                               QProgressBar, QPushButton, QSizePolicy, QTableWidget, QTableWidgetItem, QToolTip,
                               QVBoxLayout, QWidget)

from gui.support.jobs import Jobs
from gui.widgets.format import format_count

SUGGEST = "suggest-models"
STAGES = "score-stages"
KEEP_COLOUR = QColor("#0072B2")  # Okabe-Ito blue: stages kept as they are
RETRAIN_COLOUR = QColor("#E69F00")  # Okabe-Ito orange: stages that retrain
MARK_COLOUR = QColor("#D55E00")  # vermillion: the freeze point
SCORE_TIP = ("LogME (You et al., 2021): how well a model's frozen features explain your labels, computed on up to "
             "2,000 of your pictures without training. Higher is better; compare scores on the same pictures only.")


def seconds_text(seconds: float) -> str:
    if seconds < 1:
        return "under 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def score_models_work(source: str, runs_folder: str | os.PathLike | None, library=None, models=None,
                      device: str = "auto") -> Callable:
    """The job that scores every model on this computer (or ``models``) on the pictures of ``source``."""
    def work(progress, stop):
        from engine.advise.transfer import advise, candidates
        from engine.data.scan import scan
        from engine.errors import UserError

        progress.say("Reading your pictures ...")
        dataset = scan(source, verify=False, stop=stop)
        found = list(models) if models is not None else candidates(runs_folder, library)
        if not found:
            raise UserError("No model has weights on this computer yet: download pretrained weights or import a "
                            "weight file first, then ask again.")
        return advise(dataset, found, check=False, device=device, on_progress=progress, stop=stop,
                      on_say=progress.say)
    return work


class SuggestionsDialog(QDialog):
    """'Suggest models': every model with weights on this computer, scored on the user's pictures and ranked.
    ``chosen(model, weights)`` when the user picks one."""

    chosen = Signal(str, str)

    def __init__(self, parent: QWidget | None, jobs: Jobs | None, source: str, runs_folder=None, library=None,
                 models=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Suggested models for your pictures")
        self.resize(860, 420)
        self.jobs = Jobs(self, service=jobs)
        self.advice = None
        self.intro = QLabel("Each model with weights on this computer looks at a sample of your pictures, without "
                            "training; the ones whose features already tell your classes apart come first.")
        self.intro.setWordWrap(True)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.bar = QProgressBar()
        self.table = QTableWidget(0, 6)
        self.table.setHorizontalHeaderLabels(("Model and weights", "Score", "Time per epoch here", "Size",
                                              "Licence", ""))
        self.table.horizontalHeaderItem(1).setToolTip(SCORE_TIP)
        self.table.horizontalHeaderItem(2).setToolTip(
            "Measured on this computer: the first figure keeps the network as is and trains the new head (feature "
            "extraction), the second retrains every layer.")
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in range(1, 6):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.table.doubleClicked.connect(lambda index: self._use(index.row()))
        self.buttons = QDialogButtonBox()
        self.use_button = self.buttons.addButton("Use the selected model", QDialogButtonBox.ButtonRole.AcceptRole)
        self.use_button.setEnabled(False)
        self.use_button.clicked.connect(lambda: self._use(self._selected()))
        self.cancel_button = self.buttons.addButton("Stop", QDialogButtonBox.ButtonRole.RejectRole)
        self.cancel_button.clicked.connect(self.stop)
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.close_button.clicked.connect(self.reject)
        self.table.itemSelectionChanged.connect(lambda: self.use_button.setEnabled(self._selected() is not None))
        layout = QVBoxLayout(self)
        layout.addWidget(self.intro)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.buttons)
        self._work = score_models_work(source, runs_folder, library, models)

    def start(self) -> None:
        self.table.setRowCount(0)
        self.bar.setVisible(True)
        self.bar.setRange(0, 0)
        self.cancel_button.setEnabled(True)
        self.status.setText("Scoring the models on your pictures ...")
        self.jobs.start(SUGGEST, self._work, self._done, on_error=self._failed, on_progress=self._progress,
                        on_phase=self.status.setText, on_cancel=self._cancelled, what="Scoring the models")

    def stop(self) -> None:
        self.jobs.cancel(SUGGEST)

    def done(self, result: int) -> None:  # noqa: A003 - Qt's name; closing stops the job
        self.jobs.cancel(SUGGEST, notify=False)
        super().done(result)

    def _progress(self, done: int, total: int) -> None:
        self.bar.setRange(0, max(1, total))
        self.bar.setValue(done)

    def _done(self, advice) -> None:
        self.advice = advice
        self.bar.setVisible(False)
        self.cancel_button.setEnabled(False)
        self.table.setRowCount(len(advice.models))
        for row, m in enumerate(advice.models):
            cells = (m.label, f"{m.score:.3f}",
                     f"{seconds_text(m.epoch_seconds_frozen)} \u2013 {seconds_text(m.epoch_seconds_full)}",
                     f"{format_count(m.params)} parameters, {m.size_mb:.0f} MB", m.licence or "unknown",
                     "best" if row == 0 else "")
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if column == 0:
                    item.setToolTip(f"{m.model}\n{m.weights}")
                if column == 1:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, column, item)
        if advice.models:
            self.table.selectRow(0)
        text = (f"Scored on {advice.pictures:,} of your pictures in {seconds_text(advice.seconds)}. "
                "Higher scores mean features that already separate your classes.")
        if advice.skipped:
            text += " Not scored: " + "; ".join(advice.skipped)
        self.status.setText(text)

    def _failed(self, message: str) -> None:
        self.bar.setVisible(False)
        self.cancel_button.setEnabled(False)
        self.status.setText(message)

    def _cancelled(self) -> None:
        self.bar.setVisible(False)
        self.cancel_button.setEnabled(False)
        self.status.setText("Stopped: press Suggest models again to score them.")

    def _selected(self) -> int | None:
        rows = {i.row() for i in self.table.selectedIndexes()}
        return min(rows) if rows else None

    def _use(self, row: int | None) -> None:
        if self.advice is None or row is None or row >= len(self.advice.models):
            return
        m = self.advice.models[row]
        self.chosen.emit(m.model, m.weights)
        self.accept()


class StageBars(QWidget):
    """One bar per stage (input on the left, head's side on the right), its height the stage's score, its stage's
    name under it (written upwards when the names are wider than the bars; every other one, or fewer, when even
    that does not fit); the stages up to the freeze point in blue (kept as they are), the ones after it in orange
    (retrained), the freeze point marked."""

    TOP = 16  # room for the freeze point's caption
    MAX_LABEL = 110  # the longest name drawn upwards, in pixels (longer ones are elided in the middle)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.stages: list[tuple[str, float]] = []
        self.freeze: str | None = None
        self.setMouseTracking(True)
        self.setMinimumHeight(90)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def set_scores(self, stages: list[tuple[str, float]], freeze: str | None) -> None:
        self.stages, self.freeze = list(stages), freeze
        self.setMinimumHeight(90 + self._label_band(upright=True))
        self.updateGeometry()
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(400, 110 + self._label_band(upright=True))

    def _upright(self) -> bool:
        """True when the names are written upwards (one of them is wider than its bar)."""
        if not self.stages:
            return False
        width = (self.width() - 8) / len(self.stages)
        metrics = self.fontMetrics()
        return max(metrics.horizontalAdvance(n) for n, _ in self.stages) + 4 > width

    def _label_band(self, upright: bool | None = None) -> int:
        """The height under the bars kept for the stages' names."""
        if not self.stages:
            return 0
        font = self.font()
        font.setBold(True)  # the freeze point's name is bold: the widest a name gets
        metrics = QFontMetrics(font)
        if upright is None:
            upright = self._upright()
        if not upright:
            return metrics.height() + 4
        return min(self.MAX_LABEL, max(metrics.horizontalAdvance(n) for n, _ in self.stages)) + 6

    def _geometry(self) -> list[QRectF]:
        if not self.stages:
            return []
        scores = [s for _, s in self.stages]
        low, high = min(scores), max(scores)
        span = (high - low) or 1.0
        area = QRectF(self.rect()).adjusted(4, self.TOP, -4, -4 - self._label_band())
        width = area.width() / len(self.stages)
        rects = []
        for i, (_, score) in enumerate(self.stages):
            height = max(2.0, area.height() * (0.15 + 0.85 * (score - low) / span))  # the lowest still shows a stub
            rects.append(QRectF(area.left() + i * width + 1, area.bottom() - height, max(1.0, width - 2), height))
        return rects

    def label_step(self) -> int:
        """Every how many stages a name is written (1: all of them), so that the names never overlap."""
        if not self.stages:
            return 1
        width = max(1.0, (self.width() - 8) / len(self.stages))
        metrics = self.fontMetrics()
        need = metrics.height() if self._upright() else max(metrics.horizontalAdvance(n) for n, _ in self.stages) + 4
        return max(1, math.ceil(need / width))

    def named_stages(self) -> list[int]:
        """The stages whose names are written under their bars: every ``label_step()``-th one and the freeze point
        (its neighbours left unnamed when the names would touch it)."""
        names = [n for n, _ in self.stages]
        if not names:
            return []
        step = self.label_step()
        cut = names.index(self.freeze) if self.freeze in names else len(names) - 1
        shown = set(range(0, len(names), step)) | {cut}
        if step > 1:
            shown -= {i for i in range(cut - step + 1, cut + step) if i != cut}
        return sorted(shown)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        names = [n for n, _ in self.stages]
        cut = names.index(self.freeze) if self.freeze in names else len(names) - 1
        rects = self._geometry()
        for i, rect in enumerate(rects):
            painter.fillRect(rect, KEEP_COLOUR if i <= cut else RETRAIN_COLOUR)
        self._draw_names(painter, rects, names, cut)
        if rects and self.freeze in names:
            x = rects[cut].right() + 1
            painter.setPen(QPen(MARK_COLOUR, 2, Qt.PenStyle.DashLine))
            painter.drawLine(int(x), 2, int(x), int(rects[cut].bottom()))
            painter.setPen(self.palette().text().color())
            text = f"freeze up to {self.freeze}"
            width = painter.fontMetrics().horizontalAdvance(text)
            left = x + 4 if x + 4 + width < self.width() else x - 4 - width
            painter.drawText(int(left), 12, text)
        painter.end()

    def _draw_names(self, painter: QPainter, rects: list[QRectF], names: list[str], cut: int) -> None:
        if not rects:
            return
        metrics = painter.fontMetrics()
        upright = self._upright()
        top = rects[0].bottom() + 3
        for i in self.named_stages():
            rect, name = rects[i], names[i]
            bold = i == cut and self.freeze in names
            font = painter.font()
            font.setBold(bold)
            painter.setFont(font)
            painter.setPen(MARK_COLOUR if bold else self.palette().text().color())
            if upright:
                text = painter.fontMetrics().elidedText(name, Qt.TextElideMode.ElideMiddle, self.MAX_LABEL)
                painter.save()
                # Written upwards, ending just under the bar, centred on it.
                painter.translate(rect.center().x() + metrics.ascent() / 2 - 1,
                                  top + painter.fontMetrics().horizontalAdvance(text))
                painter.rotate(-90)
                painter.drawText(0, 0, text)
                painter.restore()
            else:
                painter.drawText(QRectF(rect.left() - 2, top, rect.width() + 4, metrics.height()),
                                 Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, name)
        font = painter.font()
        font.setBold(False)
        painter.setFont(font)

    def stage_at(self, x: float) -> int | None:
        for i, rect in enumerate(self._geometry()):
            if rect.left() - 1 <= x <= rect.right() + 1:
                return i
        return None

    def mouseMoveEvent(self, event) -> None:  # noqa: N802 - Qt's name
        i = self.stage_at(event.position().x())
        if i is not None:
            name, score = self.stages[i]
            QToolTip.showText(event.globalPosition().toPoint(), f"{name}: score {score:.3f}", self)
        super().mouseMoveEvent(event)


class StageAdvice(QWidget):
    """The Layers step's advice: 'Score the layers' scores every stage of the project's model on the user's pictures
    (and pretrained against random weights); the bars show where the features stop transferring, and 'Apply'
    retrains the stages after the suggested freeze point (``applyFreeze(stage)``)."""

    applyFreeze = Signal(str)

    def __init__(self, parent: QWidget | None = None, jobs: Jobs | None = None) -> None:
        super().__init__(parent)
        self.jobs = Jobs(self, service=jobs)
        self.source = ""
        self.model: tuple[str, str] | None = None
        self.advice = None
        self.score_button = QPushButton("Score the layers on my pictures")
        self.score_button.setToolTip("Look at up to 2,000 of your pictures through each stage of the model, without "
                                     "training, to find where its features stop suiting your classes (about a "
                                     "minute on a laptop).")
        self.score_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(lambda: self.jobs.cancel(STAGES))
        self.stop_button.setVisible(False)
        self.apply_button = QPushButton()
        self.apply_button.setVisible(False)
        self.apply_button.clicked.connect(self._apply)
        self.bar = QProgressBar()
        self.bar.setVisible(False)
        self.bars = StageBars()
        self.bars.setVisible(False)
        self.bars.setToolTip(SCORE_TIP)
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.RichText)
        row = QHBoxLayout()
        row.addWidget(self.score_button)
        row.addWidget(self.bar, 1)
        row.addWidget(self.stop_button)
        row.addStretch()
        row.addWidget(self.apply_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.bars)
        layout.addWidget(self.text)

    def set_target(self, source: str, model: str, weights: str) -> None:
        """The project's pictures and model; advice for another model or folder is cleared."""
        if (source, (model, weights)) != (self.source, self.model):
            self.jobs.cancel(STAGES, notify=False)
            self.source, self.model = source, (model, weights)
            self.advice = None
            self._show_idle()
        self.score_button.setEnabled(bool(source))

    def start(self) -> None:
        if not self.source or self.model is None:
            return
        from engine.advise.transfer import Candidate

        candidate = Candidate(*self.model)

        def work(progress, stop):
            from engine.advise.transfer import advise
            from engine.data.scan import scan

            progress.say("Reading your pictures ...")
            dataset = scan(self.source, verify=False, stop=stop)
            return advise(dataset, [candidate], check=True, on_progress=progress, stop=stop, on_say=progress.say)

        self.score_button.setEnabled(False)
        self.stop_button.setVisible(True)
        self.bar.setVisible(True)
        self.bar.setRange(0, 0)
        self.text.setText("Scoring each stage on your pictures ...")
        self.jobs.start(STAGES, work, self.show_advice, on_error=self._failed, on_progress=self._progress,
                        on_phase=lambda text: self.text.setText(html.escape(text)), on_cancel=self._cancelled,
                        what="Scoring the layers")

    def show_advice(self, advice) -> None:
        self.advice = advice
        self._end_busy()
        self.bars.set_scores([(s.stage, s.score) for s in advice.stages], advice.suggested_freeze)
        self.bars.setVisible(bool(advice.stages))
        lines = [html.escape(advice.freeze_sentence)]
        if advice.transfer is not None:
            colour = "" if advice.transfer.clearly_better else " style='color:#D55E00'"
            lines.append(f"<span{colour}>{html.escape(advice.transfer.sentence)}</span>")
        self.text.setText("<br>".join(lines))
        if advice.suggested_freeze:
            self.apply_button.setText(f"Keep up to {advice.suggested_freeze}, retrain the rest")
            self.apply_button.setToolTip("Set the current phase to retrain the stages after the suggested freeze "
                                         "point and the new head, and keep the others as they are.")
            self.apply_button.setVisible(True)

    def _apply(self) -> None:
        if self.advice is not None and self.advice.suggested_freeze:
            self.applyFreeze.emit(self.advice.suggested_freeze)

    def _progress(self, done: int, total: int) -> None:
        self.bar.setRange(0, max(1, total))
        self.bar.setValue(done)

    def _end_busy(self) -> None:
        self.score_button.setEnabled(bool(self.source))
        self.stop_button.setVisible(False)
        self.bar.setVisible(False)

    def _show_idle(self) -> None:
        self._end_busy()
        self.bars.setVisible(False)
        self.apply_button.setVisible(False)
        self.text.setText("Which layers to keep? Score them on your pictures to see where the pretrained features "
                          "stop suiting your classes.")

    def _failed(self, message: str) -> None:
        self._end_busy()
        self.text.setText(html.escape(message))

    def _cancelled(self) -> None:
        self._end_busy()
        self.text.setText("Stopped: score the layers again when you like.")
