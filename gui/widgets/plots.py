"""Live training plots (pyqtgraph): loss, accuracy, learning rate, throughput, and which stages are learning.

Engine events only append numbers to growable arrays; a QTimer redraws what changed, so a fast GPU run sending hundreds
of steps a second costs the GUI thread almost nothing. Each tick redraws one plot only (a plot every 1/REDRAW_HZ s,
each plot several times a second): the window's thread shares Python's interpreter lock with training, and painting
all five plots at once took 30 ms on an idle 2-core machine and over 100 ms while training ran; one plot at a time
keeps every pause of the window short (bench/bench_gui_stall.py measures it). Colours are Okabe-Ito (colour-blind
safe); the heat map uses viridis.

What the plots show is the run being trained and nothing else: ``reset`` (a new run, another project) clears the
curves, the stage names and the axes' ranges; the epoch axes span the whole run from its first step, in plain numbers
(pyqtgraph's automatic SI prefix wrote "epoch (x0.001)" under the first steps); legends sit above the plots, never
over a curve; and the time left leaves out the time the run was paused.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QLabel, QStackedWidget, QVBoxLayout, QWidget

from engine import events as ev

REDRAW_HZ = 20  # ticks per second; each tick redraws one of the plots that changed
GROUPS = ("loss", "acc", "lr", "speed", "heat")
SPEED_LOG_RATIO = 20  # the pictures/s plot turns logarithmic when its fastest point is this many times its slowest
SMOOTHING = 0.9  # exponential moving average of the step loss
OKABE_ITO = {"orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73", "yellow": "#F0E442", "blue": "#0072B2",
             "vermillion": "#D55E00", "purple": "#CC79A7", "grey": "#999999"}
PHASE_SHADES = ("#56B4E922", "#E69F0022")


class Series:
    """A growable float array pair (x, y) with amortised O(1) append."""

    def __init__(self, capacity: int = 256) -> None:
        self._x = np.empty(capacity)
        self._y = np.empty(capacity)
        self.n = 0

    def append(self, x: float, y: float) -> None:
        if self.n == len(self._x):
            self._x = np.resize(self._x, 2 * self.n)
            self._y = np.resize(self._y, 2 * self.n)
        self._x[self.n], self._y[self.n] = x, y
        self.n += 1

    @property
    def x(self) -> np.ndarray:
        return self._x[: self.n]

    @property
    def y(self) -> np.ndarray:
        return self._y[: self.n]

    def clear(self) -> None:
        self.n = 0


def _pen(colour: str, width: float = 2, alpha: int = 255):
    c = QColor(colour)
    c.setAlpha(alpha)
    return pg.mkPen(c, width=width)


class _DecadeAxis(pg.AxisItem):
    """An axis whose logarithmic ticks are the powers of ten (first level) and 2-9 times them (second level).
    pyqtgraph's own make the 2-9 ticks the first level when the range spans under two decades, so that with labels
    on every one of them they overlap."""

    def logTickValues(self, minVal, maxVal, size, stdTicks):
        decades = range(math.floor(minVal), math.ceil(maxVal) + 1)
        major = [float(d) for d in decades if minVal <= d <= maxVal]
        minor = [x for d in decades for x in (d + math.log10(k) for k in range(2, 10)) if minVal < x < maxVal]
        return [(1.0, major), (None, minor)]


class TrainingPlots(QWidget):
    """Feed it engine events with ``add_event``; it redraws itself from a timer."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        pg.setConfigOptions(antialias=True)
        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground(self.palette().base().color())
        self.eta_label = QLabel(" ")
        self.eta_label.setToolTip("Pictures per second over the current epoch, and the estimated time left.")
        self.hint = QLabel("The curves appear here as soon as training starts: the loss, the accuracy, the "
                           "learning rate, the speed, and which stages of the network are learning.")
        self.hint.setWordWrap(True)
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setEnabled(False)  # greyed: an explanation
        self.stack = QStackedWidget()
        self.stack.addWidget(self.hint)
        self.stack.addWidget(self.view)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.stack)
        layout.addWidget(self.eta_label)

        self.loss_plot = self._plot(0, 0, "Loss", "lower is better: training per step, validation per epoch")
        self.acc_plot = self._plot(0, 1, "Accuracy", "share of pictures classified correctly, per epoch")
        self.lr_plot = self._plot(1, 0, "Learning rate", "step size of the head's weights; warm-up, then decay")
        self.speed_plot = self._plot(1, 1, "Pictures / s", "training throughput (on a logarithmic scale when it spans "
                                     "a wide range: a head trained on stored outputs runs a hundred times faster "
                                     "than a pass through the network)", left=_DecadeAxis("left"))
        self.speed_plot.getAxis("left").setStyle(maxTextLevel=0)  # label the first tick level only: the decades
        self.speed_log = False
        self.heat_plot = self.view.addPlot(row=2, col=0, colspan=2, title="Which stages are learning")
        self.heat_plot.setToolTip("Gradient size per stage (bottom: input, top: head) along training. A frozen stage "
                                  "stays dark; a stage that is retrained lights up.")
        self.heat_plot.setLabel("bottom", "training step")
        _plain_numbers(self.heat_plot)
        self.heat_plot.getAxis("left").setWidth(110)  # room for stage names
        self.heat_plot.setMouseEnabled(x=False, y=False)
        self.heat_image = pg.ImageItem()
        self.heat_image.setColorMap(pg.colormap.get("viridis"))
        self.heat_plot.addItem(self.heat_image)
        self.acc_plot.setYRange(0, 1)

        self.step_loss = self.loss_plot.plot(pen=_pen(OKABE_ITO["sky"], 1, 90), name="each step")
        self.smooth_loss = self.loss_plot.plot(pen=_pen(OKABE_ITO["blue"]), name="smoothed")
        self.val_loss = self.loss_plot.plot(pen=_pen(OKABE_ITO["vermillion"]), symbol="o", symbolSize=6,
                                            symbolBrush=OKABE_ITO["vermillion"], name="validation")
        self.train_acc = self.acc_plot.plot(pen=_pen(OKABE_ITO["blue"]), symbol="o", symbolSize=5,
                                            symbolBrush=OKABE_ITO["blue"], name="training")
        self.val_acc = self.acc_plot.plot(pen=_pen(OKABE_ITO["vermillion"]), symbol="o", symbolSize=6,
                                          symbolBrush=OKABE_ITO["vermillion"], name="validation")
        self.legends = {"loss": _legend_above(self.loss_plot, (self.step_loss, self.smooth_loss, self.val_loss)),
                        "acc": _legend_above(self.acc_plot, (self.train_acc, self.val_acc))}
        self.lr_curve = self.lr_plot.plot(pen=_pen(OKABE_ITO["green"]))
        self.speed_curve = self.speed_plot.plot(pen=_pen(OKABE_ITO["orange"]))
        for plot, curve in ((self.loss_plot, self.step_loss), (self.lr_plot, self.lr_curve),
                            (self.speed_plot, self.speed_curve)):
            curve.setDownsampling(auto=True, method="peak")
            curve.setClipToView(True)

        self.clock = time.monotonic  # what the time left is measured with (tests set their own)
        self.timer = QTimer(self)
        self.timer.setInterval(1000 // REDRAW_HZ)
        self.timer.timeout.connect(self.redraw_next)
        self.reset()

    def _plot(self, row: int, col: int, title: str, tip: str, left: pg.AxisItem | None = None) -> pg.PlotItem:
        plot = self.view.addPlot(row=row, col=col, title=title, axisItems={"left": left} if left else None)
        plot.showGrid(x=True, y=True, alpha=0.2)
        plot.setLabel("bottom", "epoch")
        _plain_numbers(plot)
        plot.setToolTip(tip)
        return plot

    @property
    def epoch_plots(self) -> tuple[pg.PlotItem, ...]:
        return self.loss_plot, self.acc_plot, self.lr_plot, self.speed_plot

    def _show_epochs(self, last: float) -> None:
        """The epoch axes span epochs 0 to ``last`` (the whole run) from its first step."""
        for plot in self.epoch_plots:
            plot.setXRange(0, max(1.0, float(last)), padding=0.02)

    # --- data -------------------------------------------------------------------------------------------------

    def reset(self) -> None:
        self.series = {k: Series() for k in ("step_loss", "smooth_loss", "val_loss", "train_acc", "val_acc", "lr",
                                             "speed")}
        self.steps_per_epoch = 1
        self.total_epochs = 1
        self.smoothed: float | None = None
        self.heat_columns: list[np.ndarray] = []
        self.heat_steps: list[int] = []
        self.stage_names: tuple[str, ...] = ()
        self.phase_starts: list[float] = []
        self.eta_text = " "
        self._last_step_time: float | None = None
        self._step_seconds: float | None = None
        self.paused = False
        self._remove_regions()
        for plot in (*self.epoch_plots, self.heat_plot):
            plot.setRange(xRange=(0, 1), yRange=(0, 1), padding=0.02)  # the previous run's ranges go with its curves
            plot.enableAutoRange()
        self.acc_plot.setYRange(0, 1)
        self._show_epochs(1)
        self.heat_plot.getAxis("left").setTicks([])  # its stage names too
        self.dirty = set(GROUPS)
        self._next = 0
        self.stack.setCurrentWidget(self.hint)
        self.redraw()

    def add_event(self, event) -> None:
        if isinstance(event, ev.RunStarted):
            self.total_epochs = event.total_epochs
            self._show_epochs(event.total_epochs)
        elif isinstance(event, ev.StepEnded):
            self.steps_per_epoch = max(1, event.steps)
            x = event.epoch - 1 + event.step / event.steps  # fractional epoch
            self.series["step_loss"].append(x, event.loss)
            self.smoothed = event.loss if self.smoothed is None else (
                SMOOTHING * self.smoothed + (1 - SMOOTHING) * event.loss)
            self.series["smooth_loss"].append(x, self.smoothed)
            self.series["lr"].append(x, event.lr)
            self.series["speed"].append(x, event.images_per_s)
            now = self.clock()
            if self._last_step_time is not None:  # (None after a pause: that interval is not a step's time)
                took = now - self._last_step_time
                self._step_seconds = took if self._step_seconds is None else 0.8 * self._step_seconds + 0.2 * took
            self._last_step_time = now
            left_steps = (self.total_epochs - event.epoch) * event.steps + (event.steps - event.step)
            eta = f"  -  about {_duration(left_steps * self._step_seconds)} left" if self._step_seconds else ""
            self.eta_text = f"{event.images_per_s:.0f} pictures/s" + ("  -  paused" if self.paused else eta)
            self.dirty |= {"loss", "lr", "speed"}
        elif isinstance(event, ev.EpochEnded):
            self.series["val_loss"].append(event.epoch, event.val_loss)
            self.series["train_acc"].append(event.epoch, event.train_acc)
            self.series["val_acc"].append(event.epoch, event.val_acc)
            self.dirty |= {"loss", "acc"}
        elif isinstance(event, ev.PhaseStarted):
            start = self.series["step_loss"].x[-1] if self.series["step_loss"].n else 0.0
            self.phase_starts.append(float(round(start)))
            self.dirty |= {"loss", "acc"}
        elif isinstance(event, ev.LayerActivity):
            self.stage_names = event.stages
            self.heat_columns.append(np.asarray(event.grad_norms, dtype=float))
            self.heat_steps.append(event.step)
            self.dirty.add("heat")

    def pause(self) -> None:
        """The run is paused: the time until ``resume`` is not training time."""
        self.paused = True
        speed = self.eta_text.split("  -  ")[0].strip()
        self.eta_text = f"{speed}  -  paused" if speed else "Paused"
        self.dirty.add("speed")

    def resume(self) -> None:
        self.paused = False
        self._last_step_time = None  # the next step's interval would span the pause

    def load_records(self, records: list[dict]) -> None:
        """Show a finished run's curves from its metrics.jsonl records."""
        self.reset()
        self._show_epochs(max((r["epoch"] for r in records), default=1))
        for r in records:
            self.series["val_loss"].append(r["epoch"], r["val_loss"])
            self.series["train_acc"].append(r["epoch"], r.get("train_acc", np.nan))
            self.series["val_acc"].append(r["epoch"], r["val_acc"])
            self.series["smooth_loss"].append(r["epoch"], r["train_loss"])
            self.series["lr"].append(r["epoch"], r["lr"])
        self.dirty = set(GROUPS)
        self.redraw()

    # --- drawing ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        # Show the (empty) plots now: their first paint, all five at once, happens while the run is still starting
        # rather than in the middle of its first steps.
        self.stack.setCurrentWidget(self.view)
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()
        self.redraw()

    def redraw_next(self) -> None:
        """Redraw the next plot that changed (the timer's tick)."""
        for i in range(len(GROUPS)):
            group = GROUPS[(self._next + i) % len(GROUPS)]
            if group in self.dirty:
                self._next = (self._next + i + 1) % len(GROUPS)
                self._draw(group)
                return

    def redraw(self) -> None:
        """Redraw every plot that changed."""
        for group in GROUPS:
            if group in self.dirty:
                self._draw(group)

    def _draw(self, group: str) -> None:
        self.dirty.discard(group)
        if self.stack.currentWidget() is self.hint and any(v.n for v in self.series.values()):
            self.stack.setCurrentWidget(self.view)
        s = self.series
        if group == "loss":
            self.step_loss.setData(s["step_loss"].x, s["step_loss"].y)
            self.smooth_loss.setData(s["smooth_loss"].x, s["smooth_loss"].y)
            self.val_loss.setData(s["val_loss"].x, s["val_loss"].y)
            self._draw_phases()
        elif group == "acc":
            self.train_acc.setData(s["train_acc"].x, s["train_acc"].y)
            self.val_acc.setData(s["val_acc"].x, s["val_acc"].y)
            self._draw_phases()
        elif group == "lr":
            self.lr_curve.setData(s["lr"].x, s["lr"].y)
        elif group == "speed":
            y = s["speed"].y
            # Logarithmic once the speeds span more than 20x (stored outputs next to whole-network passes), so that
            # both stay readable; linear otherwise.
            wide = len(y) > 0 and float(np.min(y)) > 0 and float(np.max(y)) > SPEED_LOG_RATIO * float(np.min(y))
            if wide != self.speed_log:
                self.speed_log = wide
                self.speed_plot.setLogMode(y=wide)
            self.speed_curve.setData(s["speed"].x, y)
            self.eta_label.setText(self.eta_text)
        else:
            self._draw_heat()

    def _draw_phases(self) -> None:
        shaded = [i for i in self.loss_plot.items if isinstance(i, pg.LinearRegionItem)]
        if len(shaded) == len(self.phase_starts) or not self.phase_starts:
            return
        self._remove_regions()
        for plot in (self.loss_plot, self.acc_plot):
            bounds = self.phase_starts + [float(self.total_epochs)]
            for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
                region = pg.LinearRegionItem((a, b), movable=False, brush=pg.mkBrush(PHASE_SHADES[i % 2]),
                                             pen=pg.mkPen(None))
                region.setZValue(-10)
                plot.addItem(region)

    def _remove_regions(self) -> None:
        for plot in (self.loss_plot, self.acc_plot):
            for item in [i for i in plot.items if isinstance(i, pg.LinearRegionItem)]:
                plot.removeItem(item)

    def _draw_heat(self) -> None:
        if not self.heat_columns:
            self.heat_image.clear()
            # An empty map keeps a plain 0..1 frame: auto-ranging over nothing showed steps from -0.4 to 0.4.
            self.heat_plot.disableAutoRange()
            self.heat_plot.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
            return
        self.heat_plot.enableAutoRange()
        data = np.stack(self.heat_columns)  # steps x stages
        data = np.log10(data + 1e-8)  # gradients span orders of magnitude; frozen stages are exactly 0
        floor = data[data > -8].min() if (data > -8).any() else -8
        data = np.clip(data, floor - 0.5, None)
        self.heat_image.setImage(data, autoLevels=True)
        steps = self.heat_steps
        width = (steps[-1] - steps[0]) / max(1, len(steps) - 1) if len(steps) > 1 else 1
        self.heat_image.setRect(steps[0] - width / 2, 0, width * len(steps), len(self.stage_names))
        axis = self.heat_plot.getAxis("left")
        names = self.stage_names
        # At most one label per 14 pixels of height, always the input's and the head's (the rest on hover).
        room = max(2, int(self.heat_plot.getViewBox().height() // 14))
        every = max(1, -(-len(names) // room))
        shown = sorted({*range(0, len(names), every), len(names) - 1})
        if len(shown) > 1 and shown[-1] - shown[-2] < every:
            shown.pop(-2)  # no two labels on top of each other next to the head's
        axis.setTicks([[(i + 0.5, names[i]) for i in shown]])


def _plain_numbers(plot: pg.PlotItem) -> None:
    """Axes labelled in plain numbers: pyqtgraph's automatic SI prefix turned "epoch" into "epoch (x0.001)" over the
    first steps of a run (epochs 0 to 0.25)."""
    for side in ("bottom", "left"):
        plot.getAxis(side).enableAutoSIPrefix(False)


TITLE_ROW = 30  # pyqtgraph's height of a plot's title row
LEGEND_ROW = 20  # the line under it that holds a legend


def _legend_above(plot: pg.PlotItem, curves) -> pg.LegendItem:
    """A one-line legend between the plot's title and its curves, right-aligned: over no curve, whatever they do, and
    clear of the title however narrow the plot."""
    legend = pg.LegendItem(colCount=len(curves), labelTextSize="8pt", horSpacing=8, frame=False)
    legend.layout.setContentsMargins(0, 0, 0, 0)
    legend.layout.setVerticalSpacing(0)
    legend.setParentItem(plot)
    legend.anchor(itemPos=(1, 1), parentPos=(1, 0), offset=(-4, TITLE_ROW + LEGEND_ROW))
    for curve in curves:
        legend.addItem(curve, curve.name())
    plot.layout.setRowFixedHeight(0, TITLE_ROW + LEGEND_ROW)  # the title row, one line taller
    plot.layout.setAlignment(plot.titleLabel, Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignHCenter)
    return legend


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
