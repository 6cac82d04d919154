"""Pictures per class as horizontal bars (pyqtgraph), each bar split into training, validation and test.

Colours are Okabe-Ito (safe for colour-blind readers); class names read on the left, totals at the end of each bar.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from engine.data.scan import SPLITS

# Okabe-Ito: blue, orange, bluish green.
SPLIT_COLOURS = {"train": "#0072B2", "val": "#E69F00", "test": "#009E73"}
SPLIT_LABELS = {"train": "training", "val": "validation", "test": "test"}
MAX_LABELLED = 40  # with more classes only every n-th name is written, so that the names stay readable
BAR_THICKNESS = 0.7


class ClassCountChart(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        palette = self.palette()
        self._text = palette.color(QPalette.ColorRole.WindowText)
        self.plot = pg.PlotWidget(background=palette.color(QPalette.ColorRole.Base))
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.invertY(True)  # the first class at the top, as in every list of the window
        self.plot.setToolTip("How many pictures each class has, and how they are divided between training, "
                             "validation and test. Long bars of similar length are what you want.")
        for name in ("left", "bottom"):
            axis = self.plot.getAxis(name)
            axis.setTextPen(pg.mkPen(self._text))
            axis.setPen(pg.mkPen(QColor(self._text.red(), self._text.green(), self._text.blue(), 120)))
        self.plot.getAxis("bottom").setLabel("pictures", color=self._text.name())
        self.legend = QLabel()
        self.legend.setToolTip("Training pictures teach the model; validation pictures measure it during training; "
                               "test pictures are kept for a final check.")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.legend)
        self.counts: dict[str, dict[str, int]] = {}
        self.classes: list[str] = []
        self.bars: dict[str, pg.BarGraphItem] = {}

    def set_counts(self, classes: list[str], counts: dict[str, dict[str, int]],
                   pictures: dict[str, int] | None = None) -> None:
        """``counts[split][class]`` as given by ``DatasetIndex.counts()``; ``pictures[split]``, the legend's totals
        when a picture is in several bars (one per task: gui.widgets.task_counts), else the bars' sums."""
        self.classes, self.counts = list(classes), counts
        self.plot.clear()
        self.bars = {}
        n = len(classes)
        if n == 0:
            self.legend.setText("")
            return
        left = [0] * n
        used = [s for s in SPLITS if any(counts.get(s, {}).values())]
        for split in used:
            widths = [counts[split].get(c, 0) for c in classes]
            bar = pg.BarGraphItem(x0=left, y=list(range(n)), width=widths, height=BAR_THICKNESS,
                                  brush=pg.mkBrush(SPLIT_COLOURS[split]), pen=pg.mkPen(None))
            self.plot.addItem(bar)
            self.bars[split] = bar
            left = [a + b for a, b in zip(left, widths)]
        biggest = max(left) or 1
        if n <= MAX_LABELLED:
            for row, total in enumerate(left):
                label = pg.TextItem(f"{total:,}", color=self._text, anchor=(0, 0.5))
                label.setPos(total + biggest * 0.01, row)
                self.plot.addItem(label)
        step = max(1, -(-n // MAX_LABELLED))
        self.plot.getAxis("left").setTicks([[(i, _short(classes[i])) for i in range(0, n, step)], []])
        self.plot.setXRange(0, biggest * 1.15, padding=0)
        self.plot.setYRange(-0.6, n - 0.4, padding=0)
        self.legend.setText("   ".join(
            f'<span style="color:{SPLIT_COLOURS[s]}">&#9632;</span> {SPLIT_LABELS[s]} '
            f'({(pictures or {}).get(s, sum(counts[s].values())):,})' for s in used))

    def totals(self) -> dict[str, int]:
        """Pictures per class over every split (what the bars show)."""
        return {c: sum(self.counts.get(s, {}).get(c, 0) for s in SPLITS) for c in self.classes}


def _short(name: str, limit: int = 18) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"
