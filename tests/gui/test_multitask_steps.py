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
from engine.models.layers import HEAD
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
    # The title counts tasks and their classes, not the combinations of labels.
    title = editor.title_label.text()
    assert "2 tasks: colour (3 classes), shape (2 classes)" in title and "your 3-class head" not in title, title


@pytest.fixture(scope="module")
def task_run(tmp_path_factory):
    """A trained multi-task run (colour and shape) and its pictures' folder."""
    import os

    from engine.train.trainer import fit

    root = tmp_path_factory.mktemp("multitask")
    old = os.environ.get("TRANSFER_STUDIO_CACHE")
    os.environ["TRANSFER_STUDIO_CACHE"] = str(root / "cache")
    try:
        source = task_csv(root / "pictures")
        result = fit(RunConfig(data=DataConfig(source=str(source), val_fraction=0.3),
                               model=ModelConfig("timm:test_resnet", "none"), epochs=1, lr=0.01,
                               train=TrainConfig(batch_size=4, workers=0, augment="none"), out=str(root / "runs")))
    finally:
        if old is None:
            os.environ.pop("TRANSFER_STUDIO_CACHE", None)
        else:
            os.environ["TRANSFER_STUDIO_CACHE"] = old
    assert result.status == "completed", result.error
    return Path(result.run_dir), source.parent


def test_the_evaluate_step_shows_the_chosen_tasks_numbers(qtbot, task_run, tmp_path, monkeypatch):
    from engine.results.evaluate import evaluate_run
    from gui.steps.evaluate import EvaluatePage

    monkeypatch.setenv("TRANSFER_STUDIO_CACHE", str(tmp_path / "cache"))
    evaluation = evaluate_run(task_run[0], device="cpu")
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


def test_the_predict_step_shows_the_chosen_tasks_answers_and_saves_every_task(qtbot, task_run, tmp_path,
                                                                                 monkeypatch):
    from engine.results import multitask as rmt
    from engine.results.predict import load_run_model
    from tests.gui.test_predict_page import open_page

    monkeypatch.setenv("TRANSFER_STUDIO_CACHE", str(tmp_path / "cache"))
    run, pictures = task_run
    paths = [str(pictures / name) for name in ("red_round_1.png", "blue_square_2.png", "green_round_3.png")]
    expected = {r.path: r for r in rmt.predict_tasks(load_run_model(run, device="cpu"), paths)}
    page = open_page(qtbot, run.parent)
    try:
        assert not page.task_chooser.isVisible()  # nothing predicted yet
        with qtbot.waitSignal(page.predicted, timeout=60_000):
            page.add_paths(paths)
        assert page.task_chooser.isVisible()
        assert [page.task_chooser.combo.itemData(i) for i in range(page.task_chooser.combo.count())] == [
            "colour", "shape"]

        def shown(col):
            return [page.model.index(r, col).data() for r in range(page.model.rowCount())]

        def answers(task):
            t = ["colour", "shape"].index(task)
            return [expected[p].answers[t] for p in paths]

        assert shown(1) == [a[1] for a in answers("colour")]
        assert shown(1)[0] in ("red", "green", "blue")
        colour_confidences = [page.model.rows[i].confidence for i in range(3)]
        assert colour_confidences == pytest.approx([a[2] for a in answers("colour")])
        page.task_chooser.combo.setCurrentIndex(1)
        assert shown(1) == [a[1] for a in answers("shape")]
        assert set(shown(1)) <= {"round", "square"}
        assert [p.confidence for p in page.model.rows] == pytest.approx([a[2] for a in answers("shape")])
        assert "3 pictures" in page.status.text()
        # The picture panel's heat-map choice explains the chosen task's answer (its output column).
        assert page.panel.target.itemData(0) == 3 + ["round", "square"].index(shown(1)[page.table.currentIndex().row()])

        target = tmp_path / "predictions.csv"
        page.ask_csv_path = lambda: str(target)
        page.save_csv()
        table = list(csv.DictReader(target.open(encoding="utf-8")))
        assert list(table[0]) == ["path", "colour", "colour_confidence", "shape", "shape_confidence", "error"]
        assert [r["shape"] for r in table] == [a[1] for a in answers("shape")]
        assert [r["colour"] for r in table] == [a[1] for a in answers("colour")]
        assert float(table[0]["colour_confidence"]) == pytest.approx(answers("colour")[0][2], abs=1e-6)
    finally:
        page.shutdown()
