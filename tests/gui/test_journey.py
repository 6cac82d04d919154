"""A new user's whole journey through the real main window, in order, on a 10-class folder with train/, validation/
and test/ sub-folders — and a "click everything" pass over a small trained project. These catch what unit tests of
single widgets do not: a run that vanishes after *Save*, a button whose slot raises, a step that says "done" when it
is not. The app-wide error handler (gui.support.errors) counts every exception that no code caught: it must stay 0.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractButton, QApplication, QDialog, QFileDialog, QMessageBox, QWidget
from safetensors.torch import save_file

from engine.models.build import build_model
from gui.sidebar import StepState
from tests.gui.test_main_window import make_window, wait_scanned

pytestmark = [pytest.mark.usefixtures("quick_training"), pytest.mark.slow]

LEFT = Qt.MouseButton.LeftButton
MODEL = "timm:test_resnet"  # timm's smallest ResNet: trains in seconds on a CPU
CLASSES = ("apple", "banana", "cherry", "date", "elder", "fig", "grape", "hazel", "kiwi", "lemon")


def ten_class_folder(root: Path, per_split=(4, 2, 2)) -> Path:
    """train/, validation/ and test/ folders, each with one sub-folder per class of small distinct pictures."""
    for split, n in zip(("train", "validation", "test"), per_split):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                hue = (c * 25 + i * 3) % 255
                image = Image.new("RGB", (40, 40), (hue, 255 - hue, (c * 71) % 255))
                for x in range(0, 40, 4 + c % 4):
                    for y in range(40):
                        image.putpixel((x, y), (255 - hue, hue, 40))
                image.save(folder / f"{name}-{split}-{i}.png")
    return root


def weight_file(tmp_path: Path) -> Path:
    """A weight file for the journey's model, as a user would bring one (random weights: nothing to download)."""
    built = build_model(MODEL, "none", 1000)
    path = tmp_path / "downloads" / "test_resnet_weights.safetensors"
    path.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in built.model.state_dict().items()}, str(path))
    return path


def no_dialogs(monkeypatch, answers: dict | None = None) -> dict:
    """File dialogs answer from ``answers`` (or cancel); message boxes answer their default at once."""
    answers = answers if answers is not None else {}
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (answers.get("open", ""), ""))
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", lambda *a, **k: (answers.get("files", []), ""))
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (answers.get("save", ""), ""))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: answers.get("folder", ""))
    for name in ("information", "warning", "critical", "question", "about"):
        monkeypatch.setattr(QMessageBox, name, lambda *a, **k: QMessageBox.StandardButton.No)
    monkeypatch.setattr(QMessageBox, "exec", lambda self: QMessageBox.StandardButton.No)
    monkeypatch.setattr(QDialog, "exec", lambda self: QDialog.DialogCode.Rejected)
    return answers


def go(window, key: str) -> QWidget:
    window.steps.go_to(key)
    return window.steps.page(key)


def test_a_new_users_journey_from_folder_to_export_and_the_next_project(qtbot, tmp_path, monkeypatch):
    data = ten_class_folder(tmp_path / "fruit")
    weights = weight_file(tmp_path)
    answers = no_dialogs(monkeypatch)
    window = make_window(qtbot, tmp_path / "home")
    try:
        reporter = window.error_reporter
        # 1. Open the folder: the data's own split is used (validation/ is the validation split).
        assert window.open_folder(data)
        wait_scanned(qtbot, window)
        project = window.project
        assert len(project.dataset.classes) == 10
        assert window.steps.state("data")[0] is not StepState.BLOCKED

        # 2. Model: choose the model, import the weight file; the project starts from it without a second click.
        project.update_model(name=MODEL, weights="none")
        picker = window.training.picker
        go(window, "model")
        answers["open"] = str(weights)
        qtbot.mouseClick(picker.import_button, LEFT)
        qtbot.waitUntil(lambda: project.config.model.weights not in ("none", "pretrained"), timeout=60_000)
        assert Path(project.config.model.weights).name.endswith(".safetensors")
        qtbot.waitUntil(lambda: window.steps.state("model")[0] is StepState.DONE, timeout=60_000)

        # 3. Layers: a preset.
        editor = window.training.editor
        go(window, "layers")
        qtbot.waitUntil(lambda: editor._tree is not None and editor.stack.currentIndex() == 2, timeout=120_000)
        qtbot.mouseClick(editor.preset_buttons["fine-tune-shallow"], LEFT)
        assert project.config.strategy == "fine-tune-shallow"

        # 4. Train 2 epochs from the Train step.
        project.update_train(batch_size=8, workers=0)
        project.set_config(dataclasses.replace(project.config, epochs=2))
        panel = window.training.train
        go(window, "train")
        with qtbot.waitSignal(panel.runFinished, timeout=300_000) as finished:
            qtbot.mouseClick(panel.start_button, LEFT)
        result = finished.args[0]
        assert result.status == "completed", result.error

        # 5. Preview the augmentation: eight views of a training picture.
        monkeypatch.setattr(QDialog, "exec", QDialog.exec)  # a real (non-modal) dialog this time
        qtbot.mouseClick(panel.settings.preview, LEFT)
        qtbot.waitUntil(lambda: panel.preview_dialog is not None and panel.preview_dialog.isVisible(), timeout=60_000)
        panel.preview_dialog.close()
        assert reporter.count == 0

        # 6. Save the project: its run is still listed, and Evaluate and Predict & Export are open.
        path = tmp_path / "projects" / "fruit.tsproj"
        path.parent.mkdir()
        assert window._save_to(str(path))
        history = panel.history
        qtbot.waitUntil(lambda: history.table.rowCount() == 1, timeout=10_000)
        assert window.steps.state("evaluate")[0] is not StepState.BLOCKED
        assert window.steps.state("export")[0] is not StepState.BLOCKED
        listed = Path(history.infos[0].path)
        assert listed.name == Path(result.run_dir).name and listed.is_dir()

        # 7. Evaluate, then click a cell of the confusion matrix: its pictures show.
        evaluate = window.results.evaluate
        go(window, "evaluate")
        with qtbot.waitSignal(evaluate.evaluated, timeout=120_000):
            qtbot.mouseClick(evaluate.evaluate_button, LEFT)
        counts = evaluate.matrix.model.counts
        true, predicted = divmod(int(counts.argmax()), counts.shape[1])
        rect = evaluate.matrix.cell_rect(true, predicted)
        qtbot.mouseClick(evaluate.matrix.table.viewport(), LEFT, pos=rect.center())
        qtbot.waitUntil(lambda: evaluate.cell_model.rowCount() == int(counts[true, predicted]), timeout=10_000)

        # 8. Predict a folder holding one unreadable file: the others are predicted, the bad one says why.
        new = tmp_path / "new-pictures"
        new.mkdir()
        for p in sorted((data / "test" / "apple").glob("*.png"))[:2] + sorted((data / "test" / "kiwi").glob("*.png"))[:1]:
            (new / p.name).write_bytes(p.read_bytes())
        (new / "broken.jpg").write_bytes(b"\xff\xd8 not really a picture")
        predict = window.results.predict
        go(window, "export")
        with qtbot.waitSignal(predict.predicted, timeout=120_000):
            predict.add_paths([str(new)])
        rows = predict.model.rows
        assert len(rows) == 4 and sum(1 for r in rows if r.error) == 1
        assert "3 predicted" in predict.status.toolTip() and "1 could not be read" in predict.status.toolTip()

        # 9. Export ONNX.
        predict.format_combo.setCurrentIndex(predict.format_combo.findData("onnx"))
        with qtbot.waitSignal(predict.exported, timeout=300_000):
            qtbot.mouseClick(predict.export_button, LEFT)
        assert list(Path(result.run_dir).rglob("model.onnx")) or list(tmp_path.rglob("model.onnx"))

        # 10. Open another folder: a new project, whose history is empty.
        other = ten_class_folder(tmp_path / "other", per_split=(2, 1, 0))
        assert window.open_folder(other)
        wait_scanned(qtbot, window)
        qtbot.waitUntil(lambda: history.table.rowCount() == 0, timeout=10_000)
        assert window.steps.state("evaluate")[0] is StepState.BLOCKED
        assert reporter.count == 0, reporter.details()
    finally:
        window.shutdown()


SKIP_ACTIONS = ("&Quit",)  # closing the window ends the test; the close path has its own tests


def _settle(qtbot, window) -> None:
    """Wait until background jobs and any training run have ended."""
    panel = window.training.train
    qtbot.waitUntil(lambda: window.jobs.idle() and not panel.running, timeout=300_000)
    qtbot.wait(20)


def _visible_dialogs() -> list[QWidget]:
    return [w for w in QApplication.topLevelWidgets() if isinstance(w, QDialog) and w.isVisible()]


def _clickable(page: QWidget) -> list[QAbstractButton]:
    return [b for b in page.findChildren(QAbstractButton) if b.isVisible() and b.isEnabled()]


def test_click_everything_on_a_small_trained_project(qtbot, tmp_path, monkeypatch, tiny_dataset):
    """Every enabled button of every step and every menu action, once: no exception escapes to the handler."""
    monkeypatch.setenv("TRANSFER_STUDIO_OFFLINE", "1")  # nothing may try the network
    no_dialogs(monkeypatch)
    window = make_window(qtbot, tmp_path / "home")
    try:
        reporter = window.error_reporter
        assert window.open_folder(tiny_dataset)
        wait_scanned(qtbot, window)
        project = window.project
        project.update_model(name=MODEL, weights="none")
        project.update_train(batch_size=8, workers=0)
        project.set_config(dataclasses.replace(project.config, epochs=1))
        panel = window.training.train
        window.steps.go_to("train")
        with qtbot.waitSignal(panel.runFinished, timeout=300_000):
            qtbot.mouseClick(panel.start_button, LEFT)
        _settle(qtbot, window)

        clicked = []
        for key in window.steps.keys:
            window.steps.go_to(key)
            qtbot.wait(50)
            page = window.steps.page(key)
            seen: set[str] = set()
            for button in _clickable(page):
                name = f"{key}: {button.text() or button.toolTip()[:30] or button.objectName()}"
                if name in seen or not button.isVisible() or not button.isEnabled():
                    continue  # a button that disappeared or was disabled by an earlier click
                seen.add(name)
                button.click()
                clicked.append(name)
                _settle(qtbot, window)
                for dialog in _visible_dialogs():
                    dialog.close()
        menus = [a.menu() for a in window.menuBar().actions() if a.menu()]
        for action in [a for menu in menus for a in menu.actions()]:
            if action.isEnabled() and action.text() and action.text() not in SKIP_ACTIONS and not action.menu():
                action.trigger()
                clicked.append(f"menu: {action.text()}")
                _settle(qtbot, window)
                for dialog in _visible_dialogs():
                    dialog.close()
        assert len(clicked) > 30, clicked  # it really went through the steps
        assert reporter.count == 0, reporter.details()
    finally:
        window.shutdown()

