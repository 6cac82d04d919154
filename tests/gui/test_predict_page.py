"""The Predict & Export step with a real (tiny) trained run: added and dropped pictures get the engine's predictions,
an unreadable picture gets a sentence, the CSV holds the table, the heat map shows for the chosen picture, an export
writes its files and shows how closely it matches, and a model whose weights are gone fails with a sentence."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from engine.results.export import CARD
from engine.results.predict import load_run_model, predict_paths
from gui.steps.predict import PredictPage

LEFT = Qt.MouseButton.LeftButton


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tiny_run_data):
    return tiny_run_data


@pytest.fixture(scope="module")
def run_dir(tiny_run) -> Path:
    """A copy of the session's tiny trained run (see conftest)."""
    return tiny_run


@pytest.fixture(scope="module")
def pictures(data):
    return sorted(str(p) for p in data.rglob("*.png"))[::4]  # 6 pictures, from every class


@pytest.fixture(scope="module")
def expected(run_dir, pictures):
    """The engine's own predictions, by path."""
    bundle = load_run_model(run_dir, device="cpu")
    return {p.path: p for p in predict_paths(bundle, pictures)}


def open_page(qtbot, runs_folder, size: tuple[int, int] = (1100, 760)) -> PredictPage:
    """A Predict & Export page on the runs of ``runs_folder``, shown (shut it down when done)."""
    page = PredictPage()
    qtbot.addWidget(page)
    page.resize(*size)
    page.set_runs_folder(runs_folder)
    page.show()
    return page


@pytest.fixture
def page(qtbot, run_dir):
    page = open_page(qtbot, run_dir.parent)
    yield page
    page.shutdown()


def no_traceback(text: str) -> bool:
    return "Traceback" not in text and 'File "' not in text


def text(page, row, col):
    return page.model.index(row, col).data()


def add(qtbot, page, paths):
    page.ask_files = lambda: list(paths)
    with qtbot.waitSignal(page.predicted, timeout=60_000):
        qtbot.mouseClick(page.add_files_button, LEFT)


def test_added_pictures_get_the_engine_predictions_and_a_heat_map(qtbot, page, run_dir, pictures, expected):
    assert page.current_run() == str(run_dir)
    assert page.pictures.currentWidget() is page.drop_hint and "Drop pictures" in page.drop_hint.text()
    assert not page.csv_button.isEnabled()
    add(qtbot, page, pictures)
    assert page.pictures.currentWidget() is page.table
    assert page.model.rowCount() == len(pictures)
    for row, path in enumerate(pictures):
        want = expected[path]
        got = page.model.rows[row]
        assert got.path == path and got.class_name == want.class_name
        assert got.confidence == pytest.approx(want.confidence, abs=1e-5)
        assert [c for c, _ in got.top] == [c for c, _ in want.top]
        assert text(page, row, 0) == Path(path).name
        assert text(page, row, 1) == want.class_name
        assert text(page, row, 2) == f"{100 * want.confidence:.1f} %"
        assert want.top[1][0] in text(page, row, 3)
    assert "6 pictures predicted" in page.status.text()
    # The first picture is chosen; its heat map is laid over it on request.
    panel = page.panel
    assert panel.path == pictures[0]
    qtbot.waitUntil(lambda: panel.base is not None, timeout=30_000)
    with qtbot.waitSignal(panel.heatMapShown, timeout=60_000, check_params_cb=lambda shown: shown):
        panel.heat.click()
    assert panel.showing_overlay and panel.view.image != panel.base
    assert expected[pictures[0]].class_name in panel.status.text()


def test_a_dropped_folder_and_a_corrupt_picture(qtbot, page, data, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(data / "red")), QUrl.fromLocalFile(str(broken))])
    event = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime, LEFT, Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(page.predicted, timeout=60_000):
        page.dropEvent(event)
    assert event.isAccepted()
    rows = page.predictions()
    reds = sorted(str(p) for p in (data / "red").glob("*.png"))
    assert [p.path for p in rows] == reds + [str(broken)]
    assert all(p.error is None for p in rows[:-1])
    last = len(rows) - 1
    assert text(page, last, 1) == "Cannot be read"
    assert text(page, last, 3) == rows[-1].error and "not a picture" in rows[-1].error
    assert no_traceback(text(page, last, 3))
    assert "1 could not be read" in page.status.text()
    page.table.selectRow(last)
    assert rows[-1].error in page.panel.info.text()
    # Something that is not a picture or a folder is refused.
    other = QMimeData()
    other.setText("hello")
    refused = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, other, LEFT, Qt.KeyboardModifier.NoModifier)
    page.dropEvent(refused)
    assert not refused.isAccepted()


def test_save_as_csv_writes_the_table(qtbot, page, pictures, expected, tmp_path):
    add(qtbot, page, pictures)
    target = tmp_path / "predictions"
    page.ask_csv_path = lambda: str(target)
    qtbot.mouseClick(page.csv_button, LEFT)
    written = tmp_path / "predictions.csv"  # the extension is added
    assert written.is_file()
    with written.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == pictures
    for r in rows:
        want = expected[r["path"]]
        assert r["prediction"] == want.class_name
        assert float(r["confidence"]) == pytest.approx(want.confidence, abs=1e-5)
        assert r["top2"] == want.top[1][0] and r["error"] == ""
    assert "Saved 6 rows" in page.status.text()
    # A folder that does not exist: a sentence.
    page.ask_csv_path = lambda: str(tmp_path / "missing" / "p.csv")
    qtbot.mouseClick(page.csv_button, LEFT)
    assert "does not exist" in page.status.text() and no_traceback(page.status.text())


def test_export_bundle_writes_its_files_and_shows_the_difference(qtbot, page, tmp_path):
    out = tmp_path / "export"
    page.out_edit.setText(str(out))
    page.format_combo.setCurrentIndex(page.format_combo.findData("bundle"))
    with qtbot.waitSignal(page.exported, timeout=120_000) as done:
        qtbot.mouseClick(page.export_button, LEFT)
    result = done.args[0]
    for name in ("model.safetensors", "model.json", CARD):
        assert (out / name).is_file(), name
    assert result.out_dir == str(out)
    shown = page.export_result.text()
    check = json.loads((out / "model.json").read_text())["checks"]["bundle"]
    assert f"{check['max_abs_diff_probs']:.2g} in probability" in shown
    assert f"{result.pictures} validation pictures" in shown
    assert str(out / CARD) in shown and "model.safetensors" in shown
    assert page.export_button.isEnabled() and not page.export_cancel.isVisible()


def test_a_model_whose_weights_are_gone_fails_with_sentences(qtbot, page, run_dir, pictures, tmp_path):
    runs = tmp_path / "runs"
    broken = runs / run_dir.name
    shutil.copytree(run_dir, broken)
    (broken / "best.safetensors").unlink()
    page.set_runs_folder(runs)
    assert page.current_run() == str(broken)
    page.add_paths(pictures[:2])
    qtbot.waitUntil(lambda: not page.jobs.running("predict"), timeout=30_000)
    status = page.status.text()
    assert "has no saved weights" in status and no_traceback(status)
    assert page.model.rowCount() == 0
    page.export()
    qtbot.waitUntil(lambda: not page.jobs.running("export"), timeout=30_000)
    shown = page.export_result.text()
    assert "has no saved weights" in shown and no_traceback(shown)
    assert not (broken / "export" / "model.safetensors").exists()
