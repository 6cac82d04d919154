"""The learning-rate finder's curve: loss against learning rate (logarithmic), the suggested rate marked, and a button
that applies it (engine.advise.lr_finder gives the numbers)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from gui.widgets.plots import OKABE_ITO, _pen, _plain_numbers

EMPTY = ("Find a learning rate: a short sweep of rates on your pictures (Smith's range test) shows up to which rate "
         "the loss keeps falling. Press 'Find...' beside the learning rate.")


class LRPlot(QWidget):
    """``show_finding(finding)`` draws an ``LRFinding``; ``applyRequested(lr)`` when the user takes the suggestion."""

    applyRequested = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.finding = None
        self.view = pg.PlotWidget()
        self.view.setBackground(self.palette().base().color())
        self.plot = self.view.getPlotItem()
        self.plot.setLogMode(x=True, y=False)
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.setLabel("bottom", "learning rate")
        self.plot.setLabel("left", "loss (smoothed)")
        _plain_numbers(self.plot)  # "0.7", not "700 (x0.001)"
        self.curve = self.plot.plot([], [], pen=_pen(OKABE_ITO["blue"]))
        self.marker = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(OKABE_ITO["vermillion"], width=2,
                                                                           style=Qt.PenStyle.DashLine))
        self.marker.setVisible(False)
        self.plot.addItem(self.marker)
        self.words = QLabel(EMPTY)
        self.words.setWordWrap(True)
        self.apply_button = QPushButton("Use the suggested rate")
        self.apply_button.setEnabled(False)
        self.apply_button.setToolTip("Set the learning rate to the suggested value for the next run.")
        self.apply_button.clicked.connect(self._apply)
        row = QHBoxLayout()
        row.addWidget(self.words, 1)
        row.addWidget(self.apply_button, 0, Qt.AlignmentFlag.AlignTop)
        layout = QVBoxLayout(self)
        layout.addWidget(self.view, 1)
        layout.addLayout(row)

    def show_finding(self, finding) -> None:
        self.finding = finding
        lrs, losses = np.asarray(finding.lrs), np.asarray(finding.losses)
        # The divergence at the end would squash the useful part of the curve: the y range stops a little above
        # where the sweep started.
        self.curve.setData(lrs, losses)
        top = max(float(losses[: max(1, len(losses) // 10)].max()), float(losses.min())) * 1.15
        self.plot.setYRange(float(losses.min()) * 0.95, top, padding=0)
        self.plot.setXRange(np.log10(lrs[0]), np.log10(lrs[-1]), padding=0.02)
        self.marker.setValue(np.log10(finding.suggestion))
        self.marker.setVisible(True)
        self.words.setText(finding.sentence())
        self.apply_button.setText(f"Use {finding.suggestion:.2g}")
        self.apply_button.setEnabled(True)

    def show_message(self, text: str) -> None:
        self.words.setText(text)

    def clear(self) -> None:
        self.finding = None
        self.curve.setData([], [])
        self.marker.setVisible(False)
        self.words.setText(EMPTY)
        self.apply_button.setText("Use the suggested rate")
        self.apply_button.setEnabled(False)

    def _apply(self) -> None:
        if self.finding is not None:
            self.applyRequested.emit(float(f"{self.finding.suggestion:.2g}"))
