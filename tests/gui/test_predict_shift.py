"""Predict & Export with pictures unlike the training pictures: flagged pictures are marked and can answer
"unknown" (on screen and in the CSV), the drift report of a folder shows its sentence and plot, and *Adapt to these
pictures* writes a new run from the dialog, which the page then lists."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from engine.config import load
from gui.steps.predict import FLAG_COLUMN
from tests.engine.shift_support import copy_pictures, invert, noise_pictures, train_run
from tests.gui.test_predict_page import open_page

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("shift-gui"), seed=2)


@pytest.fixture(scope="module")
def shifted(run, tmp_path_factory) -> Path:
    return copy_pictures(run, tmp_path_factory.mktemp("inverted") / "inverted", invert, times=2)


@pytest.fixture
def page(qtbot, run):
    page = open_page(qtbot, run.parent, (1200, 900))
    yield page
    page.shutdown()


def test_flagged_pictures_are_marked_and_can_answer_unknown(qtbot, page, tmp_path):
    noise = noise_pictures(tmp_path / "noise", n=3)
    page.add_paths([str(noise)])
    qtbot.waitUntil(lambda: page.model.rowCount() == 3 and not page.jobs.running("predict"), timeout=120_000)
    assert not page.table.isColumnHidden(FLAG_COLUMN)
    tip = page.model.headerData(FLAG_COLUMN, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole)
    assert "like the pictures the model was trained on" in tip
    shown = [page.model.index(r, FLAG_COLUMN).data() for r in range(3)]
    assert all("unlike" in text for text in shown)
    assert "3 of 3 unlike the training pictures" in page.status.text()
    assert page.unknown_check.isVisible()
    page.unknown_check.setChecked(True)
    assert [page.model.index(r, 1).data() for r in range(3)] == ["unknown"] * 3
    page.ask_csv_path = lambda: str(tmp_path / "p.csv")
    page.save_csv()
    table = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [(r["prediction"], r["in_domain"]) for r in table] == [("unknown", "false")] * 3
    page.unknown_check.setChecked(False)
    assert "unknown" not in [page.model.index(r, 1).data() for r in range(3)]


def test_drift_report_and_adapt_dialog(qtbot, page, run, shifted):
    page.add_paths([str(shifted)])
    qtbot.waitUntil(lambda: page.model.rowCount() == 90 and not page.jobs.running("predict"), timeout=120_000)
    page.drift()
    qtbot.waitUntil(lambda: page.last_report is not None, timeout=120_000)
    assert "Strong drift" in page.shift_status.text() and page.drift_plot.isVisible()
    dialog = page.open_adapt("unlabelled")
    assert dialog.folder_edit.text() == str(shifted) and "Strong drift" in dialog.measured.text()
    before = set(run.parent.iterdir())
    dialog.go_button.click()
    qtbot.waitUntil(lambda: dialog.result_run is not None or "color" in dialog.result.text(), timeout=180_000)
    new = Path(dialog.result_run)
    assert new in set(run.parent.iterdir()) - before
    assert load(new / "config.toml").adapted_from == str(run)
    assert "Adapted to 90 new pictures" in dialog.result.text() and dialog.use_button.isVisible()
    assert str(new) in [page.run_combo.itemData(i) for i in range(page.run_combo.count())] or any(
        info.path == str(new) for info in page.infos)
    dialog.use_button.click()
    assert page.current_run() == str(new)
