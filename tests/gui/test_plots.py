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


def previous_run(plots: TrainingPlots) -> None:
    """A finished 8-epoch run with a stage heat map, as the plots show it when it ends."""
    plots.add_event(ev.RunStarted("run-1", ("a", "b"), 10, 5, "CPU", 8, 1000))
    for epoch in range(1, 9):
        for step in (1, 2):
            plots.add_event(ev.StepEnded(0, epoch, step, 2, 1.0 / epoch, 0.001, 120.0))
        plots.add_event(ev.EpochEnded(0, "head", epoch, 8, 0.5, 0.6, 0.7, 0.65, 0.001, 1.0, True))
        plots.add_event(ev.LayerActivity(epoch, 2 * epoch, ("stem", "stage 1", "head"), (0.0, 0.01, 0.3)))
    plots.redraw()


def test_a_fresh_run_shows_nothing_of_the_previous_run(qtbot):
    plots = TrainingPlots()
    qtbot.addWidget(plots)
    plots.resize(900, 700)
    plots.show()
    previous_run(plots)
    assert plots.smooth_loss.getData()[0].max() == 8.0

    plots.reset()  # a new run (or another project)
    plots.start()
    plots.add_event(ev.RunStarted("run-2", ("a", "b"), 10, 5, "CPU", 2, 1000))
    plots.add_event(ev.StepEnded(0, 1, 1, 4, 2.0, 0.01, 50.0))
    plots.redraw()
    for curve in (plots.step_loss, plots.smooth_loss, plots.lr_curve, plots.speed_curve):
        x, _ = curve.getData()
        assert list(x) == [0.25], curve.name()  # the new run's first step, nothing else
    for curve in (plots.val_loss, plots.train_acc, plots.val_acc):
        x, _ = curve.getData()
        assert x is None or len(x) == 0
    assert plots.heat_image.image is None
    stage_ticks = plots.heat_plot.getAxis("left")._tickLevels
    assert not stage_ticks  # the previous model's stage names are gone
    for plot in plots.epoch_plots:  # the epoch axes span the new run (2 epochs), not the previous one's 8
        low, high = plot.viewRange()[0]
        assert low <= 0 and 2 <= high < 3


def test_epochs_are_plain_numbers_from_the_first_step(qtbot):
    """Over the first quarter of an epoch pyqtgraph labelled the axis "epoch (x0.001)" with ticks 0-250."""
    plots = TrainingPlots()
    qtbot.addWidget(plots)
    plots.resize(900, 700)
    plots.show()
    plots.start()
    plots.add_event(ev.RunStarted("run", ("a", "b"), 10, 5, "CPU", 3, 1000))
    for step in range(1, 6):
        plots.add_event(ev.StepEnded(0, 1, step, 20, 2.0, 0.0004, 50.0))
    plots.redraw()
    qtbot.waitExposed(plots)
    plots.grab()  # painted as on screen: the views take their ranges, the axes their labels
    for plot in (plots.loss_plot, plots.acc_plot, plots.lr_plot, plots.speed_plot, plots.heat_plot):
        for side in ("bottom", "left"):
            axis = plot.getAxis(side)
            assert axis.autoSIPrefixScale == 1.0, (plot.titleLabel.text, side)
            assert "x0.001" not in axis.labelString() and "x1e" not in axis.labelString()
    lr_axis = plots.lr_plot.getAxis("left")
    assert lr_axis.tickStrings([0.0002, 0.0004], lr_axis.autoSIPrefixScale, 0.0002) == ["0.0002", "0.0004"]
    # Before the first layer-activity event the heat map is empty: no negative training steps on its axis.
    assert plots.heat_plot.getViewBox().viewRange()[0][0] >= 0


def test_the_legends_cover_no_curve(qtbot):
    import pyqtgraph as pg

    plots = TrainingPlots()
    qtbot.addWidget(plots)
    plots.resize(900, 700)
    plots.show()
    previous_run(plots)
    qtbot.waitExposed(plots)
    legends = [item for item in plots.view.scene().items() if isinstance(item, pg.LegendItem)]
    assert len(legends) == 2  # the loss's and the accuracy's
    for legend in legends:
        box = legend.sceneBoundingRect()
        assert box.width() > 0
        for plot in (plots.loss_plot, plots.acc_plot, plots.lr_plot, plots.speed_plot, plots.heat_plot):
            assert not box.intersects(plot.getViewBox().sceneBoundingRect()), plot.titleLabel.text
            title = plot.titleLabel
            text = title.mapRectToScene(title.item.mapRectToParent(title.item.boundingRect()))
            assert not box.intersects(text), plot.titleLabel.text  # nor a title


def test_the_time_left_leaves_out_a_pause(qtbot):
    plots = TrainingPlots()
    qtbot.addWidget(plots)
    now = [0.0]
    plots.clock = lambda: now[0]
    plots.add_event(ev.RunStarted("run", ("a", "b"), 10, 5, "CPU", 1, 1000))
    for step in (1, 2, 3):
        plots.add_event(ev.StepEnded(0, 1, step, 100, 1.0, 0.001, 8.0))
        now[0] += 2.0  # a step takes 2 s
    plots.pause()
    plots.redraw()
    assert plots.eta_label.text() == "8 pictures/s  -  paused"
    now[0] += 600.0  # ten minutes paused
    plots.resume()
    for step in (4, 5):
        plots.add_event(ev.StepEnded(0, 1, step, 100, 1.0, 0.001, 8.0))
        now[0] += 2.0
    plots.redraw()
    assert plots.eta_label.text() == "8 pictures/s  -  about 3 min 10 s left"  # 95 steps of 2 s


def test_the_run_comparison_legend_covers_no_curve(qtbot, tmp_path):
    import json

    from gui.steps.train.history import RunHistory

    for i, strategy in enumerate(("fine-tune-shallow", "head-only", "fine-tune-all")):
        run = tmp_path / f"2026010{i}-120000-resnet18-{strategy}"
        run.mkdir()
        (run / "config.toml").write_text("")
        (run / "summary.json").write_text(json.dumps({"status": "completed", "best_val_acc": 0.9, "strategy": strategy,
                                                      "epochs_completed": 8, "model": "resnet18"}))
        (run / "metrics.jsonl").write_text("".join(
            json.dumps({"epoch": e, "val_acc": 0.3 + 0.08 * e, "val_loss": 1.5 / e, "train_loss": 1.0, "lr": 0.001})
            + "\n" for e in range(1, 9)))
    history = RunHistory()
    qtbot.addWidget(history)
    history.resize(800, 520)
    history.show()
    history.set_folder(tmp_path)
    history.select([0, 1, 2])
    qtbot.waitExposed(history)
    history.grab()
    box = history.legend.sceneBoundingRect()
    assert box.width() > 0 and len(history.legend.items) == 3
    for plot in (history.acc_plot, history.loss_plot):
        assert not box.intersects(plot.getViewBox().sceneBoundingRect())
