"""The Data step's class chart on a multi-task dataset (issue #17): one bar per task and class, and a legend that
counts each picture once per split (not once per task)."""

from __future__ import annotations

import re

from engine.train import multitask as mt
from gui.steps.data.class_chart import ClassCountChart
from gui.widgets.task_counts import chart_counts
from tests.engine.test_multitask import make_task_csv


def test_the_legend_counts_each_picture_once_on_a_multi_task_dataset(qtbot, tmp_path):
    index = mt.scan_tasks(make_task_csv(tmp_path / "pictures", per=4, missing_every=4), val_fraction=0.3)
    chart = ClassCountChart()
    qtbot.addWidget(chart)
    chart.set_counts(*chart_counts(index))
    legend = re.sub(r"<[^>]+>", "", chart.legend.text())
    shown = {m.group(1): int(m.group(2).replace(",", "")) for m in re.finditer(r"(training|validation) \(([\d,]+)\)",
                                                                                legend)}
    assert shown == {"training": len(index.split("train")), "validation": len(index.split("val"))}
    # The bars still show each task's classes (a picture in one bar per task, and under "no label" where it has none).
    assert sum(chart.totals().values()) == 2 * len(index.samples)
    assert "shape: (no label)" in chart.classes


def test_a_single_task_dataset_keeps_the_bars_sums(qtbot, tmp_path):
    index = mt.scan_tasks(make_task_csv(tmp_path / "pictures", per=3), tasks=("colour",), val_fraction=0.3)
    chart = ClassCountChart()
    qtbot.addWidget(chart)
    chart.set_counts(*chart_counts(index))
    assert f"training ({len(index.split('train'))})" in re.sub(r"<[^>]+>", "", chart.legend.text())
