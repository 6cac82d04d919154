"""The drift report's plot (engine.shift.drift): how unlike the training pictures the new pictures are, against the
validation pictures, with the threshold; and the predicted class mix before and after.

Fed with plain data only: ``DriftReport.histogram()`` and the two class mixes."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QWidget

from gui import style


def _plain(plot: pg.PlotItem) -> None:
    for side in ("left", "bottom"):
        plot.getAxis(side).enableAutoSIPrefix(False)


class DriftPlot(QWidget):
    """Two plots side by side: the score histograms with the threshold, and the class mix bars."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        pg.setConfigOptions(antialias=True)
        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground(self.palette().base().color())
        self.view.setMinimumHeight(170)
        self.view.setMaximumHeight(230)  # the table of predictions keeps most of the page
        self.scores = self.view.addPlot(row=0, col=0, title="How unlike the training pictures")
        self.scores.setLabel("bottom", "score (higher: less like the training pictures)")
        self.scores.setLabel("left", "share of pictures")
        self.scores.setMouseEnabled(x=False, y=False)
        self.scores.setMenuEnabled(False)
        self.scores.setToolTip("Grey: the validation pictures (like the training ones). Orange: the new pictures. "
                               "Pictures right of the dashed line are flagged; about 5 % of the validation pictures "
                               "are, by design.")
        self.legend = self.scores.addLegend(offset=(-10, 5))
        _plain(self.scores)
        self.mix = self.view.addPlot(row=0, col=1, title="Predicted classes")
        self.mix.setLabel("left", "share of pictures")
        self.mix.setMouseEnabled(x=False, y=False)
        self.mix.setMenuEnabled(False)
        self.mix.setToolTip("The share of pictures predicted as each class: grey on the validation pictures, orange on "
                            "the new pictures.")
        _plain(self.mix)
        self.view.ci.layout.setColumnStretchFactor(0, 3)
        self.view.ci.layout.setColumnStretchFactor(1, 2)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)

    def clear(self) -> None:
        self.scores.clear()
        self.mix.clear()
        if self.legend is not None:
            self.legend.clear()

    def show_report(self, histogram: dict, classes: list[str], reference_mix: list[float],
                    new_mix: list[float]) -> None:
        self.clear()
        edges = histogram["edges"]
        width = edges[1] - edges[0]
        centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
        ref = pg.BarGraphItem(x=centres, height=histogram["reference"], width=width * 0.95,
                              brush=pg.mkColor(138, 138, 138, 140), pen=pg.mkPen(None))
        new = pg.BarGraphItem(x=centres, height=histogram["new"], width=width * 0.95,
                              brush=pg.mkColor(style.ORANGE + "b0"), pen=pg.mkPen(None))
        self.scores.addItem(ref)
        self.scores.addItem(new)
        self.legend.addItem(ref, "validation pictures")
        self.legend.addItem(new, "new pictures")
        line = pg.InfiniteLine(histogram["threshold"], angle=90,
                               pen=pg.mkPen(style.VERMILLION, width=2, style=Qt.PenStyle.DashLine),
                               label="threshold", labelOpts={"position": 0.9, "color": style.VERMILLION})
        self.scores.addItem(line)
        self.scores.setXRange(edges[0], edges[-1] + width, padding=0.02)
        n = len(classes)
        xs = list(range(n))
        self.mix.addItem(pg.BarGraphItem(x=[x - 0.2 for x in xs], height=reference_mix, width=0.38,
                                         brush=pg.mkColor(138, 138, 138, 170), pen=pg.mkPen(None)))
        self.mix.addItem(pg.BarGraphItem(x=[x + 0.2 for x in xs], height=new_mix, width=0.38,
                                         brush=pg.mkColor(style.ORANGE), pen=pg.mkPen(None)))
        self.mix.getAxis("bottom").setTicks([[(x, c if len(c) <= 14 else c[:13] + "\u2026")
                                              for x, c in zip(xs, classes)]])
        self.mix.setYRange(0, max(1e-3, max(list(reference_mix) + list(new_mix))) * 1.1, padding=0)
        self.mix.setXRange(-0.7, n - 0.3, padding=0)
