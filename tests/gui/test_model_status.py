"""The Model step in the real window says "done" only when the model can start from its weights on this computer:
pretrained weights that are not here (and cannot be downloaded offline) need attention and keep Layers and Train
locked; random weights or an imported file resolve it; an imported file is the project's weights at once; and the
catalogue highlights the project's model, even one outside the beginners' list (the demo's)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog
from safetensors.torch import save_file

import engine.models.build as models
from engine.project.demo import DEMO_MODEL
from engine.project.library import ModelLibrary
from gui.sidebar import StepState
from gui.steps.model import NAME_ROLE
from tests.gui.test_main_window import make_window, wait_scanned

LOAD_TIMEOUT = 120_000  # ms: the first import of timm is slow on a busy machine
ABSENT = "The pretrained weights of resnet18 are not on this computer"


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Offline mode on, and empty weight caches (Hugging Face's and torch hub's) for this test only; any attempt
    to open a connection fails the test."""
    import huggingface_hub.constants as hf

    monkeypatch.setenv(models.OFFLINE_ENV, "1")
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(models.socket, "create_connection",
                        lambda address, *a, **k: pytest.fail(f"a connection to {address} was opened offline"))
    saved = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torchhub"))
    yield
    torch.hub.set_dir(saved)


@pytest.fixture
def window(qtbot, tmp_path, offline):
    w = make_window(qtbot, tmp_path / "home")
    w.training.picker.library = ModelLibrary(tmp_path / "library")  # never the user's own model library
    yield w
    w.shutdown()


def open_new_project(qtbot, window, folder) -> None:
    window.open_folder(folder)
    wait_scanned(qtbot, window)
    picker = window.training.picker
    qtbot.waitUntil(picker.catalogue_ready, timeout=LOAD_TIMEOUT)


def states(window) -> dict[str, StepState]:
    return {key: window.steps.state(key)[0] for key in ("model", "layers", "train")}


def test_absent_pretrained_weights_need_attention_and_lock_layers_and_train(qtbot, window, tiny_dataset):
    open_new_project(qtbot, window, tiny_dataset)
    config = window.project.config
    assert (config.model.name, config.model.weights) == ("timm:resnet18", "pretrained")  # a new project's default
    assert states(window) == {"model": StepState.ATTENTION, "layers": StepState.BLOCKED,
                              "train": StepState.BLOCKED}
    reason = window.steps.state("model")[1]
    assert ABSENT in reason and "offline mode is on" in reason and "import a weight file" in reason
    assert ABSENT in window.steps.state("layers")[1]  # the locked steps say what to do, too
    # The banner above the Model step says it, and the sidebar's tooltip.
    window.steps.go_to("model")
    banner = window.steps.pages.currentWidget().banner
    assert not banner.isHidden() and ABSENT in banner.text.text()
    assert "needs attention" in window.steps.sidebar.item(1).toolTip()
    assert window.training.editor.builder is None  # no build was started that could only fail

    picker = window.training.picker
    assert picker.current_model().name == "timm:resnet18" and picker.pretrained_radio.isChecked()
    assert not picker.download_button.isEnabled() and not picker.use_button.isEnabled()  # offline: no dead end

    # The user explicitly chooses random weights: the step is done and Layers opens.
    qtbot.mouseClick(picker.none_radio, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(picker.use_button, Qt.MouseButton.LeftButton)
    assert window.project.config.model.weights == "none"
    state, reason = window.steps.state("model")
    assert state is StepState.DONE and "random weights" in reason
    assert states(window)["layers"] is not StepState.BLOCKED and states(window)["train"] is not StepState.BLOCKED
    editor = window.training.editor
    qtbot.waitUntil(lambda: editor.builder is not None and not editor.builder.is_busy(), timeout=LOAD_TIMEOUT)
    assert states(window)["layers"] is StepState.DONE


def test_importing_a_file_makes_it_the_projects_weights_at_once(qtbot, window, tiny_dataset, tmp_path,
                                                                 monkeypatch):
    import timm

    open_new_project(qtbot, window, tiny_dataset)
    picker = window.training.picker
    assert picker.current_model().name == "timm:resnet18"  # the project's model is the one shown
    source = tmp_path / "downloads" / "resnet18-from-a-colleague.safetensors"
    source.parent.mkdir()
    save_file(timm.create_model("resnet18").state_dict(), str(source))
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(source), ""))

    qtbot.mouseClick(picker.import_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "imported" in picker.message_label.text(), timeout=LOAD_TIMEOUT)
    (entry,) = picker.library.imported()
    # No second click on "Use this model": the project already starts from the imported file.
    config = window.project.config
    assert (config.model.name, config.model.weights) == ("timm:resnet18", entry.path)
    assert Path(entry.path).is_file()
    assert "this project now starts from it" in picker.message_label.text()
    state, reason = window.steps.state("model")
    assert state is StepState.DONE and Path(entry.path).name in reason
    assert states(window)["layers"] is not StepState.BLOCKED and states(window)["train"] is not StepState.BLOCKED
    assert picker.file_radio.isChecked() and picker.file_combo.currentData() == entry.path


def test_a_weight_file_that_went_missing_needs_attention(qtbot, window, tiny_dataset, tmp_path):
    open_new_project(qtbot, window, tiny_dataset)
    gone = tmp_path / "moved-away.safetensors"
    window.project.update_model(weights=str(gone))
    state, reason = window.steps.state("model")
    assert state is StepState.ATTENTION and "moved-away.safetensors" in reason and "import it again" in reason
    assert states(window)["layers"] is StepState.BLOCKED


def test_the_catalogue_highlights_the_demo_projects_model(qtbot, window):
    picker = window.training.picker
    qtbot.mouseClick(window.welcome.open_demo, Qt.MouseButton.LeftButton)
    wait_scanned(qtbot, window)
    qtbot.waitUntil(picker.catalogue_ready, timeout=LOAD_TIMEOUT)
    assert window.project.config.model.name == DEMO_MODEL
    current = picker.table.currentIndex()
    assert current.isValid() and current.data(NAME_ROLE) == DEMO_MODEL
    assert picker.table.selectionModel().isRowSelected(current.row(), current.parent())
    assert picker.current_model().name == DEMO_MODEL and picker.none_radio.isChecked()
    # The beginners' list stays as it was, with the project's model added to it.
    assert picker.recommended_check.isChecked()
    assert "this project's model" in picker.count_label.text()
    assert window.steps.state("model")[0] is StepState.DONE

    # Browsing the catalogue does not move the highlight back; another project's model does.
    picker.select("timm:efficientnet_b0")
    window.project.update(epochs=3)
    assert picker.current_model().name == "timm:efficientnet_b0"
    window.project.update_model(name="timm:resnet18", weights="none")
    assert picker.table.currentIndex().data(NAME_ROLE) == "timm:resnet18"
