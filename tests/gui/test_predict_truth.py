"""The Predict & Export step shows the right picture and the right counts: choosing a picture that cannot be read
clears the previous picture and heat map and shows the whole reason; the summary counts predicted and unreadable
pictures apart; a folder sorted into class folders gives each picture its true class, right or wrong, and the
accuracy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from engine.results.predict import load_run_model, predict_paths, summary_line
from gui.steps.predict import RIGHT_MARK, TRUTH_COLUMN, WRONG_MARK
from tests.gui.test_predict_page import open_page

LEFT = Qt.MouseButton.LeftButton
TIP = Qt.ItemDataRole.ToolTipRole

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def page(qtbot, tiny_run):
    page = open_page(qtbot, tiny_run.parent)
    yield page
    page.shutdown()


@pytest.fixture(scope="module")
def sorted_folder(tiny_run_data, tmp_path_factory) -> Path:
    """new/ with the run's three class folders (three pictures each, and one same picture in all three, so at least
    two are wrong) and a picture outside them."""
    new = tmp_path_factory.mktemp("gui-truth") / "new"
    same = next((tiny_run_data / "green").glob("*.png"))
    for name in ("blue", "green", "red"):
        (new / name).mkdir(parents=True)
        for picture in sorted((tiny_run_data / name).glob("*.png"))[:3]:
            shutil.copy(picture, new / name / picture.name)
        shutil.copy(same, new / name / "same.png")
    shutil.copy(next((tiny_run_data / "red").glob("*.png")), new / "loose.png")
    return new


def add(qtbot, page, paths):
    page.ask_files = lambda: [str(p) for p in paths]
    with qtbot.waitSignal(page.predicted, timeout=60_000):
        qtbot.mouseClick(page.add_files_button, LEFT)


def idle(qtbot, page):
    qtbot.waitUntil(lambda: not page.jobs.running("picture") and not page.jobs.running("heatmap"), timeout=60_000)


def test_an_unreadable_picture_clears_the_previous_picture_and_heat_map(qtbot, page, tiny_run_data, tmp_path):
    good = sorted((tiny_run_data / "blue").glob("*.png"))[:3]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    add(qtbot, page, [*good, broken])
    assert "4 pictures: 3 predicted, 1 could not be read" in page.status.text()
    panel = page.panel
    # The first picture with its heat map ...
    qtbot.waitUntil(lambda: panel.base is not None, timeout=30_000)
    with qtbot.waitSignal(panel.heatMapShown, timeout=60_000, check_params_cb=lambda shown: shown):
        panel.heat.click()
    assert panel.view.image is not None
    # ... then the file that cannot be read: no picture, no heat map, the whole reason.
    reason = page.model.rows[3].error
    assert reason and "not a picture" in reason
    page.table.selectRow(3)
    idle(qtbot, page)
    assert panel.view.image is None and not panel.showing_overlay
    assert not panel.heat.isEnabled()
    assert reason in panel.view.placeholder and "broken.jpg could not be read" in panel.view.placeholder
    assert reason in panel.info.text() and panel.info.wordWrap()
    assert reason in panel.info.toolTip() and reason in panel.view.toolTip()
    assert reason in page.model.index(3, 3).data(TIP) and page.table.wordWrap()
    # Back to a picture: it shows (with its heat map, still switched on), and no longer the reason.
    with qtbot.waitSignal(panel.heatMapShown, timeout=60_000, check_params_cb=lambda shown: shown):
        page.table.selectRow(1)
    assert panel.path == str(good[1]) and panel.view.image is not None
    assert reason not in panel.view.toolTip() and reason not in panel.info.text()


def test_one_picture_is_one_picture(qtbot, page, tiny_run_data):
    add(qtbot, page, sorted((tiny_run_data / "red").glob("*.png"))[:1])
    assert "1 picture predicted" in page.status.text()
    assert page.table.isColumnHidden(TRUTH_COLUMN)  # no folder sorted by class: no true-class column


def test_a_folder_sorted_by_class_shows_true_classes_and_the_accuracy(qtbot, page, tiny_run, sorted_folder):
    expected = predict_paths(load_run_model(tiny_run, device="cpu"), [sorted_folder])
    page.ask_folder = lambda title: str(sorted_folder)
    with qtbot.waitSignal(page.predicted, timeout=60_000):
        qtbot.mouseClick(page.add_folder_button, LEFT)
    rows = page.predictions()
    assert [p.path for p in rows] == [p.path for p in expected]
    assert not page.table.isColumnHidden(TRUTH_COLUMN)
    assert summary_line(expected) in page.status.text()
    assert "on 12 pictures whose folder names their class" in page.status.text()
    wrong_rows = []
    for row, p in enumerate(expected):
        shown = page.model.index(row, TRUTH_COLUMN).data()
        if p.true_class is None:  # loose.png
            assert Path(p.path).name == "loose.png" and not shown
            continue
        assert p.true_class == Path(p.path).parent.name
        mark = RIGHT_MARK if p.class_name == p.true_class else WRONG_MARK
        assert shown == f"{mark} {p.true_class}"
        tip = page.model.index(row, TRUTH_COLUMN).data(TIP)
        assert ("right" in tip) == (p.class_name == p.true_class)
        if p.class_name != p.true_class:
            wrong_rows.append(row)
    # A wrong picture says so beside it, and its heat map can explain the true class.
    assert len(wrong_rows) >= 2
    row = wrong_rows[0]
    page.table.selectRow(row)
    p = expected[row]
    assert "wrong" in page.panel.info.text() and p.true_class in page.panel.info.text()
    choices = [page.panel.target.itemText(i) for i in range(page.panel.target.count())]
    assert f"the true class ({p.true_class})" in choices
    idle(qtbot, page)
    qtbot.mouseClick(page.clear_button, LEFT)
    assert page.table.isColumnHidden(TRUTH_COLUMN) and page.status.text() == ""
