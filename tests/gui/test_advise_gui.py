"""The advisor in the window: the Model step's ranked suggestions, the Layers step's per-stage bars with their
one-click freeze point, and the Run history's comparison with training from scratch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PySide6.QtCore import Qt

from conftest import make_class_folders
from engine.advise.transfer import Candidate
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.models.layers import HEAD
from engine.project import runs
from engine.train.trainer import fit
from gui.steps.layers import LayerEditor
from gui.support.model_builder import build_now
from gui.widgets.advice import StageAdvice, SuggestionsDialog

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WAIT_MS = 120_000  # a generous ceiling for a busy machine: the waits end as soon as the work is done


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_class_folders(tmp_path_factory.mktemp("advise-gui") / "colours", per_class=12)


@pytest.fixture(scope="module")
def trained_run(data, tmp_path_factory) -> Path:
    """A completed run that started from a weight file (so it can be compared with training from scratch)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(7)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    weights = tmp_path_factory.mktemp("w") / "start.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    config = RunConfig(data=DataConfig(source=str(data), val_fraction=0.25),
                       model=ModelConfig("timm:test_resnet", str(weights)), strategy="fine-tune-deep", epochs=3,
                       lr=0.02, train=TrainConfig(batch_size=8, workers=0, warmup_epochs=0.0, augment="none"),
                       out=str(tmp_path_factory.mktemp("runs")))
    result = fit(config)
    assert result.status == "completed", result.error
    return Path(result.run_dir)


def test_suggest_models_ranks_the_models_and_uses_the_one_picked(qtbot, data, trained_run):
    best = str(trained_run / runs.BEST)
    dialog = SuggestionsDialog(None, None, str(data), models=[Candidate("timm:test_resnet", "none"),
                                                              Candidate("timm:test_resnet", best)])
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.start()
    qtbot.waitUntil(lambda: dialog.table.rowCount() == 2, timeout=WAIT_MS)
    scores = [float(dialog.table.item(r, 1).text()) for r in range(2)]
    assert scores[0] >= scores[1]
    assert "best.safetensors" in dialog.table.item(0, 0).text()  # the trained weights suit the pictures best
    assert "Scored on" in dialog.status.text()
    assert dialog.table.item(0, 2).text()  # time per epoch here
    assert "parameters" in dialog.table.item(0, 3).text()
    with qtbot.waitSignal(dialog.chosen) as chosen:
        qtbot.mouseClick(dialog.use_button, Qt.MouseButton.LeftButton)
    assert chosen.args == ["timm:test_resnet", best]


def test_suggest_models_without_models_says_what_to_do(qtbot, data, tmp_path):
    from engine.project.library import ModelLibrary

    dialog = SuggestionsDialog(None, None, str(data), models=[])
    qtbot.addWidget(dialog)
    dialog.start()
    qtbot.waitUntil(lambda: "No model has weights" in dialog.status.text(), timeout=WAIT_MS)
    assert dialog.table.rowCount() == 0


def test_layer_scores_show_bars_and_apply_the_freeze_point(qtbot, data, trained_run):
    editor = LayerEditor()
    qtbot.addWidget(editor)
    editor.resize(1100, 800)
    config = RunConfig(data=DataConfig(source=str(data)),
                       model=ModelConfig("timm:test_resnet", str(trained_run / runs.BEST)))
    editor.set_config(config)
    editor.set_build_result(build_now("timm:test_resnet", "none", 3))
    editor.show()
    advice = editor.advice
    assert not advice.bars.isVisible()
    qtbot.mouseClick(advice.score_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: advice.advice is not None, timeout=WAIT_MS)
    assert advice.bars.isVisible()
    names = [name for name, _ in advice.bars.stages]
    assert names == ["stem", "layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    freeze = advice.advice.suggested_freeze
    assert freeze in names and f"up to {freeze}" in advice.apply_button.text()
    assert "Transfer" in advice.text.text() or "transfer" in advice.text.text()  # the negative-transfer verdict
    # One click applies the suggestion: the stages after the freeze point retrain with the head ...
    import dataclasses

    advice.show_advice(dataclasses.replace(advice.advice, suggested_freeze="layer2.0"))
    assert advice.apply_button.text() == "Keep up to layer2.0, retrain the rest"
    with qtbot.waitSignal(editor.planChanged):
        qtbot.mouseClick(advice.apply_button, Qt.MouseButton.LeftButton)
    assert list(editor.phases()[editor.current_phase()].stages) == ["layer3.0", "layer4.0", HEAD]
    assert editor.strategy() == "custom"
    # ... and a freeze point at the top of the body is feature extraction.
    advice.show_advice(dataclasses.replace(advice.advice, suggested_freeze="layer4.0"))
    with qtbot.waitSignal(editor.planChanged):
        qtbot.mouseClick(advice.apply_button, Qt.MouseButton.LeftButton)
    assert editor.strategy() == "feature-extraction"
    assert list(editor.phases()[0].stages) == [HEAD]


def test_compare_with_training_from_scratch_states_what_transfer_gained(qtbot, trained_run, tmp_path):
    import shutil

    from gui.steps.train.panel import TrainPanel

    run = tmp_path / "runs" / trained_run.name
    shutil.copytree(trained_run, run)
    panel = TrainPanel()
    qtbot.addWidget(panel)
    panel.set_config(RunConfig(out=str(run.parent)))
    history = panel.history
    history.select([0])
    assert history.scratch_button.isEnabled()
    assert not history.comparison_label.isVisible()
    with qtbot.waitSignal(panel.runFinished, timeout=WAIT_MS):
        qtbot.mouseClick(history.scratch_button, Qt.MouseButton.LeftButton)
    comparison = runs.read_summary(run)["scratch_comparison"]
    assert comparison["epochs"] == 3
    assert comparison["sentence"] in panel.status.text()
    # The history lists both runs; the original shows the sentence, and the scratch run cannot be compared again.
    assert len(history.infos) == 2
    original = [i for i, info in enumerate(history.infos) if info.path == str(run)][0]
    history.select([original])
    assert history.comparison_label.text() == comparison["sentence"]
    history.select([1 - original])
    assert not history.scratch_button.isEnabled()
    panel.shutdown()


def _ink_below_bars(bars) -> int:
    """Pixels under the bars that are not the background: the stages' names."""
    image = bars.grab().toImage()
    background = image.pixelColor(1, image.height() - 1)
    top = int(bars._geometry()[0].bottom()) + 2
    return sum(1 for y in range(top, image.height()) for x in range(0, image.width(), 2)
               if image.pixelColor(x, y) != background)


@pytest.mark.parametrize("width", [1180, 200])
def test_each_stage_bar_names_its_stage(qtbot, width):
    from gui.widgets.advice import StageBars

    bars = StageBars()
    qtbot.addWidget(bars)
    names = [f"features.{i}" for i in range(19)]
    bars.set_scores([(n, i * 0.1) for i, n in enumerate(names)], "features.15")
    bars.resize(width, bars.sizeHint().height())
    bars.show()
    qtbot.waitExposed(bars)
    rects = bars._geometry()
    assert rects[0].bottom() < bars.height() - 40  # room kept under the bars for the names
    assert _ink_below_bars(bars) > 200  # and they are drawn there
    shown = bars.named_stages()
    assert 15 in shown  # the freeze point's stage is always named
    if width >= 1000:
        assert shown == list(range(19))  # wide enough: every bar names its stage (written upwards)
    else:  # narrow: every other one or fewer, never two names closer than a line
        gaps = [b - a for a, b in zip(shown, shown[1:])]
        step = bars.label_step()
        assert step > 1 and min(gaps) >= step and len(shown) >= 19 // (2 * step)
