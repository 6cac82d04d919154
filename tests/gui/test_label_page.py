"""The Label step as a user walks it, with a real (tiny) trained run: choose the pool, the suggestions appear with the
model's guess pre-selected, real key presses label, skip, say "none of these" and go back (each answer saved in the
labels CSV at once), the grid and the map's lasso label many at once, and Retrain trains a new run with the labelled
pictures and adds a point to the chart."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QPolygonF

from conftest import make_class_folders
from engine.active import NONE_OF_THESE, read_labels, read_rounds
from engine.config import load
from engine.project.project import Project
from gui.project import ProjectModel
from gui.steps.label import LabelPage

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def page(qtbot, tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFER_STUDIO_FEATURES", str(tmp_path / "features"))
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / tiny_run.name)
    config = dataclasses.replace(load(tiny_run / "config.toml"), out=str(runs), name="")
    model = ProjectModel(tmp_path / "app")
    model.load(Project("colours", config, str(tmp_path / "colours.tsproj")))
    page = LabelPage(model)
    qtbot.addWidget(page)
    page.resize(1100, 760)
    page.show()
    yield page
    page.shutdown()


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    return make_class_folders(tmp_path_factory.mktemp("label-pool") / "unsorted", per_class=4, seed=5)


def suggested(qtbot, page, pool):
    page.count.setValue(6)
    page.set_pool(str(pool))
    qtbot.waitUntil(lambda: page.found is not None and len(page.queue) == 6, timeout=60_000)
    qtbot.waitUntil(lambda: page.view.image.image is not None, timeout=30_000)


def test_keys_label_skip_and_say_none_of_these(qtbot, page, pool, tmp_path):
    suggested(qtbot, page, pool)
    assert page.project.project.pool == str(pool)  # the project holds its pool (kept by the next save)
    classes = json.loads((Path(page.run_chooser.current_run()) / "labels.json").read_text())
    first = page.queue[0]
    assert page.view.path == first.path
    assert "0 of 12 pool pictures labelled; 6 suggested." in page.status.text()  # where the labelling stands
    checked = [b.text() for b in page.view.class_buttons if b.isChecked()]
    assert checked == [f"{classes.index(first.predicted) + 1}  {first.predicted}"]  # the guess, pre-selected

    page.view.setFocus()
    qtbot.keyClick(page.view, Qt.Key.Key_2)  # the second class
    labels_file = tmp_path / "colours-labels.csv"
    assert read_labels(labels_file).label_of(first.path) == classes[1]
    assert page.view.path == page.queue[1].path  # on to the next
    qtbot.keyClick(page.view, Qt.Key.Key_Space)  # skip: no answer
    assert read_labels(labels_file).label_of(page.queue[1].path) is None
    assert page.view.path == page.queue[2].path
    qtbot.keyClick(page.view, Qt.Key.Key_0)  # none of these
    assert read_labels(labels_file).label_of(page.queue[2].path) == NONE_OF_THESE
    guess = page.queue[3].predicted
    qtbot.keyClick(page.view, Qt.Key.Key_Return)  # the guess accepted
    assert read_labels(labels_file).label_of(page.queue[3].path) == guess
    qtbot.keyClick(page.view, Qt.Key.Key_Backspace)
    assert page.view.path == page.queue[3].path
    assert "Your answer so far" in page.view.caption.text()
    qtbot.keyClick(page.view, Qt.Key.Key_1)  # a changed answer replaces the first
    assert read_labels(labels_file).label_of(page.queue[3].path) == classes[0]
    assert page.queue_list.item(0).text().endswith(f"\u2714 {classes[1]}")
    assert "3 answers" in page.counts.text()  # four key presses, one answer changed
    assert "3 of 12 pool pictures labelled; 6 suggested." in page.status.text()
    assert page.retrain_button.isEnabled()


def test_grid_and_lasso_label_many_at_once(qtbot, page, pool, tmp_path):
    suggested(qtbot, page, pool)
    page.tabs.setCurrentIndex(1)
    assert page.grid.count() == len(page.found.outputs.paths) == 12
    page.grid.item(0).setSelected(True)
    page.grid.item(1).setSelected(True)
    page.grid_class.setCurrentIndex(page.grid_class.findData("green"))
    qtbot.mouseClick(page.grid_apply, Qt.MouseButton.LeftButton)
    labels = read_labels(tmp_path / "colours-labels.csv")
    assert sorted(labels.labelled()) == sorted(page.grid.item(i).data(Qt.ItemDataRole.UserRole) for i in (0, 1))
    assert set(labels.labelled().values()) == {"green"}

    page.tabs.setCurrentIndex(2)
    coords = page.map.coords
    assert coords.shape == (12, 2)
    # A lasso around the right half of the map selects exactly the pictures lying there.
    mid = float(coords[:, 0].mean())
    polygon = QPolygonF([QPointF(mid, -1e3), QPointF(1e3, -1e3), QPointF(1e3, 1e3), QPointF(mid, 1e3)])
    page.map.box.lasso(polygon)
    inside = [i for i, (x, _) in enumerate(coords) if x > mid]
    assert page.map.selected == inside and inside
    assert page.map_apply.isEnabled()
    page.map_class.setCurrentIndex(page.map_class.findData(NONE_OF_THESE))
    qtbot.mouseClick(page.map_apply, Qt.MouseButton.LeftButton)
    labels = read_labels(tmp_path / "colours-labels.csv")
    assert {page.found.outputs.paths[i] for i in inside} <= set(labels.none_of_these())


def test_retrain_trains_with_the_labels_and_charts_the_round(qtbot, page, pool, tmp_path):
    suggested(qtbot, page, pool)
    blue = [p for p in page.pool.paths if "/blue/" in p]
    page.answer_many(blue, "blue")
    start = page.run_chooser.current_run()
    with qtbot.waitSignal(page.retrained, timeout=300_000) as signal:
        qtbot.mouseClick(page.retrain_button, Qt.MouseButton.LeftButton)
    result = signal.args[0]
    assert result.status == "completed"
    trained = json.loads((Path(result.run_dir) / "dataset.json").read_text())
    joined = {s["path"]: trained["classes"][s["label"]] for s in trained["samples"] if s["split"] == "train"}
    assert all(joined[p] == "blue" for p in blue)
    rounds = read_rounds(read_labels(tmp_path / "colours-labels.csv"))
    assert [r.run_dir for r in rounds] == [start, result.run_dir]
    assert rounds[1].labelled == rounds[0].labelled + len(blue)
    xs, _ = page.chart.curve.getData()
    assert list(xs) == [rounds[0].labelled, rounds[1].labelled]
    assert page.run_chooser.current_run() == result.run_dir  # the new model suggests next
    qtbot.waitUntil(lambda: page.found is not None and not page.jobs.running("suggest"), timeout=60_000)
    assert not set(blue) & {s.path for s in page.queue}  # labelled pictures are not suggested again
    # The window says what the retrain did (this run fine-tunes: the whole run trained again) and where labelling is.
    assert "the whole run" in page.status.text() and f"{len(blue)} of 12 pool pictures labelled" in page.status.text()


def test_a_feature_extraction_retrain_says_it_refitted_the_head(qtbot, page, pool, tmp_path, monkeypatch):
    """Feature extraction: Retrain refits the head on the stored outputs, and the window says so with its time."""
    from engine.train.trainer import fit

    monkeypatch.setenv("TRANSFER_STUDIO_CACHE", str(tmp_path / "cache"))
    config = dataclasses.replace(page.project.config, strategy="feature-extraction", phases=(), epochs=1)
    page.project.load(Project("colours", config, str(tmp_path / "colours.tsproj")))
    first = fit(config)
    assert first.status == "completed", first.error
    page.refresh_runs(first.run_dir)
    suggested(qtbot, page, pool)
    page.answer_many([p for p in page.pool.paths if "/red/" in p], "red")
    with qtbot.waitSignal(page.retrained, timeout=300_000):
        qtbot.mouseClick(page.retrain_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.found is not None and not page.jobs.running("suggest"), timeout=60_000)
    assert "head refitted on stored outputs in" in page.status.text()  # said with the suggestions that follow


def test_the_rounds_chart_shows_a_point_at_100_percent_whole(qtbot):
    """A round at 100 % validation accuracy is drawn whole, not cut in half by the chart's top edge."""
    from gui.steps.label.charts import RoundsChart

    chart = RoundsChart()
    qtbot.addWidget(chart)
    chart.resize(420, 180)
    chart.show()
    chart.set_rounds([24, 34, 44], [0.92, 0.97, 1.0])
    qtbot.waitExposed(chart)
    box = chart.getPlotItem().getViewBox()
    top = box.mapViewToScene(QPointF(44, 1.0)).y() - box.sceneBoundingRect().top()
    bottom = box.sceneBoundingRect().bottom() - box.mapViewToScene(QPointF(24, 0.92)).y()
    radius = 7 / 2
    assert top > radius and bottom > radius  # pixels between each dot's centre and the edge


def test_saving_the_project_elsewhere_takes_the_labels_along(qtbot, page, pool, tmp_path):
    picture = str(sorted(pool.rglob("*.png"))[0])
    page.answer_many([picture], "red")
    assert Path(page.labels.path) == tmp_path / "colours-labels.csv"
    (tmp_path / "elsewhere").mkdir()
    page.project.save(tmp_path / "elsewhere" / "copy.tsproj")
    assert Path(page.labels.path) == tmp_path / "elsewhere" / "copy-labels.csv"  # the page follows its labels
    assert read_labels(page.labels.path).label_of(picture) == "red"
    page.answer_many([picture], "green")  # answers now go to the new project's file ...
    assert read_labels(tmp_path / "elsewhere" / "copy-labels.csv").label_of(picture) == "green"
    assert read_labels(tmp_path / "colours-labels.csv").label_of(picture) == "red"  # ... the old one keeps its own


def test_a_folder_name_with_a_quote_is_shown_as_written(qtbot, page, tmp_path):
    from PySide6.QtGui import QTextDocument

    folder = make_class_folders(tmp_path / "Tom's pictures", per_class=1, seed=3)
    page.set_pool(str(folder))
    qtbot.waitUntil(lambda: page.pool is not None, timeout=60_000)
    shown = QTextDocument()
    shown.setHtml(page.pool_label.text())
    assert page.pool_label.textFormat() == Qt.TextFormat.RichText  # escaped text, shown as HTML
    assert shown.toPlainText().startswith(str(folder.resolve())) and "&#x27;" not in shown.toPlainText()
    assert page.counts.textFormat() == Qt.TextFormat.RichText  # where the answers are kept: a path too
