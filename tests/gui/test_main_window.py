"""The main window: welcome page, steps and their states, projects (save, save as, open, recent, unsaved changes,
the draft that survives a crash), the demo, drag and drop, and what the window remembers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QLabel

from engine.project.demo import DEMO_CLASSES, DEMO_PER_CLASS, demo_folder
from engine.project.project import draft_path, open_project
from gui.main_window import MainWindow
from gui.settings import file_settings
from gui.sidebar import StepState


def make_window(qtbot, tmp_path, answers=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    w = MainWindow(settings=file_settings(tmp_path / "settings.ini"), data_dir=tmp_path / "data")
    w.answers = answers if answers is not None else []
    w.asked = []
    w.errors = []

    def ask_unsaved():
        w.asked.append("unsaved")
        return w.answers.pop(0) if w.answers else "discard"

    w.ask_unsaved = ask_unsaved
    w.ask_restore_draft = lambda project: w.asked.append(f"restore {project.name}") or True
    w.show_error = lambda title, message, warning=True: w.errors.append(message)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    return w


@pytest.fixture
def window(qtbot, tmp_path):
    w = make_window(qtbot, tmp_path)
    yield w
    w.shutdown()


def wait_scanned(qtbot, window):
    qtbot.waitUntil(lambda: window.project.dataset is not None and not window.data_page.scanning, timeout=30_000)


def test_first_start_shows_the_welcome_page(window):
    assert window.stack.currentWidget() is window.welcome
    assert window.windowTitle() == "Transfer Studio"
    welcome = window.welcome
    assert [b.text() for b in (welcome.open_folder, welcome.open_project, welcome.open_demo)] == [
        "Open image folder...", "Open project...", "Open demo project"]
    assert all(b.toolTip() for b in (welcome.open_folder, welcome.open_project, welcome.open_demo))
    assert welcome.recent_empty.isVisible() and not welcome.recent.isVisible()
    assert not window.act_save.isEnabled()


def test_the_steps_are_the_workflow_and_say_why_they_cannot_be_used_yet(window, tiny_dataset, qtbot):
    steps = window.steps
    assert [steps.sidebar.item(i).text() for i in range(steps.sidebar.count())] == [
        "1  Data", "2  Model", "3  Layers", "4  Train", "5  Evaluate", "6  Predict & Export", "7  Label"]
    state, reason = steps.state("data")
    assert state is StepState.BLOCKED and "Open a folder of pictures" in reason
    # Model, Layers and Train are built; Layers and Train wait for pictures (the head needs the classes).
    from gui.steps.evaluate import EvaluatePage
    from gui.steps.layers import LayerEditor
    from gui.steps.model import ModelPicker
    from gui.steps.predict import PredictPage
    from gui.steps.train.panel import TrainPanel

    for key, kind in (("model", ModelPicker), ("layers", LayerEditor), ("train", TrainPanel),
                      ("evaluate", EvaluatePage), ("export", PredictPage)):
        assert isinstance(steps.page(key), kind) and steps.is_plugged(key)
    for key in ("layers", "train"):
        state, reason = steps.state(key)
        assert state is StepState.BLOCKED and "Open a folder of pictures first" in reason
    for key in ("evaluate", "export"):  # nothing to evaluate or export before a model is trained
        state, reason = steps.state(key)
        assert state is StepState.BLOCKED and "train" in reason.lower()
        assert "not yet possible" in steps.sidebar.item(steps.keys.index(key)).toolTip()


def test_a_step_built_elsewhere_plugs_in_and_reports_its_state(window):
    steps = window.steps
    panel = QLabel("the model picker")
    steps.set_page("model", panel)
    assert steps.page("model") is panel and steps.is_plugged("model")
    steps.set_state("model", StepState.ATTENTION, "These weights need a download: connect once or choose a file.")
    item = steps.sidebar.item(1)
    assert "needs attention" in item.toolTip() and "need a download" in item.toolTip()
    steps.go_to("model")
    assert steps.pages.currentWidget().content is panel
    banner = steps.pages.currentWidget().banner
    assert not banner.isHidden() and "need a download" in banner.text.text()
    steps.set_state("model", StepState.DONE)
    assert banner.isHidden()
    with pytest.raises(KeyError):
        steps.set_state("nonsense", StepState.DONE)


def test_save_as_then_open_round_trip(qtbot, tmp_path, window, tiny_dataset):
    window.open_folder(tiny_dataset)
    wait_scanned(qtbot, window)
    window.data_page.split.seed.setValue(9)
    window.project.update(epochs=12, strategy="fine-tune-shallow")
    assert window.project.is_dirty and window.isWindowModified()

    target = tmp_path / "projects" / "my colours"
    target.parent.mkdir()
    window.ask_save_project = lambda start: str(target)
    assert window.save_as()
    saved = Path(str(target) + ".tsproj")
    assert saved.is_file() and window.project.path == str(saved)
    assert not window.project.is_dirty and not window.isWindowModified()
    assert window.windowTitle().replace("[*]", "") == "Transfer Studio - my colours"
    assert window.recent.paths() == [str(saved)]
    config = window.project.config
    assert config.out == str(tmp_path / "projects" / "runs")  # the runs go beside the project file

    assert window.close_project()
    assert window.stack.currentWidget() is window.welcome
    assert window.welcome.recent.count() == 1 and window.welcome.recent.item(0).text() == "my colours"

    window.welcome.recent.itemClicked.emit(window.welcome.recent.item(0))
    assert window.project.path == str(saved)
    assert window.project.config == config
    assert window.project.config.data.split_seed == 9 and window.project.config.epochs == 12
    wait_scanned(qtbot, window)
    assert window.data_page.split.seed.value() == 9
    assert not window.project.is_dirty


def test_save_writes_to_the_same_file(qtbot, tmp_path, window, tiny_dataset):
    window.open_folder(tiny_dataset)
    wait_scanned(qtbot, window)
    window.ask_save_project = lambda start: str(tmp_path / "p.tsproj")
    assert window.save()  # a project never saved asks where
    window.project.update(epochs=3)
    window.ask_save_project = lambda start: pytest.fail("Save must not ask again")
    assert window.save()
    assert open_project(tmp_path / "p.tsproj", data_dir=tmp_path / "data").project.config.epochs == 3


def test_unsaved_changes_are_not_lost_without_asking(qtbot, tmp_path, tiny_dataset):
    window = make_window(qtbot, tmp_path, answers=["cancel", "save", "discard"])
    window.open_folder(tiny_dataset)
    wait_scanned(qtbot, window)
    window.project.update(epochs=7)

    assert not window.close_project()  # "Cancel": nothing happens
    assert window.asked == ["unsaved"] and window.project.is_open

    window.ask_save_project = lambda start: str(tmp_path / "kept.tsproj")
    assert window.close_project()  # "Save": saved, then closed
    assert open_project(tmp_path / "kept.tsproj").project.config.epochs == 7

    window.open_project_file(tmp_path / "kept.tsproj")
    window.project.update(epochs=8)
    assert window.close_project()  # "Discard"
    assert open_project(tmp_path / "kept.tsproj").project.config.epochs == 7
    assert window.asked == ["unsaved"] * 3

    window.open_project_file(tmp_path / "kept.tsproj")
    assert window.close_project()  # nothing changed: no question
    assert window.asked == ["unsaved"] * 3
    window.shutdown()


def test_closing_the_window_with_changes_asks_and_can_be_cancelled(qtbot, tmp_path, tiny_dataset):
    window = make_window(qtbot, tmp_path, answers=["cancel", "discard"])
    window.open_folder(tiny_dataset)
    wait_scanned(qtbot, window)
    window.project.update(epochs=9)
    assert not window.close()
    assert window.isVisible()
    assert window.close()
    assert window.asked == ["unsaved", "unsaved"]


def test_a_draft_survives_a_crash_and_is_offered_at_the_next_start(qtbot, tmp_path, tiny_dataset):
    first = make_window(qtbot, tmp_path)
    first.drafts.timer.setInterval(1)
    first.open_folder(tiny_dataset)
    wait_scanned(qtbot, first)
    first.project.update(epochs=31)
    qtbot.waitUntil(lambda: draft_path(tmp_path / "data").is_file())
    first.shutdown()  # the app dies here: no closeEvent, no question, the draft stays
    first.hide()

    second = make_window(qtbot, tmp_path)
    assert second.restore_draft()
    assert second.asked == ["restore colours"]
    assert second.project.config.epochs == 31
    assert second.project.is_dirty and second.project.path is None
    wait_scanned(qtbot, second)

    second.answers.append("discard")
    assert second.close()
    assert not draft_path(tmp_path / "data").exists()  # a clean close removes it
    third = make_window(qtbot, tmp_path)
    assert not third.restore_draft() and third.asked == []
    third.shutdown()


def test_a_project_that_cannot_be_opened_says_why(window, tmp_path):
    bad = tmp_path / "bad.tsproj"
    bad.write_text("this is not toml [", encoding="utf-8")
    assert not window.open_project_file(bad)
    assert len(window.errors) == 1 and "not valid TOML" in window.errors[0]
    assert window.stack.currentWidget() is window.welcome


def test_the_demo_project_is_one_click_away(qtbot, window, tmp_path):
    qtbot.mouseClick(window.welcome.open_demo, Qt.MouseButton.LeftButton)
    wait_scanned(qtbot, window)
    project = window.project
    assert project.name == "Patterns demo"
    assert project.path == str(demo_folder(tmp_path / "data") / "Patterns demo.tsproj")
    assert project.config.model.weights == "none"  # nothing to download
    assert project.dataset.classes == sorted(DEMO_CLASSES)
    assert len(project.dataset.samples) == len(DEMO_CLASSES) * DEMO_PER_CLASS
    assert window.steps.state("data")[0] is StepState.DONE
    assert window.recent.paths() == [project.path]
    assert not project.is_dirty


def test_dropping_a_folder_opens_it(qtbot, window, tiny_dataset):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(tiny_dataset))])
    event = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    assert event.isAccepted()
    wait_scanned(qtbot, window)
    assert window.project.dataset.root == str(tiny_dataset)

    text = QMimeData()
    text.setText("not a folder")
    refused = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, text, Qt.MouseButton.LeftButton,
                         Qt.KeyboardModifier.NoModifier)
    window.dropEvent(refused)
    assert not refused.isAccepted()


def test_the_window_remembers_its_size_and_last_folder(qtbot, tmp_path, tiny_dataset):
    first = make_window(qtbot, tmp_path)
    first.resize(790, 560)  # within the offscreen screen (800 x 600), which bounds a restored window
    first.open_folder(tiny_dataset)
    wait_scanned(qtbot, first)
    assert first.close()

    second = make_window(qtbot, tmp_path)
    assert (second.width(), second.height()) == (790, 560)
    seen = []
    second.ask_folder = lambda title: seen.append(title) or ""
    second.choose_folder()
    from gui.settings import LAST_FOLDER_KEY, read_str

    assert read_str(second.settings, LAST_FOLDER_KEY) == str(tiny_dataset.parent)
    second.shutdown()


def test_the_window_remembers_where_the_user_put_the_dividers(qtbot, tmp_path, tiny_dataset):
    def laid_out(name):
        w = make_window(qtbot, tmp_path / name)
        w.resize(1400, 900)
        w.open_folder(tiny_dataset)
        wait_scanned(qtbot, w)
        qtbot.waitUntil(lambda: sum(w.data_page.splitter.sizes()) > 1000)
        return w

    first = laid_out("a")
    first.data_page.splitter.setSizes([1000, 380])
    first.data_page.side.setSizes([500, 300])
    sizes = first.data_page.splitter.sizes(), first.data_page.side.sizes()
    assert first.close()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "settings.ini").rename(tmp_path / "b" / "settings.ini")

    second, fresh = laid_out("b"), laid_out("c")  # c: no settings, the defaults
    close = lambda a, b: all(abs(x - y) <= 12 for x, y in zip(a, b))  # noqa: E731  (to a scroll bar's width)
    assert close(second.data_page.splitter.sizes(), sizes[0]) and close(second.data_page.side.sizes(), sizes[1])
    assert not close(fresh.data_page.splitter.sizes(), sizes[0])
    assert not close(fresh.data_page.side.sizes(), sizes[1])
    for w in (second, fresh):
        w.shutdown()


def test_every_control_has_a_tooltip(qtbot, window, tiny_dataset):
    from PySide6.QtWidgets import QAbstractButton, QComboBox, QLineEdit, QSpinBox

    window.open_folder(tiny_dataset)
    wait_scanned(qtbot, window)
    kinds = (QAbstractButton, QComboBox, QLineEdit, QSpinBox)
    controls = [w for kind in kinds for w in window.findChildren(kind)
                if w.isVisibleTo(window) and not isinstance(w.parent(), (QComboBox, QSpinBox))]
    missing = [f"{type(w).__name__} {getattr(w, 'text', lambda: '')()!r}" for w in controls if not w.toolTip()]
    assert controls and missing == []
    assert all(a.toolTip() for a in (window.act_open_folder, window.act_open_project, window.act_demo,
                                     window.act_save, window.act_save_as, window.act_close))


def test_project_settings_use_the_run_config_as_the_single_source(qtbot, window, tiny_dataset):
    window.open_folder(tiny_dataset)
    wait_scanned(qtbot, window)
    seen = []
    window.project.config_changed.connect(seen.append)
    window.data_page.split.val.setValue(30)
    assert seen and seen[-1] is window.project.config
    assert dataclasses.asdict(window.project.config.data)["val_fraction"] == 0.3


def test_the_offline_switch_is_on_screen_and_remembered(qtbot, tmp_path, monkeypatch):
    from engine.models.build import OFFLINE_ENV, offline_mode

    monkeypatch.delenv(OFFLINE_ENV, raising=False)
    first = make_window(qtbot, tmp_path)
    assert not first.act_offline.isChecked() and not first.offline_label.isVisible() and not offline_mode()
    first.act_offline.trigger()
    assert offline_mode() and first.offline_label.isVisible()
    assert "no network" in first.offline_label.text()
    first.shutdown()
    first.close()

    second = make_window(qtbot, tmp_path)  # the same settings file: the switch is remembered
    assert second.act_offline.isChecked() and second.offline_label.isVisible() and offline_mode()
    second.act_offline.trigger()
    assert not offline_mode() and not second.offline_label.isVisible()
    second.shutdown()
