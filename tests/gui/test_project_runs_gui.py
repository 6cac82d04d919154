"""Runs belong to their project, in the real window: a run trained before the first save is still in Run history after
File > Save (and Evaluate stays open), another project never lists it, reopening the project does; the Train step
names the runs folder and opens it; file dialogs start beside the user's files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFileDialog

from engine.project import runs
from gui.settings import LAST_FOLDER_KEY, LAST_PROJECT_FOLDER_KEY
from gui.sidebar import StepState
from tests.conftest import make_class_folders
from tests.gui.test_main_window import make_window, wait_scanned


def listed(window) -> list[Path]:
    """The runs the Train step's Run history shows."""
    return [Path(info.path) for info in window.training.train.history.infos]


def runs_label(window) -> str:
    return window.training.train.runs_label.text().replace("\u200b", "")


@pytest.mark.usefixtures("quick_training")
def test_a_run_trained_before_the_first_save_stays_with_its_project(qtbot, tmp_path, tiny_dataset):
    window = make_window(qtbot, tmp_path / "home")
    try:
        window.open_folder(tiny_dataset)
        wait_scanned(qtbot, window)
        project = window.project
        project.update_model(name="timm:test_resnet", weights="none")
        project.update_train(batch_size=8, workers=0, warmup_epochs=0.0, augment="none")
        project.update(epochs=1, strategy="fine-tune-deep", lr=0.01)
        assert "not saved yet" in runs_label(window)  # the Train step says where the runs go until then

        panel = window.training.train
        with qtbot.waitSignal(panel.runFinished, timeout=300_000) as finished:
            qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
        result = finished.args[0]
        assert result.status == "completed", result.error
        assert listed(window) == [Path(result.run_dir)]

        # File > Save: the run moves beside the project file, and everything that lists runs follows it.
        work = tmp_path / "work"
        work.mkdir()
        window.ask_save_project = lambda start: str(work / "colours.tsproj")
        assert window.save()
        assert window.errors == []
        moved = work / "runs" / Path(result.run_dir).name
        assert listed(window) == [moved]
        assert (moved / runs.BEST).is_file() and not Path(result.run_dir).exists()
        assert window.steps.state("evaluate")[0] is not StepState.BLOCKED
        assert window.steps.state("export")[0] is not StepState.BLOCKED
        assert [Path(r.path) for r in window.results.evaluate.completed_runs()] == [moved]
        assert str(work / "runs") in runs_label(window) and "not saved yet" not in runs_label(window)

        # Another project never lists it: a new one from another folder ...
        other = make_class_folders(tmp_path / "other" / "colours", per_class=4)
        assert window.open_folder(other)
        wait_scanned(qtbot, window)
        assert listed(window) == []
        assert window.steps.state("evaluate")[0] is StepState.BLOCKED
        assert window.results.evaluate.completed_runs() == []

        # ... and reopening the saved project lists it again.
        assert window.open_project_file(work / "colours.tsproj")
        wait_scanned(qtbot, window)
        assert listed(window) == [moved]
        assert window.steps.state("evaluate")[0] is not StepState.BLOCKED
    finally:
        window.shutdown()


def test_an_unsaved_projects_runs_are_its_own_and_closing_it_asks_to_save(qtbot, tmp_path, tiny_dataset, tiny_run):
    window = make_window(qtbot, tmp_path / "home")  # answers "discard" when asked about unsaved changes
    try:
        window.open_folder(tiny_dataset)
        wait_scanned(qtbot, window)
        first = Path(window.project.config.out)
        shutil.copytree(tiny_run, first / tiny_run.name)  # as a run trained in it leaves it
        window.training.train.runFinished.emit(None)  # the window hears that a run ended
        assert window.project.is_dirty  # its runs stay with it only if it is saved

        other = make_class_folders(tmp_path / "other" / "colours", per_class=4)
        assert window.open_folder(other)
        assert window.asked == ["unsaved"]
        wait_scanned(qtbot, window)
        assert Path(window.project.config.out) != first
        assert listed(window) == [] and window.steps.state("evaluate")[0] is StepState.BLOCKED
        assert (first / tiny_run.name / runs.BEST).is_file()  # discarded, yet nothing deleted
    finally:
        window.shutdown()


def test_a_run_still_training_stays_where_it_is_and_is_still_listed(qtbot, tmp_path, tiny_dataset, tiny_run):
    window = make_window(qtbot, tmp_path / "home")
    try:
        window.open_folder(tiny_dataset)
        wait_scanned(qtbot, window)
        source = Path(window.project.config.out)
        run = source / tiny_run.name
        shutil.copytree(tiny_run, run)
        window.results.refresh()
        window.training.train.history.refresh()
        work = tmp_path / "work"
        work.mkdir()
        window.ask_save_project = lambda start: str(work / "colours.tsproj")

        with runs.run_lock(run):  # another process is training it
            assert window.save()
        assert len(window.errors) == 1 and f"The run {run.name} is still training" in window.errors[0]
        assert listed(window) == [run]
        assert window.steps.state("evaluate")[0] is not StepState.BLOCKED
        assert "save it again" in runs_label(window)
        window.training.train.runFinished.emit(None)  # the run ended: the project has something to save
        assert window.project.is_dirty

        assert window.save()  # this save takes it along
        assert len(window.errors) == 1
        assert listed(window) == [work / "runs" / run.name] and not source.exists()
        assert "save it again" not in runs_label(window)
    finally:
        window.shutdown()


def test_the_train_step_opens_the_runs_folder(qtbot, tmp_path, tiny_dataset, monkeypatch):
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    window = make_window(qtbot, tmp_path / "home")
    try:
        window.open_folder(tiny_dataset)
        wait_scanned(qtbot, window)
        panel = window.training.train
        out = window.project.config.out
        assert out in runs_label(window) and panel.open_runs_button.isEnabled()
        qtbot.mouseClick(panel.open_runs_button, Qt.MouseButton.LeftButton)
        assert opened == [out] and Path(out).is_dir()
    finally:
        window.shutdown()


@pytest.fixture
def dialogs(monkeypatch):
    """Every QFileDialog getter answers 'cancelled' and records the folder (or file) it was asked to start in."""
    started = {}

    def fake(name, answer):
        def getter(parent, caption="", directory="", *args, **kwargs):
            started.setdefault(name, []).append(directory)
            return answer
        monkeypatch.setattr(QFileDialog, name, getter)

    fake("getExistingDirectory", "")
    fake("getOpenFileName", ("", ""))
    fake("getOpenFileNames", ([], ""))
    fake("getSaveFileName", ("", ""))
    return started


def test_file_dialogs_start_beside_the_projects_files(qtbot, tmp_path, tiny_dataset, dialogs):
    window = make_window(qtbot, tmp_path / "home")
    try:
        home = str(Path.home())
        window.settings.setValue(LAST_FOLDER_KEY, str(tmp_path))
        window.choose_folder()  # no project yet: the folder used last
        window.settings.remove(LAST_FOLDER_KEY)
        window.choose_project()  # nothing used yet: home
        assert dialogs.pop("getExistingDirectory") == [str(tmp_path)]
        assert dialogs.pop("getOpenFileName") == [home]

        pictures = tmp_path / "photos" / "colours"
        shutil.copytree(tiny_dataset, pictures)
        window.open_folder(pictures)
        wait_scanned(qtbot, window)
        window.save_as()  # a project not yet saved: beside its pictures' folder
        assert dialogs.pop("getSaveFileName") == [str(tmp_path / "photos" / "colours.tsproj")]

        work = tmp_path / "work"
        work.mkdir()
        window.settings.setValue(LAST_PROJECT_FOLDER_KEY, str(tmp_path / "elsewhere"))
        window.ask_save_project = lambda start: str(work / "colours.tsproj")
        assert window.save()
        predict, evaluate = window.results.predict, window.results.evaluate
        predict.ask_csv_path()
        predict.ask_files()
        predict.ask_folder("Choose a folder of pictures to classify")
        evaluate.ask_folder()
        window.training.picker._ask_import()
        window.choose_folder()
        window.choose_project()
        assert dialogs == {
            "getSaveFileName": [str(work / "predictions.csv")],  # not the folder the app was started from
            "getOpenFileNames": [str(pictures)],
            "getExistingDirectory": [str(pictures), str(pictures), str(work)],
            "getOpenFileName": [str(work), str(work)],
        }
    finally:
        window.shutdown()
