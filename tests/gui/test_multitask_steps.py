"""The window's side of issue #17: the Layers step's LoRA preset (a tick per stage, rank and alpha, what will train)
and its one head per task, and the Evaluate step's task chooser on a multi-task run."""

from __future__ import annotations

import csv
import dataclasses
import random
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from engine.config import DataConfig, LoraSettings, ModelConfig, RunConfig, TrainConfig
from engine.models.layers import HEAD, build_layer_tree
from engine.train import lora
from gui.steps.layers import RETRAIN, LayerEditor
from gui.support.model_builder import build_now

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 60, 200)}


def task_csv(root: Path, per: int = 4) -> Path:
    from PIL import Image, ImageDraw

    rng = random.Random(0)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for colour, base in COLOURS.items():
        for shape in ("round", "square"):
            for k in range(per):
                image = Image.new("RGB", (40, 32), tuple(max(0, min(255, c + rng.randint(-30, 30))) for c in base))
                x, y = rng.randint(0, 20), rng.randint(0, 16)
                draw = ImageDraw.Draw(image)
                (draw.ellipse if shape == "round" else draw.rectangle)([x, y, x + 12, y + 12], fill=(240, 240, 240))
                image.save(root / f"{colour}_{shape}_{k}.png")
                rows.append([f"{colour}_{shape}_{k}.png", colour, shape if k else ""])
    with (root / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "colour", "shape"])
        writer.writerows(rows)
    return root / "labels.csv"


@pytest.fixture(scope="module")
def vit():
    return build_now("timm:test_vit", "none", 3)


@pytest.fixture
def editor(qtbot):
    widget = LayerEditor()
    qtbot.addWidget(widget)
    widget.resize(1100, 760)
    widget.set_config(RunConfig(epochs=3, lr=0.01))
    widget.show()
    return widget


def engine_trainable(result, settings: LoraSettings) -> int:
    """What the engine trains for these settings: adapters in the stages, and the head."""
    built = build_now(result.name, "none", result.num_classes)
    tree = lora.attach(built.built.model, built.tree, settings.stages, settings.rank, settings.alpha)
    return lora.summary(built.built.model, tree)["trainable_params"]


def test_the_lora_preset_ticks_stages_for_adapters_and_says_what_will_train(qtbot, editor, vit):
    editor.set_build_result(vit)
    with qtbot.waitSignal(editor.planChanged) as signal:
        qtbot.mouseClick(editor.preset_buttons["lora"], Qt.MouseButton.LeftButton)
    assert signal.args[1] == "lora" and editor.lora_controls.isVisible()
    body = [s.name for s in vit.tree.body]
    assert set(editor.phases()[0].stages) == set(body) | {HEAD}
    everything = engine_trainable(vit, LoraSettings(8, 16.0, tuple(body)))
    assert editor.lora_controls.trainable() == everything
    assert f"{everything:,}" in editor.lora_controls.summary.text() or "parameters will train" in \
        editor.lora_controls.summary.text()

    # Unticking a stage's Retrain box takes its adapters away; the plan stays LoRA.
    group = editor.model.find("group:blocks 0\u20135")
    if group.isValid():  # the blocks are grouped: open the group
        editor.view.expand(group)
    index = editor.model.find("stage:blocks.0").siblingAtColumn(RETRAIN)
    assert index.isValid()
    with qtbot.waitSignal(editor.planChanged):
        assert editor.model.setData(index, Qt.CheckState.Unchecked.value, Qt.ItemDataRole.CheckStateRole)
    assert editor.strategy() == "lora" and "blocks.0" not in editor.phases()[0].stages
    config = editor.apply_to(RunConfig())
    assert config.strategy == "lora" and "blocks.0" not in config.lora.stages and config.lora.stages
    assert editor.lora_controls.trainable() == engine_trainable(vit, config.lora)

    # A larger rank costs more, in proportion, and reaches the config.
    with qtbot.waitSignal(editor.planChanged):
        editor.lora_controls.rank.setValue(16)
    config = editor.apply_to(RunConfig())
    assert config.lora.rank == 16 and editor.lora_controls.trainable() == engine_trainable(vit, config.lora)


def test_a_task_csv_shows_one_head_per_task(qtbot, editor, vit, tmp_path):
    source = task_csv(tmp_path / "pictures")
    editor.set_config(RunConfig(data=DataConfig(source=str(source)), epochs=3, lr=0.01))
    editor.set_build_result(vit)
    head = editor.model.find(f"stage:{HEAD}")
    assert head.isValid()
    editor.view.expand(head)
    names = [editor.model.index(r, 0, head).data() for r in range(editor.model.rowCount(head))]
    assert any("colour" in str(n) for n in names) and any("shape" in str(n) for n in names), names
    # The heads: 3 colours and 2 shapes on the ViT's 64 features.
    assert editor._tree.stage(HEAD).params == (64 * 3 + 3) + (64 * 2 + 2)
    assert vit.tree.stage(HEAD).params == 64 * 3 + 3  # the Model step's build is left as it was


def test_the_evaluate_step_shows_the_chosen_tasks_numbers(qtbot, tmp_path, monkeypatch):
    from engine.results.evaluate import evaluate_run
    from engine.train.trainer import fit
    from gui.steps.evaluate import EvaluatePage

    monkeypatch.setenv("TRANSFER_STUDIO_CACHE", str(tmp_path / "cache"))
    source = task_csv(tmp_path / "pictures")
    result = fit(RunConfig(data=DataConfig(source=str(source), val_fraction=0.3),
                           model=ModelConfig("timm:test_resnet", "none"), epochs=1, lr=0.01,
                           train=TrainConfig(batch_size=4, workers=0, augment="none"), out=str(tmp_path / "runs")))
    assert result.status == "completed", result.error
    evaluation = evaluate_run(result.run_dir, device="cpu")
    page = EvaluatePage()
    qtbot.addWidget(page)
    page.resize(1100, 760)
    page.show()
    try:
        page.show_evaluation(evaluation)
        assert page.task_chooser.isVisible() and page.task_chooser.combo.count() == 2
        assert page.evaluation.classes == ("blue", "green", "red") and page.matrix.model.rowCount() == 3
        page.task_chooser.combo.setCurrentIndex(1)
        assert page.evaluation.classes == ("round", "square") and page.matrix.model.rowCount() == 2
        shape = evaluation.tasks["shape"].splits["val"]
        assert page.split is not None and page.split.count == shape.count
        page.show_evaluation(dataclasses.replace(evaluation, tasks={}))  # a single-task run: no chooser
        assert not page.task_chooser.isVisible()
    finally:
        page.shutdown()
