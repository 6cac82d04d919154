"""Help > Check this computer: the dialog a user opens from the Help menu shows the engine's report, problems first,
each with what to do."""

from __future__ import annotations

import pytest
import torch
from PySide6.QtWidgets import QApplication, QLabel

from engine import check as engine_check
from gui.check import CheckDialog
from gui.main_window import MainWindow
from gui.settings import file_settings


@pytest.fixture
def window(qtbot, tmp_path):
    w = MainWindow(settings=file_settings(tmp_path / "settings.ini"), data_dir=tmp_path / "data")
    w.show_error = lambda title, message, warning=True: None
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.shutdown()


def open_from_help_menu(window, qtbot) -> CheckDialog:
    help_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Help")
    action = next(a for a in help_menu.actions() if a.text() == "&Check this computer...")
    action.trigger()
    dialog = window.findChild(CheckDialog)
    assert dialog is not None and dialog.isVisible()
    qtbot.waitUntil(lambda: dialog.report is not None, timeout=60_000)
    return dialog


def shown_texts(dialog) -> list[str]:
    return [label.text() for label in dialog.problems.findChildren(QLabel) if label.text()]


def tree_rows(dialog) -> dict[str, str]:
    tree = dialog.facts
    return {tree.topLevelItem(i).text(0): tree.topLevelItem(i).text(1) for i in range(tree.topLevelItemCount())}


def test_the_help_menu_opens_the_check_and_it_shows_this_computer(window, qtbot):
    dialog = open_from_help_menu(window, qtbot)
    rows = tree_rows(dialog)
    assert rows["PyTorch"] == torch.__version__
    cpu = next(key for key in rows if key.startswith("CPU"))
    assert "bf16" in rows[cpu] and "fp16" in rows[cpu]
    assert any(key.startswith("Cache folder") for key in rows) and any(key.startswith("Runs folder") for key in rows)
    assert rows["Offline mode"].startswith("off")
    # The report can be copied as text, the same lines as `main.py check` prints.
    dialog.copy.click()
    assert QApplication.clipboard().text().splitlines() == dialog.report.lines()


def test_a_gpu_that_this_torch_cannot_use_is_a_problem_with_what_to_do(window, qtbot, monkeypatch):
    monkeypatch.setattr(engine_check, "_nvidia_smi", lambda: {"gpus": ["NVIDIA GeForce RTX 4090"], "driver": "550.54",
                                                              "cuda": "12.4"})
    monkeypatch.setattr(torch.version, "cuda", None)
    dialog = open_from_help_menu(window, qtbot)
    problems = shown_texts(dialog)
    assert any("An NVIDIA GPU is present (NVIDIA GeForce RTX 4090) but this PyTorch build has no CUDA" in p
               and "install PyTorch with CUDA support" in p for p in problems)
    assert "1 problem found" in dialog.status.text()
    assert tree_rows(dialog)["NVIDIA driver"] == "550.54 (CUDA up to 12.4)"


def test_the_check_follows_the_offline_switch_and_a_second_open_checks_again(window, qtbot, monkeypatch):
    monkeypatch.delenv("TRANSFER_STUDIO_OFFLINE", raising=False)
    first = open_from_help_menu(window, qtbot)
    assert tree_rows(first)["Offline mode"].startswith("off")
    window.act_offline.setChecked(True)
    try:
        second = open_from_help_menu(window, qtbot)
        assert second is first  # one dialog per window, raised and checked again
        qtbot.waitUntil(lambda: first.report is not None and first.report.offline, timeout=60_000)
        assert tree_rows(first)["Offline mode"].startswith("on")
    finally:
        window.act_offline.setChecked(False)
