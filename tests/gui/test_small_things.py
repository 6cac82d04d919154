"""Small things a new user trips over in the window: the browser starts on the training pictures, a new folder starts
with no filters at the top of the grid, counts read "1 run" rather than "1 runs", and Start cannot be pressed while
the Train step is not yet possible."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import Qt

from engine.data.scan import SPLITS
from engine.project import runs
from engine.project.library import ModelLibrary
from gui.sidebar import StepState
from gui.steps.data.picture_model import ALL, ClassRole, PathRole, SplitRole
from gui.steps.train.history import RunHistory
from gui.steps.train.panel import TrainPanel
from gui.widgets.format import plural
from tests.conftest import make_class_folders
from tests.gui.test_main_window import make_window, wait_scanned
from tests.gui.test_model_status import ABSENT, LOAD_TIMEOUT, offline  # noqa: F401  (offline is a fixture)


def split_folders(root: Path, train: int = 6, val: int = 2, test: int = 2) -> Path:
    """train/, validation/ and test/ folders, each with one sub-folder per class, as users bring them."""
    for seed, (name, count) in enumerate((("train", train), ("validation", val), ("test", test))):
        make_class_folders(root / name, per_class=count, seed=seed)
    return root


def rows(browser) -> list[tuple[str, str, str]]:
    model = browser.model
    return [(model.index(r).data(SplitRole), model.index(r).data(ClassRole), Path(model.index(r).data(PathRole)).name)
            for r in range(model.rowCount())]


def test_all_splits_lists_training_then_validation_then_test_pictures(qtbot, tmp_path):
    window = make_window(qtbot, tmp_path / "home")
    try:
        window.open_folder(split_folders(tmp_path / "colours"))
        wait_scanned(qtbot, window)
        browser = window.data_page.browser
        assert browser.split_filter.currentText() == "All splits"
        shown = rows(browser)
        assert len(shown) == 30
        assert shown[0][0] == "train"  # the first picture the user sees is one the model learns from
        classes = window.project.dataset.classes
        # Split by split as the work goes, then class by class, then by file name.
        assert shown == sorted(shown, key=lambda r: (SPLITS.index(r[0]), classes.index(r[1]), r[2]))
        assert [s for s, _, _ in shown] == ["train"] * 18 + ["val"] * 6 + ["test"] * 6
    finally:
        window.shutdown()


def test_another_folder_starts_without_filters_at_the_top(qtbot, tmp_path):
    window = make_window(qtbot, tmp_path / "home")
    try:
        window.resize(1100, 700)
        window.open_folder(split_folders(tmp_path / "first", train=40))
        wait_scanned(qtbot, window)
        browser = window.data_page.browser
        browser.set_filters("blue", "train", "blue")
        assert browser.model.rowCount() == 40
        bar = browser.grid.verticalScrollBar()
        qtbot.waitUntil(lambda: bar.maximum() > 0)
        bar.setValue(bar.maximum())
        assert bar.value() > 0

        window.open_folder(split_folders(tmp_path / "second"))  # the same class names: the filters would fit
        wait_scanned(qtbot, window)
        assert browser.class_filter.currentText() == "All classes"
        assert browser.split_filter.currentText() == "All splits"
        assert browser.search.text() == ""
        assert browser.model.filter == (ALL, ALL, "")
        assert browser.model.rowCount() == 30 and browser.count.text() == "30 pictures"
        assert bar.value() == 0
    finally:
        window.shutdown()


def fake_run(out: Path, name: str, epochs: int) -> None:
    folder = out / name
    folder.mkdir(parents=True)
    (folder / runs.CONFIG).write_text('strategy = "feature-extraction"\n', encoding="utf-8")
    (folder / runs.SUMMARY).write_text(json.dumps({"status": "completed", "best_val_acc": 0.8,
                                                   "epochs_completed": epochs, "total_epochs": epochs}),
                                       encoding="utf-8")


def test_counts_of_one_read_in_the_singular(qtbot, tmp_path):
    history = RunHistory()
    qtbot.addWidget(history)
    fake_run(tmp_path / "runs", "run-1", epochs=1)
    history.set_folder(tmp_path / "runs")
    assert history.hint.text() == f"1 run in {tmp_path / 'runs'}"
    fake_run(tmp_path / "runs", "run-2", epochs=1)
    history.refresh()
    assert history.hint.text().startswith("2 runs in ")

    panel = TrainPanel()
    qtbot.addWidget(panel)
    panel._set_run_range(1)
    assert panel.run_bar.text() == "Run: 0 of 1 epoch"
    panel._set_run_range(3)
    assert panel.run_bar.text() == "Run: 0 of 3 epochs"

    assert [plural(n, "picture") for n in (0, 1, 2, 1000)] == ["0 pictures", "1 picture", "2 pictures",
                                                                "1,000 pictures"]
    assert plural(1, "class", "classes") == "1 class" and plural(3, "class", "classes") == "3 classes"


def test_start_is_disabled_while_the_train_step_is_blocked(qtbot, tmp_path, tiny_dataset, offline):  # noqa: F811
    window = make_window(qtbot, tmp_path / "home")
    try:
        window.training.picker.library = ModelLibrary(tmp_path / "library")  # never the user's own library
        panel = window.training.train
        assert not panel.start_button.isEnabled()  # no pictures yet
        window.open_folder(tiny_dataset)
        wait_scanned(qtbot, window)
        qtbot.waitUntil(window.training.picker.catalogue_ready, timeout=LOAD_TIMEOUT)
        state, reason = window.steps.state("train")
        assert state is StepState.BLOCKED and ABSENT in reason  # the default pretrained weights are not here
        window.steps.go_to("train")
        assert not panel.start_button.isEnabled()
        assert ABSENT in panel.start_button.toolTip()
        qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
        assert not panel.running

        window.project.update_model(weights="none")  # random weights: nothing missing any more
        assert window.steps.state("train")[0] is StepState.READY
        assert panel.start_button.isEnabled() and ABSENT not in panel.start_button.toolTip()
    finally:
        window.shutdown()


def test_file_names_sort_as_a_file_manager_sorts_them():
    """'apple-2.png' before 'apple-10.png' (the grid showed 0, 1, 10, 11, ..., 19, 2)."""
    from gui.steps.data.picture_model import natural_key

    names = ["apple-10.png", "apple-2.png", "apple-1.png", "Apple-3.png", "apple.png", "apple-2b.png"]
    assert sorted(names, key=natural_key) == ["apple-1.png", "apple-2.png", "apple-2b.png", "Apple-3.png",
                                              "apple-10.png", "apple.png"]


def test_a_short_runs_epoch_axis_has_whole_numbers(qtbot, tmp_path):
    history = RunHistory()
    qtbot.addWidget(history)
    history.resize(900, 500)
    fake_run(tmp_path / "runs", "run-1", epochs=3)
    (tmp_path / "runs" / "run-1" / runs.METRICS).write_text("".join(
        json.dumps({"epoch": e, "val_acc": 0.8 + e / 100, "val_loss": 0.5 - e / 10}) + "\n" for e in (1, 2, 3)))
    history.set_folder(tmp_path / "runs")
    history.table.selectRow(0)
    assert history.plotted_runs() == 1
    for plot in (history.acc_plot, history.loss_plot):
        ticks = [v for _, values in plot.getAxis("bottom").tickValues(1, 3, 300) for v in values]
        assert ticks and all(float(v).is_integer() for v in ticks)
    (tmp_path / "runs" / "run-1" / runs.METRICS).write_text("".join(
        json.dumps({"epoch": e, "val_acc": 0.8, "val_loss": 0.5}) + "\n" for e in range(1, 13)))
    history.refresh()
    history.table.selectRow(0)
    major = history.loss_plot.getAxis("bottom").tickValues(1, 12, 150)[0][1]
    assert major == [2, 4, 6, 8, 10, 12]  # twelve epochs in a narrow plot: every other one numbered
