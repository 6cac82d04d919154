"""The live plots: the pictures/s plot stays readable when a phase on stored outputs runs far faster than the rest."""

from __future__ import annotations

import math

from engine import events as ev
from gui.widgets.plots import TrainingPlots


def feed(plots: TrainingPlots, speeds: list[float]) -> None:
    plots.add_event(ev.RunStarted("run", ("a", "b"), 10, 5, "CPU", len(speeds), 1000))
    for epoch, speed in enumerate(speeds, start=1):
        for step in (1, 2):
            plots.add_event(ev.StepEnded(0, epoch, step, 2, 0.5, 0.001, speed))
    plots.redraw()


def test_the_speed_plot_turns_logarithmic_when_speeds_span_a_wide_range(qtbot):
    plots = TrainingPlots()
    qtbot.addWidget(plots)
    feed(plots, [15_000.0, 15_000.0, 200.0, 180.0])  # a head on stored outputs, then passes through the network
    axis = plots.speed_plot.getAxis("left")
    assert axis.logMode
    plots.speed_plot.getViewBox().updateAutoRange()
    low, high = plots.speed_plot.viewRange()[1]
    assert low <= 2.3 and high >= 4.1  # log10 of 180 and 15,000: both phases in view

    plots.reset()
    feed(plots, [40.0, 45.0, 38.0])  # an ordinary run: a plain linear axis
    assert not axis.logMode


def test_only_the_powers_of_ten_are_labelled_on_the_logarithmic_speed_axis(qtbot):
    """Between 180 and 6,000 pictures/s (under two decades) the labelled ticks are 1,000 alone; the 2-9 times ticks
    stay unlabelled (labelled, they overlapped)."""
    plots = TrainingPlots()
    qtbot.addWidget(plots)
    feed(plots, [6_000.0, 5_000.0, 180.0, 200.0])
    axis = plots.speed_plot.getAxis("left")
    assert axis.logMode and axis.style["maxTextLevel"] == 0
    levels = axis.tickValues(math.log10(180), math.log10(6_000), 150)
    assert list(levels[0][1]) == [3.0]  # the labelled level: 10^3
    assert len(levels[1][1]) > 5  # 200, 300, ... 5,000 as plain ticks
