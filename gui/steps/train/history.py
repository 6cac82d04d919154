"""Every run of the project in a table; selecting runs overlays their validation curves to compare them."""

from __future__ import annotations

import os
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QPushButton, QSizePolicy,
                               QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from engine.project import runs
from gui.widgets.format import plural
from gui.widgets.plots import OKABE_ITO, _duration, _pen, _plain_numbers

RUN_COLOURS = [OKABE_ITO[k] for k in ("blue", "vermillion", "green", "orange", "purple", "sky")]
COLUMNS = ("Run", "Status", "Best accuracy", "Epochs", "Duration", "Strategy", "Model")
STATUS_WORDS = {"completed": "Completed", "stopped": "Stopped", "failed": "Failed", "running": "Running or crashed"}


class RunHistory(QWidget):
    runsChanged = Signal(int)
    resumeRequested = Signal(str)  # the folder of a stopped, failed or interrupted run to continue
    scratchRequested = Signal(str)  # the folder of a completed run to repeat from random weights (issue 13)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.folder: Path | None = None
        self.infos: list[runs.RunInfo] = []
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setToolTip("Select one run to see its curves, or several (Ctrl-click) to compare them.")
        self.table.itemSelectionChanged.connect(self._show_selected)
        self.hint = QLabel("No runs yet: press Start to train your first model.")
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("Read the runs folder again.")
        self.refresh_button.clicked.connect(self.refresh)
        self.resume_button = QPushButton("Resume run")
        self.resume_button.setToolTip("Continue the selected run from its last checkpoint, in the same folder (for a "
                                      "run that was stopped, failed or interrupted by a crash).")
        self.resume_button.setEnabled(False)
        self.resume_button.clicked.connect(self._resume_clicked)
        self.busy = False  # a run is training: nothing can be resumed meanwhile
        self.scratch_button = QPushButton("Compare with training from scratch")
        self.scratch_button.setToolTip("Train the selected run again from random weights, with the same pictures "
                                       "and the same number of epochs, to see what transfer gained.")
        self.scratch_button.setEnabled(False)
        self.scratch_button.clicked.connect(self._scratch_clicked)
        self.comparison_label = QLabel()
        self.comparison_label.setWordWrap(True)
        self.comparison_label.setVisible(False)

        self.compare = pg.GraphicsLayoutWidget()
        self.compare.setBackground(self.palette().base().color())
        self.acc_plot = self.compare.addPlot(row=0, col=0, title="Validation accuracy")
        self.loss_plot = self.compare.addPlot(row=0, col=1, title="Validation loss")
        for plot in (self.acc_plot, self.loss_plot):
            plot.showGrid(x=True, y=True, alpha=0.2)
            plot.setLabel("bottom", "epoch")
            _plain_numbers(plot)
        # Right of both plots, over no curve.
        self.legend = pg.LegendItem(labelTextSize="8pt", frame=False)
        self.legend.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)  # its lines, not the cell
        self.compare.addItem(self.legend, row=0, col=2)
        self.compare.ci.layout.setAlignment(self.legend, Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)

        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        # The sentence on a line of its own: beside three buttons it was cut off in a pane of 600 pixels.
        self.hint.setWordWrap(True)
        top_layout.addWidget(self.hint)
        bar = QHBoxLayout()
        bar.addStretch(1)
        bar.addWidget(self.scratch_button)
        bar.addWidget(self.resume_button)
        bar.addWidget(self.refresh_button)
        top_layout.addLayout(bar)
        top_layout.addWidget(self.table)
        top_layout.addWidget(self.comparison_label)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(top)
        splitter.addWidget(self.compare)
        splitter.setSizes([200, 300])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)

    def set_folder(self, folder: str | os.PathLike | None) -> None:
        self.folder = Path(folder) if folder else None
        self.refresh()

    def refresh(self) -> None:
        selected = {self.infos[i].path for i in self.selected_rows()}
        self.infos = runs.list_runs(self.folder) if self.folder else []
        self.table.setRowCount(len(self.infos))
        for row, info in enumerate(self.infos):
            summary = runs.read_summary(info.path)
            best = f"{info.best_val_acc:.1%}" if info.best_val_acc is not None else "-"
            total = summary.get("total_epochs")
            cells = (Path(info.path).name, STATUS_WORDS.get(info.status, info.status), best,
                     f"{info.epochs_completed}" + (f" of {total}" if total else ""),
                     _duration(summary.get("seconds", 0)), info.strategy, info.model)
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col == 1 and summary.get("error"):
                    item.setToolTip(summary["error"])
                self.table.setItem(row, col, item)
            if info.path in selected:
                self.table.selectRow(row)
        self.hint.setText(f"{plural(len(self.infos), 'run')} in {self.folder}" if self.infos else
                          "No runs yet: press Start to train your first model.")
        self.runsChanged.emit(len(self.infos))
        self._show_selected()

    def selected_rows(self) -> list[int]:
        return sorted({index.row() for index in self.table.selectionModel().selectedRows()})

    def select(self, rows: list[int]) -> None:
        self.table.clearSelection()
        mode = self.table.selectionMode()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        for row in rows:
            self.table.selectRow(row)
        self.table.setSelectionMode(mode)

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        self._update_resume()
        self._update_scratch()

    def _selected_for_resume(self) -> tuple[str | None, str | None]:
        """(the one selected run's folder, why it cannot be resumed: None when it can); (None, None) when not exactly
        one run is selected or a run is training."""
        rows = self.selected_rows()
        if len(rows) != 1 or self.busy:
            return None, None
        path = self.infos[rows[0]].path
        return path, runs.resume_problem(path)

    def resumable(self) -> str | None:
        """The selected run's folder when exactly one run is selected and it can be resumed."""
        path, problem = self._selected_for_resume()
        return path if problem is None else None

    def _update_resume(self) -> None:
        path, problem = self._selected_for_resume()
        self.resume_button.setEnabled(path is not None and problem is None)
        if path is None:
            self.resume_button.setToolTip("Select one stopped, failed or interrupted run to continue it from its "
                                          "last checkpoint.")
        elif problem is None:
            self.resume_button.setToolTip(f"Continue {Path(path).name} from its last checkpoint, in the same folder.")
        else:
            self.resume_button.setToolTip(problem)

    def _update_scratch(self) -> None:
        from engine.advise import scratch

        rows = self.selected_rows()
        path = self.infos[rows[0]].path if len(rows) == 1 else None
        problem = scratch.comparison_problem(path) if path else "Select one completed run."
        self.scratch_button.setEnabled(path is not None and problem is None and not self.busy)
        self.scratch_button.setToolTip(problem or "Train this run again from random weights, with the same pictures "
                                       "and the same number of epochs, to see what transfer gained.")
        comparison = scratch.comparison_of(path) if path else None
        self.comparison_label.setText(comparison["sentence"] if comparison else "")
        self.comparison_label.setVisible(bool(comparison))

    def _scratch_clicked(self) -> None:
        rows = self.selected_rows()
        if len(rows) == 1 and not self.busy:
            self.scratchRequested.emit(self.infos[rows[0]].path)

    def _resume_clicked(self) -> None:
        path = self.resumable()
        if path is not None:
            self.resumeRequested.emit(path)

    def _show_selected(self) -> None:
        self._update_resume()
        self._update_scratch()
        for plot in (self.acc_plot, self.loss_plot):
            plot.clear()
        self.legend.clear()
        last = 0
        for n, row in enumerate(self.selected_rows()[: len(RUN_COLOURS)]):
            info = self.infos[row]
            records = runs.read_metrics(info.path)
            epochs = [r["epoch"] for r in records]
            last = max([last] + epochs)
            pen = _pen(RUN_COLOURS[n])
            label = f"{info.strategy or Path(info.path).name}"
            curve = self.acc_plot.plot(epochs, [r["val_acc"] for r in records], pen=pen, symbol="o", symbolSize=5,
                                       symbolBrush=RUN_COLOURS[n], name=label)
            self.legend.addItem(curve, label)
            self.loss_plot.plot(epochs, [r["val_loss"] for r in records], pen=pen, symbol="o", symbolSize=5,
                                symbolBrush=RUN_COLOURS[n])
        # Epochs are whole: no 1.5 or 2.5 on a short run's axis, and few enough numbers to read in a narrow plot.
        step = 1 if last <= 6 else 2 if last <= 12 else 5
        for plot in (self.acc_plot, self.loss_plot):
            axis = plot.getAxis("bottom")
            axis.setTickSpacing(step, 1) if last <= 30 else axis.setTickSpacing()  # none chosen: 0 and 1, not 0.2
        # pyqtgraph moves a legend to (0, 0) when its lines change: back into its place now, not at the next paint.
        self.legend.updateGeometry()
        self.compare.ci.layout.activate()

    def plotted_runs(self) -> int:
        return len([i for i in self.acc_plot.items if isinstance(i, pg.PlotDataItem)])
