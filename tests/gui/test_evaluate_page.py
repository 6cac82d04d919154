"""The Evaluate step with a real (tiny) trained run: the figures are the engine's, a confusion-matrix cell shows
exactly its pictures, mistakes come most confident first, the heat map is laid over the chosen picture, failures are
sentences, and the step follows the project's runs inside the main window."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from engine.results.evaluate import EVALUATION, evaluate_run, load_evaluation
from gui.steps.evaluate import EvaluatePage
from gui.widgets.pictures import percent
from gui.sidebar import StepState

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
def evaluation(run_dir):
    """The engine's own evaluation of the run (written to its evaluation.json)."""
    return evaluate_run(run_dir, device="cpu")


@pytest.fixture
def page(qtbot):
    page = EvaluatePage()
    qtbot.addWidget(page)
    page.resize(1100, 760)
    page.show()
    yield page
    page.shutdown()


def no_traceback(text: str) -> bool:
    return "Traceback" not in text and 'File "' not in text


def click_cell(qtbot, page, true, predicted):
    rect = page.matrix.cell_rect(true, predicted)
    qtbot.mouseClick(page.matrix.table.viewport(), LEFT, pos=rect.center())


def test_evaluate_shows_exactly_the_engine_figures(qtbot, page, run_dir, tmp_path):
    runs = tmp_path / "runs"
    copy = runs / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns(EVALUATION))
    page.set_runs_folder(runs)
    assert page.current_run() == str(copy)
    assert page.evaluation is None and "Not evaluated yet" in page.empty.text()

    with qtbot.waitSignal(page.evaluated, timeout=60_000) as shown:
        qtbot.mouseClick(page.evaluate_button, LEFT)
    evaluation = shown.args[0]
    engine = load_evaluation(copy)  # what the engine wrote
    assert engine is not None and list(engine.splits) == ["val", "test"] == list(evaluation.splits)
    assert [page.split_combo.itemData(i) for i in range(page.split_combo.count())] == ["val", "test"]
    assert page.split_combo.isEnabled()

    for name in ("val", "test"):
        page.select_split(name)
        split = engine.splits[name]
        assert page.split.name == name
        table = page.class_table
        assert table.rowCount() == len(split.per_class) + 1  # and the average
        for row, c in enumerate(split.per_class):
            assert table.item(row, 0).text() == c.name
            values = [table.item(row, col).data(Qt.ItemDataRole.UserRole) for col in (1, 2, 3, 4)]
            assert values == [c.precision, c.recall, c.f1, c.support]
            assert table.item(row, 1).text() == percent(c.precision)
        last = table.rowCount() - 1
        assert [table.item(last, col).data(Qt.ItemDataRole.UserRole) for col in (1, 2, 3, 4)] == [
            split.macro_precision, split.macro_recall, split.macro_f1, split.count]
        matrix = page.matrix.model
        assert matrix.counts.tolist() == split.confusion
        assert [matrix.headerData(i, Qt.Orientation.Horizontal) for i in range(3)] == list(split.classes)
        assert percent(split.accuracy) in page.summary.text()
        assert f"{split.correct} of the {split.count}" in page.summary.text()
        assert f"{split.ece:.3f}" in page.calibration.words.text()


def test_an_existing_evaluation_shows_at_once_and_a_cell_shows_exactly_its_pictures(qtbot, page, run_dir,
                                                                                      evaluation):
    page.set_runs_folder(run_dir.parent)
    assert page.evaluation is not None  # read from evaluation.json, no evaluation run
    assert page.jobs.idle()
    split = page.split
    cells = [(t, p) for t in range(3) for p in range(3) if split.confusion[t][p]]
    wrong = [(t, p) for t, p in cells if t != p]
    for true, predicted in (wrong[:1] + [c for c in cells if c[0] == c[1]][:1]) or cells[:1]:
        click_cell(qtbot, page, true, predicted)
        expected = split.cell(true, predicted)
        assert page.tabs.currentIndex() == 0
        assert page.shown_samples() == expected
        assert [item.path for item in page.cell_model.items] == [split.samples[i].path for i in expected]
        for item, i in zip(page.cell_model.items, expected):
            s = split.samples[i]
            assert split.classes[s.predicted] in item.text and percent(s.confidence, 0) in item.text
            assert f"True class: {split.classes[s.label]}" in item.tooltip
        assert str(len(expected)) in page.cell_title.text()
        # The first picture of the cell is chosen and shown large.
        qtbot.waitUntil(lambda: page.panel.base is not None, timeout=30_000)
        assert page.panel.path == split.samples[expected[0]].path
    # An empty cell says so.
    empty = [(t, p) for t in range(3) for p in range(3) if not split.confusion[t][p]]
    if empty:
        click_cell(qtbot, page, *empty[0])
        assert page.shown_samples() == [] and "No picture" in page.cell_title.text()


def test_mistakes_come_most_confident_first_with_their_top_three(page, run_dir, evaluation):
    page.set_runs_folder(run_dir.parent)
    split = page.split
    keys = [item.key for item in page.mistakes_model.items]
    assert keys == split.mistakes and keys, "the tiny run is expected to make mistakes"
    confidences = [split.samples[i].confidence for i in keys]
    assert confidences == sorted(confidences, reverse=True)
    for item, i in zip(page.mistakes_model.items, keys):
        s = split.samples[i]
        assert not s.correct
        for c, p in s.top:  # all three most likely classes, with their probabilities
            assert f"{split.classes[c]} {percent(p, 0)}" in item.text
    assert page.tabs.tabText(1) == f"Mistakes ({len(keys)})"


def test_the_heat_map_switch_lays_the_map_over_the_picture(qtbot, page, run_dir, evaluation):
    page.set_runs_folder(run_dir.parent)
    page.tabs.setCurrentIndex(1)
    page.mistakes_gallery.select_row(0)
    panel = page.panel
    qtbot.waitUntil(lambda: panel.base is not None, timeout=30_000)
    assert not panel.showing_overlay and panel.view.image is panel.base
    with qtbot.waitSignal(panel.heatMapShown, timeout=60_000, check_params_cb=lambda shown: shown):
        panel.heat.click()
    assert panel.showing_overlay
    shown, base = panel.view.image, panel.base
    assert shown.size() == base.size() and shown != base  # the picture with the map over it
    assert "Bright areas" in panel.status.text()
    # The map can explain the true class instead of the model's answer (a mistake: they differ).
    sample = page.split.samples[page.split.mistakes[0]]
    assert panel.target.itemData(1) == sample.label
    with qtbot.waitSignal(panel.heatMapShown, timeout=60_000, check_params_cb=lambda shown: shown):
        panel.target.setCurrentIndex(1)
    assert f"think '{page.split.classes[sample.label]}'" in panel.status.text().replace("&#x27;", "'")
    assert (page.current_run(), sample.path, sample.label) in panel.overlays
    # Off again: the plain picture, at once.
    panel.heat.setChecked(False)
    assert not panel.showing_overlay and panel.view.image is panel.base


def test_a_run_whose_weights_are_gone_says_so_in_a_sentence(qtbot, page, run_dir, tmp_path):
    runs = tmp_path / "runs"
    broken = runs / run_dir.name
    shutil.copytree(run_dir, broken, ignore=shutil.ignore_patterns(EVALUATION))
    (broken / "best.safetensors").unlink()
    page.set_runs_folder(runs)
    assert page.current_run() == str(broken)
    assert "no saved model" in page.empty.text()
    page.evaluate()
    qtbot.waitUntil(lambda: not page.jobs.running("evaluate"), timeout=30_000)
    text = page.status.text()
    assert "has no saved weights" in text and "train it again" in text
    assert no_traceback(text)
    assert page.evaluation is None and page.evaluate_button.isEnabled()
    assert not (broken / EVALUATION).exists()


def test_cancelling_an_evaluation_says_so_and_keeps_what_was_shown(qtbot, page, run_dir, evaluation):
    page.set_runs_folder(run_dir.parent)
    before = page.evaluation
    page.evaluate()
    assert page.cancel_button.isVisible() and not page.evaluate_button.isEnabled()
    qtbot.mouseClick(page.cancel_button, LEFT)
    assert "stopped" in page.status.text()
    assert page.evaluation is before and page.evaluate_button.isEnabled()
    qtbot.waitUntil(page.jobs.idle, timeout=30_000)
    assert page.evaluation is before  # a late result of the cancelled evaluation is dropped


def test_the_steps_follow_the_project_and_its_runs(qtbot, tmp_path, run_dir, data, evaluation):
    from gui.main_window import MainWindow
    from gui.settings import file_settings

    window = MainWindow(settings=file_settings(tmp_path / "settings.ini"), data_dir=tmp_path / "app")
    window.show_error = lambda *args, **kwargs: None
    window.ask_unsaved = lambda: "discard"  # closing at the end of the test: no question
    qtbot.addWidget(window)
    results = window.results
    try:
        steps = window.steps
        assert steps.page("evaluate") is results.evaluate and steps.page("export") is results.predict
        for key in ("evaluate", "export"):
            assert steps.state(key)[0] is StepState.BLOCKED
        window.open_folder(data)
        qtbot.waitUntil(lambda: window.project.dataset is not None, timeout=30_000)
        state, reason = steps.state("evaluate")
        assert state is StepState.BLOCKED and "train" in reason.lower()
        # The project's runs folder holds the trained (and evaluated) run.
        window.project.set_config(dataclasses.replace(window.project.config, out=str(run_dir.parent)))
        assert results.evaluate.current_run() == str(run_dir)
        assert results.predict.current_run() == str(run_dir)
        assert steps.state("evaluate")[0] is StepState.DONE  # it has an evaluation.json
        assert steps.state("export")[0] is StepState.READY
        # A run that ends in the Train step is listed and chosen.
        newer = run_dir.parent / (run_dir.name + "-newer")
        shutil.copytree(run_dir, newer, ignore=shutil.ignore_patterns(EVALUATION))
        finished = type("Result", (), {"status": "completed", "run_dir": str(newer)})()
        window.training.train.runFinished.emit(finished)
        assert results.evaluate.current_run() == str(newer)
        assert results.predict.current_run() == str(newer)
        assert steps.state("evaluate")[0] is StepState.READY  # not evaluated yet
    finally:
        results.shutdown()
        window.shutdown()
        shutil.rmtree(run_dir.parent / (run_dir.name + "-newer"), ignore_errors=True)
