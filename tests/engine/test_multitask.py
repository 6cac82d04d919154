"""Multi-task runs (issue #17): a CSV of several label columns, one head per task on one backbone, a masked and
weighted loss, and every result per task (evaluation.json, predictions, the ONNX export)."""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.data.scan import DatasetIndex
from engine.errors import ConfigError
from engine.train import multitask as mt
from engine.train.trainer import fit

pytestmark = pytest.mark.usefixtures("quick_training")

MODEL = "timm:test_resnet"
COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 60, 200)}


def make_task_csv(root: Path, per: int = 5, missing_every: int = 0, seed: int = 0) -> Path:
    """Pictures with two attributes: a colour (the background) and a shape (a light blob, round or square);
    every ``missing_every``-th picture lacks its shape label."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows, i = [], 0
    for colour, base in COLOURS.items():
        for shape in ("round", "square"):
            for k in range(per):
                image = Image.new("RGB", (40, 32), tuple(max(0, min(255, c + rng.randint(-30, 30))) for c in base))
                x, y = rng.randint(0, 20), rng.randint(0, 16)
                draw = ImageDraw.Draw(image)
                (draw.ellipse if shape == "round" else draw.rectangle)([x, y, x + 12, y + 12], fill=(240, 240, 240))
                image.save(root / f"{colour}_{shape}_{k}.png")
                i += 1
                rows.append([f"{colour}_{shape}_{k}.png", colour,
                             "" if missing_every and i % missing_every == 0 else shape])
    with (root / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "colour", "shape"])
        writer.writerows(rows)
    return root / "labels.csv"


def config_for(source, out, **train) -> RunConfig:
    train = TrainConfig(**{"batch_size": 4, "workers": 0, "augment": "none", "precision": "fp32", **train})
    return RunConfig(data=DataConfig(source=str(source), val_fraction=0.3), model=ModelConfig(MODEL, "none"),
                     strategy="fine-tune-deep", epochs=2, lr=0.01, train=train, out=str(out))


@pytest.fixture(scope="module")
def task_csv(tmp_path_factory) -> Path:
    return make_task_csv(tmp_path_factory.mktemp("tasks") / "pictures", missing_every=4)


@pytest.fixture(scope="module")
def task_run(task_csv, tmp_path_factory) -> Path:
    result = fit(config_for(task_csv, tmp_path_factory.mktemp("runs")))
    assert result.status == "completed", result.error
    return Path(result.run_dir)


# -- the data ----------------------------------------------------------------------------------------------------


def test_every_column_but_path_and_split_is_a_task_and_empty_cells_are_missing_labels(task_csv):
    index = mt.scan_tasks(task_csv, val_fraction=0.3)
    assert isinstance(index, mt.MultiTaskIndex)
    assert [t.name for t in index.tasks] == ["colour", "shape"]
    assert index.tasks[1].classes == ("round", "square")
    labels = index.task_labels()
    assert len(index.samples) == 30  # a picture lacking one label still trains the other task
    assert int((labels[:, 1] == mt.MISSING).sum()) == 7 and int((labels[:, 0] == mt.MISSING).sum()) == 0
    counts = index.task_counts()
    assert sum(counts["shape"]["train"].values()) + sum(counts["shape"]["val"].values()) == 30
    assert counts["shape"]["train"][""] + counts["shape"]["val"][""] == 7


def test_a_chosen_single_task_is_an_ordinary_run_and_an_unknown_task_is_a_sentence(task_csv):
    one = mt.scan_tasks(task_csv, ["shape"], val_fraction=0.3)
    assert type(one) is DatasetIndex and one.classes == ["round", "square"] and len(one.samples) == 23
    with pytest.raises(ConfigError, match="no column 'size'.*colour, shape"):
        mt.scan_tasks(task_csv, ["colour", "size"])
    assert not mt.wants_tasks(task_csv.parent)  # a folder: the ordinary scan


def test_codes_carry_every_tasks_label_and_missing_ones():
    tasks = [mt.Task("a", ("x", "y", "z")), mt.Task("b", ("p", "q"))]
    rows = [[0, 1], [2, mt.MISSING], [mt.MISSING, 0], [1, 1]]
    codes = torch.tensor([mt.encode(r, tasks) for r in rows])
    assert mt.decode(codes, tasks).tolist() == rows


# -- the loss ----------------------------------------------------------------------------------------------------


def test_a_missing_label_adds_no_loss_and_no_gradient_for_its_task():
    tasks = [mt.Task("a", ("x", "y", "z")), mt.Task("b", ("p", "q"))]
    loss_fn = mt.MultiTaskLoss(tasks, [1.0, 2.0])
    logits = torch.randn(3, 5, requires_grad=True)
    labels = [[0, 1], [2, mt.MISSING], [1, 0]]
    codes = torch.tensor([mt.encode(r, tasks) for r in labels])
    loss = loss_fn(logits, codes)
    expected = (F.cross_entropy(logits[:, :3], torch.tensor([0, 2, 1]))
                + 2.0 * F.cross_entropy(logits[[0, 2], 3:], torch.tensor([1, 0])))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.count_nonzero(logits.grad[1, 3:]) == 0  # picture 1 has no label for task b
    assert torch.count_nonzero(logits.grad[1, :3]) == 3


def test_uncertainty_weighting_learns_the_weights(task_csv, tmp_path):
    result = fit(config_for(task_csv, tmp_path, task_weighting="uncertainty"))
    assert result.status == "completed", result.error
    state = load_file(f"{result.run_dir}/best.safetensors")
    assert state["fc.log_vars"].shape == (2,) and torch.count_nonzero(state["fc.log_vars"]) == 2


def test_task_weights_must_name_tasks(task_csv, tmp_path):
    result = fit(config_for(task_csv, tmp_path, task_weights={"size": 2.0}))
    assert result.status == "failed" and "'size', which is not a task" in result.error


# -- the results -------------------------------------------------------------------------------------------------


def test_evaluation_has_each_task_and_keeps_the_single_task_keys(task_run):
    from engine.results.evaluate import evaluate_run, load_evaluation

    evaluation = evaluate_run(task_run, device="cpu")
    data = json.loads((task_run / "evaluation.json").read_text(encoding="utf-8"))
    assert set(data["tasks"]) == {"colour", "shape"}
    assert data["tasks"]["shape"]["classes"] == ["round", "square"]
    assert data["classes"] == ["blue", "green", "red"] and "val" in data["splits"]  # the first task's
    # Each task counts only its labelled pictures.
    samples = json.loads((task_run / "dataset.json").read_text(encoding="utf-8"))["samples"]
    tasks = mt.tasks_from_json(json.loads((task_run / "model.json").read_text(encoding="utf-8"))["tasks"])
    val = mt.decode(torch.tensor([s["label"] for s in samples if s["split"] == "val"]), tasks)
    assert data["tasks"]["shape"]["splits"]["val"]["pictures"] == int((val[:, 1] != mt.MISSING).sum())
    assert load_evaluation(task_run).tasks["shape"].splits["val"].accuracy == evaluation.tasks["shape"].splits[
        "val"].accuracy


def test_per_task_metrics_equal_a_single_task_evaluation_of_that_head(task_run, tmp_path):
    """The shape task, evaluated in the multi-task run, against the same backbone with only the shape head as an
    ordinary single-task run (the colour task ignored): the same numbers."""
    from engine.results.evaluate import evaluate_run

    multi = evaluate_run(task_run, device="cpu").tasks["shape"].splits["val"]
    single_dir = tmp_path / "single"
    shutil.copytree(task_run, single_dir, ignore=shutil.ignore_patterns("evaluation.json", "export"))
    info = json.loads((single_dir / "model.json").read_text(encoding="utf-8"))
    tasks = mt.tasks_from_json(info.pop("tasks"))
    info.pop("task_weighting"), info.pop("task_weights")
    info["num_classes"] = 2
    (single_dir / "model.json").write_text(json.dumps(info), encoding="utf-8")
    (single_dir / "labels.json").write_text(json.dumps(["round", "square"]), encoding="utf-8")
    dataset = json.loads((single_dir / "dataset.json").read_text(encoding="utf-8"))
    labels = mt.decode(torch.tensor([s["label"] for s in dataset["samples"]]), tasks)[:, 1].tolist()
    dataset["samples"] = [dict(s, label=y) for s, y in zip(dataset["samples"], labels) if y != mt.MISSING]
    dataset["classes"] = ["round", "square"]
    (single_dir / "dataset.json").write_text(json.dumps(dataset), encoding="utf-8")
    state = load_file(str(single_dir / "best.safetensors"))
    state = {k: v for k, v in state.items() if not k.startswith("fc.")} | {
        "fc.weight": state["fc.shape.weight"], "fc.bias": state["fc.shape.bias"]}
    save_file(state, str(single_dir / "best.safetensors"))
    single = evaluate_run(single_dir, device="cpu").splits["val"]
    assert single.count == multi.count and single.accuracy == multi.accuracy
    assert single.confusion == multi.confusion
    assert [(c.precision, c.recall, c.support) for c in single.per_class] == [
        (c.precision, c.recall, c.support) for c in multi.per_class]
    np.testing.assert_allclose([s.confidence for s in single.samples], [s.confidence for s in multi.samples],
                               rtol=1e-5)


def test_predictions_have_a_class_and_a_confidence_column_per_task(task_run, task_csv, tmp_path):
    from engine.results import multitask as rmt
    from engine.results.predict import load_run_model

    bundle = load_run_model(task_run, device="cpu")
    rows = rmt.predict_tasks(bundle, [task_csv.parent / "red_round_0.png", tmp_path / "gone.png"])
    path = rmt.write_task_csv(rows, tmp_path / "p.csv", rmt.tasks_of_bundle(bundle))
    table = list(csv.DictReader(path.open(encoding="utf-8")))
    assert list(table[0]) == ["path", "colour", "colour_confidence", "shape", "shape_confidence", "error"]
    assert table[0]["colour"] in COLOURS and table[0]["shape"] in ("round", "square")
    assert 0.0 < float(table[0]["colour_confidence"]) <= 1.0 and 0.5 <= float(table[0]["shape_confidence"]) <= 1.0
    assert table[1]["colour"] == "" and table[1]["error"] == "The file does not exist."


def test_onnx_export_has_one_output_per_task_named_after_it(task_run, task_csv):
    import onnxruntime as ort

    from engine.results.export import export_run
    from engine.results.predict import load_run_model

    result = export_run(task_run, "onnx", pictures=4)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["colour", "shape"]
    bundle = load_run_model(task_run, device="cpu")
    x = torch.stack([bundle.preprocess(task_csv.parent / f"{c}_square_1.png") for c in COLOURS])
    colour, shape = session.run(["colour", "shape"], {"input": x.numpy()})
    assert colour.shape == (3, 3) and shape.shape == (3, 2)
    with torch.inference_mode():
        reference = bundle.model(x)
    np.testing.assert_allclose(np.concatenate([colour, shape], 1), reference.numpy(), rtol=1e-4, atol=1e-4)
    meta = json.loads((Path(result.path).parent / "model.json").read_text(encoding="utf-8"))
    assert meta["onnx_outputs"]["shape"]["classes"] == ["round", "square"]
    export_run(task_run, "bundle", pictures=4)
    again = load_run_model(Path(result.path).parent, device="cpu")  # the exported bundle keeps its tasks
    assert again.kind == "bundle" and again.info["tasks"][1]["name"] == "shape"
    with torch.inference_mode():
        torch.testing.assert_close(again.model(x), reference)


def test_command_line_tasks_options(task_csv):
    import main

    args = main.build_parser().parse_args(["train", "--data", str(task_csv), "--model", MODEL, "--tasks",
                                           "shape,colour", "--task-weights", "shape=2", "--task-weighting", "fixed"])
    config = main.config_from_args(args)
    assert config.data.tasks == ("shape", "colour") and config.train.task_weights == {"shape": 2.0}
    bad = main.build_parser().parse_args(["train", "--data", "x", "--model", MODEL, "--task-weights", "shape"])
    with pytest.raises(ConfigError, match="task=weight"):
        main.config_from_args(bad)
