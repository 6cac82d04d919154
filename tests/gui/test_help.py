"""The built-in guide: Help › Guide (F1) and the "?" of each step open it, beside the window, at the right section;
it has a section for every step and explains the choices a user has to make."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence

from gui import help as guide
from gui.help import GuideWindow, section_of
from gui.main_window import MainWindow
from gui.settings import file_settings
from gui.sidebar import STEPS
from gui.steps.layers import PRESETS


@pytest.fixture
def window(qtbot, tmp_path):
    w = MainWindow(settings=file_settings(tmp_path / "settings.ini"), data_dir=tmp_path / "data")
    w.ask_unsaved = lambda: "discard"
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.shutdown()


def menu_action(window: MainWindow, menu_text: str, action_text: str):
    (menu,) = [a.menu() for a in window.menuBar().actions() if a.text() == menu_text]
    (action,) = [a for a in menu.actions() if a.text() == action_text]
    return action


def guide_text(guide_window: GuideWindow) -> str:
    return guide_window.browser.document().toPlainText()


def heading_at_top(guide_window: GuideWindow) -> str:
    """The text of the line shown at the top of the guide's text."""
    browser = guide_window.browser
    return browser.cursorForPosition(browser.viewport().rect().topLeft()).block().text().strip()


def test_help_guide_opens_a_window_with_a_section_for_each_step(qtbot, window):
    action = menu_action(window, "&Help", "&Guide")
    assert action.shortcut() == QKeySequence("F1") and action.toolTip()
    action.trigger()
    guide_window = window.findChild(GuideWindow)
    qtbot.waitExposed(guide_window)
    assert guide_window.isVisible() and guide_window.windowTitle() == "Transfer Studio guide"
    # Beside the main window, not blocking it.
    assert not guide_window.isModal() and guide_window.windowModality() == Qt.WindowModality.NonModal
    assert window.isEnabled() and window.act_open_folder.isEnabled()
    sections = guide_window.sections()
    for number, info in enumerate(STEPS, start=1):
        assert f"{number}. {info.title}" in sections
    assert "Working offline" in sections
    text = guide_text(guide_window)
    for info in STEPS:  # each step's section says what the step is for
        start = text.index(section_of(info.key))
        assert "What it is for:" in text[start:start + 200], info.key
    # Opening it again brings back the same window.
    action.trigger()
    assert window.findChild(GuideWindow) is guide_window


def test_the_question_mark_of_the_layers_step_opens_the_guide_at_layers(qtbot, window, tiny_dataset):
    window.open_folder(tiny_dataset)
    qtbot.waitUntil(lambda: window.project.dataset is not None and not window.data_page.scanning, timeout=30_000)
    window.steps.go_to("layers")
    button = window.steps._frames["layers"].help_button
    assert button.isVisible() and "Layers" in button.toolTip()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    guide_window = window.findChild(GuideWindow)
    qtbot.waitExposed(guide_window)
    qtbot.waitUntil(lambda: heading_at_top(guide_window) == "3. Layers", timeout=5_000)
    assert guide_window.current_section() == "3. Layers"
    assert guide_window.contents.currentItem().text() == "3. Layers"

    # The "?" of another step moves the same window to that step's section.
    window.steps.go_to("evaluate")
    qtbot.mouseClick(window.steps._frames["evaluate"].help_button, Qt.MouseButton.LeftButton)
    assert window.findChild(GuideWindow) is guide_window
    qtbot.waitUntil(lambda: heading_at_top(guide_window) == "5. Evaluate", timeout=5_000)

    # Its list of sections moves the text too.
    item = guide_window.contents.findItems("2. Model", Qt.MatchFlag.MatchExactly)[0]
    guide_window.contents.setCurrentItem(item)
    qtbot.waitUntil(lambda: heading_at_top(guide_window) == "2. Model", timeout=5_000)


def test_the_guide_names_every_preset_of_the_layers_step(qtbot):
    guide_window = GuideWindow()
    qtbot.addWidget(guide_window)
    text = guide_text(guide_window)
    layers = text[text.index("3. Layers"):text.index("4. Train")]
    for _, label, _ in PRESETS:
        assert label in layers, label


def test_the_guide_explains_the_choices_in_plain_words(qtbot):
    guide_window = GuideWindow()
    qtbot.addWidget(guide_window)
    text = guide_text(guide_window)
    for words in ("Keep as is", "frozen", "Retrain", "BatchNorm", "Learning rate", "Epochs", "Augmentation",
                  "Precision", "Recall", "F1", "confusion matrix", "calibration error (ECE)", "Heat maps",
                  "Bundle", "ONNX", "TorchScript", "Work offline", "ImageNet's 1,000 classes"):
        assert words in text, words


def test_a_missing_guide_file_is_a_sentence_not_an_error(qtbot, tmp_path):
    guide_window = GuideWindow(path=tmp_path / "no-guide.md")
    qtbot.addWidget(guide_window)
    assert "The guide could not be opened" in guide_text(guide_window)
    guide_window.show_step("layers")  # no section to go to: nothing happens


def test_the_guide_ships_with_the_resources():
    assert guide.guide_path().is_file() and guide.guide_path().parent.name == "resources"
