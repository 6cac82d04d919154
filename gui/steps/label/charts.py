"""The two plots of the Label step: the map of the pictures (PCA of the model's features) with lasso selection, and
validation accuracy against the number of labelled pictures across rounds."""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QColor, QPainterPath, QPolygonF

from engine.active import NONE_OF_THESE

# Okabe-Ito, colour-blind safe; classes beyond eight reuse them.
PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442", "#000000")
NONE_COLOUR = "#8A8A8A"


def class_colour(index: int) -> QColor:
    return QColor(PALETTE[index % len(PALETTE)])


class _LassoBox(pg.ViewBox):
    """A view box where dragging with the left button draws a lasso (the right button and the wheel still pan and
    zoom)."""

    lassoed = Signal(object)  # QPolygonF in data coordinates

    def __init__(self) -> None:
        super().__init__()
        self.setMouseMode(pg.ViewBox.PanMode)
        self.trail = pg.PlotCurveItem(pen=pg.mkPen("#0072B2", width=2, style=Qt.PenStyle.DashLine))
        self.addItem(self.trail, ignoreBounds=True)
        self.points: list[QPointF] = []

    def mouseDragEvent(self, ev, axis=None) -> None:  # noqa: N802 - pyqtgraph's name
        if ev.button() != Qt.MouseButton.LeftButton:
            return super().mouseDragEvent(ev, axis)
        ev.accept()
        point = self.mapSceneToView(ev.scenePos())
        if ev.isStart():
            self.points = [self.mapSceneToView(ev.buttonDownScenePos())]
        self.points.append(point)
        xs = [p.x() for p in self.points] + [self.points[0].x()]
        ys = [p.y() for p in self.points] + [self.points[0].y()]
        self.trail.setData(xs, ys)
        if ev.isFinish():
            self.lassoed.emit(QPolygonF(self.points))

    def lasso(self, polygon: QPolygonF) -> None:
        """Select the points inside ``polygon`` (data coordinates) as a drag would (tests and scripts)."""
        self.points = list(polygon)
        self.trail.setData([p.x() for p in self.points] + [self.points[0].x()],
                           [p.y() for p in self.points] + [self.points[0].y()])
        self.lassoed.emit(polygon)


class PictureMap(pg.PlotWidget):
    """Each picture as a dot: filled in its class's colour once answered, a ring in the colour of the model's guess
    while unanswered, grey for "none of these". Drag a lasso around a group to select it."""

    selectionChanged = Signal(list)  # the selected rows

    def __init__(self, parent=None) -> None:
        self.box = _LassoBox()
        super().__init__(parent, viewBox=self.box)
        self.setBackground(None)
        self.hideAxis("left")
        self.hideAxis("bottom")
        self.setMenuEnabled(False)
        self.scatter = pg.ScatterPlotItem(size=9, pxMode=True, hoverable=True,
                                          tip=lambda x, y, data: str(data))  # hovering a dot names its picture
        self.selected_ring = pg.ScatterPlotItem(size=15, pxMode=True, brush=None,
                                                pen=pg.mkPen("#D55E00", width=2))
        self.addItem(self.scatter)
        self.addItem(self.selected_ring)
        self.legend = self.addLegend(offset=(8, 8), labelTextSize="9pt")
        self.coords = np.zeros((0, 2), dtype=np.float32)
        self.selected: list[int] = []
        self.box.lassoed.connect(self._lassoed)

    def set_points(self, coords: np.ndarray, classes: list[str], guesses: list[int | None],
                   answers: list[str | None], tips: list[str]) -> None:
        self.coords = np.asarray(coords, dtype=np.float32)
        spots = []
        for i, (x, y) in enumerate(self.coords):
            answer = answers[i]
            if answer == NONE_OF_THESE:
                brush, pen = pg.mkBrush(NONE_COLOUR), pg.mkPen(NONE_COLOUR)
            elif answer is not None and answer in classes:
                c = class_colour(classes.index(answer))
                brush, pen = pg.mkBrush(c), pg.mkPen(c.darker(130))
            else:
                c = class_colour(guesses[i]) if guesses[i] is not None else QColor(NONE_COLOUR)
                brush, pen = pg.mkBrush(None), pg.mkPen(c, width=2)
            spots.append({"pos": (float(x), float(y)), "brush": brush, "pen": pen, "data": tips[i]})
        self.scatter.setData(spots)
        self.legend.clear()
        for i, name in enumerate(classes):
            self.legend.addItem(pg.ScatterPlotItem(size=9, brush=pg.mkBrush(class_colour(i)), pen=None), name)
        self.legend.addItem(pg.ScatterPlotItem(size=9, brush=None, pen=pg.mkPen("#8A8A8A", width=2)),
                            "ring: the model's guess, not yet labelled")
        self.set_selection([i for i in self.selected if i < len(self.coords)])
        self.box.autoRange(padding=0.08)

    def set_selection(self, rows: list[int]) -> None:
        self.selected = list(rows)
        pts = self.coords[self.selected] if self.selected else np.zeros((0, 2))
        self.selected_ring.setData(pos=pts)
        if not self.selected:
            self.box.trail.setData([], [])
        self.selectionChanged.emit(self.selected)

    def _lassoed(self, polygon: QPolygonF) -> None:
        path = QPainterPath()
        path.addPolygon(polygon)
        path.closeSubpath()
        self.set_selection([i for i, (x, y) in enumerate(self.coords) if path.contains(QPointF(float(x), float(y)))])


class RoundsChart(pg.PlotWidget):
    """Validation accuracy against pictures labelled, one point per round (the first: the run suggestions began
    from)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setBackground(None)
        self.setMenuEnabled(False)
        self.setMouseEnabled(False, False)
        self.hideButtons()
        item = self.getPlotItem()
        item.setLabel("bottom", "training pictures (labelled)")
        item.setLabel("left", "validation accuracy")
        item.getAxis("left").enableAutoSIPrefix(False)  # 0.94, not "940 (x0.001)" with a clipped label
        item.showGrid(x=True, y=True, alpha=0.2)
        self.curve = self.plot([], [], pen=pg.mkPen("#0072B2", width=2), symbol="o", symbolSize=7,
                               symbolBrush="#0072B2")
        self.setMinimumHeight(150)

    def set_rounds(self, counts: list[int], accuracies: list[float]) -> None:
        self.curve.setData(np.asarray(counts, dtype=float), np.asarray(accuracies, dtype=float))
        if counts:
            low = min(accuracies) if accuracies else 0.0
            high = max(accuracies) if accuracies else 1.0
            bottom = max(0.0, low - 0.05)
            # Room above the highest point (even at 100 %) and below the lowest, so that no dot is cut by an edge:
            # a tenth of the span, at least 0.02.
            pad = max(0.02, 0.1 * (max(high, bottom + 0.05) - bottom))
            self.setYRange(bottom - (pad if bottom > 0 else pad / 2), high + pad, padding=0)
            span = max(counts) - min(counts)
            # At least 5 pictures either side: a lone point gets whole-number ticks (not 148.5, 149.5).
            margin = max(5, span * 0.05)
            self.setXRange(min(counts) - margin, max(counts) + margin, padding=0)
