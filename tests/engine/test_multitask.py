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


# -- per task: the head fit, the temperature, the model card, the data doctor -----------------------------------


def test_each_task_head_is_solved_on_its_own_labelled_pictures():
    """The L-BFGS head fit, task by task: each head separates its task's classes on the stored outputs, and the
    pictures without a label for a task (their features say the opposite here) do not pull its head."""
    from types import SimpleNamespace

    from engine.train.task_fit import fit_task_heads

    tasks = [mt.Task("a", ("no", "yes")), mt.Task("b", ("x", "y", "z"))]
    g = torch.Generator().manual_seed(0)
    n = 90
    ya = torch.arange(n) % 2
    yb = torch.arange(n) % 3
    feats = torch.randn(n, 6, generator=g) * 0.1
    feats[:, 0] += ya * 2 - 1  # task a: feature 0
    feats[torch.arange(n), 1 + yb] += 2.0  # task b: features 1-3
    missing = torch.arange(n) % 5 == 0
    feats[missing, 0] = -(ya[missing] * 2 - 1).float() * 3  # unlabelled for a, and misleading for it
    codes = torch.tensor([mt.encode([mt.MISSING if m else int(a), int(b)], tasks)
                          for a, b, m in zip(ya, yb, missing)])
    head = mt.MultiTaskHead(6, tasks)
    suffix = torch.nn.Sequential(torch.nn.Dropout(0.2), head)
    fast = SimpleNamespace(split=SimpleNamespace(train_suffix=suffix),
                           train_set=SimpleNamespace(outputs=feats[None], labels=codes[None]),
                           val_loader=SimpleNamespace(dataset=SimpleNamespace(outputs=feats[None, ~missing],
                                                                              labels=codes[None, ~missing])))
    lines = []
    fits = fit_task_heads(fast, "head", 0.0, lines.append, tasks)
    assert set(fits) == {"a", "b"} and all(f.train_acc == 1.0 for f in fits.values())
    with torch.no_grad():
        out = head(feats)
    assert (out[~missing, 0:2].argmax(1) == ya[~missing]).all()
    assert (out[:, 2:5].argmax(1) == yb).all()
    assert any("Task 'a'" in line for line in lines) and any("Task 'b'" in line for line in lines)


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory) -> Path:
    """A feature-extraction (head only) multi-task run with enough validation pictures to calibrate each task."""
    source = make_task_csv(tmp_path_factory.mktemp("probe") / "pictures", per=12, missing_every=4, seed=1)
    config = config_for(source, tmp_path_factory.mktemp("runs"))
    config = dataclasses_replace(config, strategy="feature-extraction", epochs=1,
                                 data=DataConfig(source=str(source), val_fraction=0.4))
    lines = []
    result = fit(config, on_event=lambda e: lines.append(getattr(e, "message", "")))
    assert result.status == "completed", result.error
    (Path(result.run_dir) / "test-log.txt").write_text("\n".join(map(str, lines)), encoding="utf-8")
    return Path(result.run_dir)


def dataclasses_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def test_a_head_only_multi_task_run_fits_and_calibrates_every_task(probe_run):
    info = json.loads((probe_run / "model.json").read_text(encoding="utf-8"))
    assert set(info["task_temperatures"]) == {"colour", "shape"}
    assert all(0.2 <= t <= 10 for t in info["task_temperatures"].values())
    summary = json.loads((probe_run / "summary.json").read_text(encoding="utf-8"))
    calibration = summary["task_calibration"]
    assert set(calibration) == {"colour", "shape"}
    # Each task calibrated on its own labelled validation pictures only.
    tasks = mt.tasks_from_json(info["tasks"])
    samples = json.loads((probe_run / "dataset.json").read_text(encoding="utf-8"))["samples"]
    val = mt.decode(torch.tensor([s["label"] for s in samples if s["split"] == "val"]), tasks)
    assert calibration["shape"]["pictures"] == int((val[:, 1] != mt.MISSING).sum()) < len(val)
    assert calibration["colour"]["nll_after"] <= calibration["colour"]["nll_before"] + 1e-9
    log = (probe_run / "test-log.txt").read_text(encoding="utf-8")  # what the run said (the fixture kept it)
    assert "Task 'colour'" in log and "Task 'shape'" in log and "fitted to convergence" in log


def with_temperatures(run: Path, tmp_path: Path, temperatures: dict) -> Path:
    copy = tmp_path / "calibrated"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("evaluation.json", "export"))
    info = json.loads((copy / "model.json").read_text(encoding="utf-8"))
    info["task_temperatures"] = temperatures
    (copy / "model.json").write_text(json.dumps(info), encoding="utf-8")
    return copy


def test_predictions_evaluation_onnx_and_card_use_each_tasks_temperature(task_run, task_csv, tmp_path):
    import onnxruntime as ort

    from engine.results import multitask as rmt
    from engine.results.evaluate import evaluate_run
    from engine.results.export import CARD, export_run
    from engine.results.predict import load_run_model

    run = with_temperatures(task_run, tmp_path, {"colour": 2.0, "shape": 0.5})
    bundle = load_run_model(run, device="cpu")
    picture = task_csv.parent / "red_round_0.png"
    with torch.inference_mode():
        out = bundle.model(bundle.preprocess(picture)[None])[0].double()
    row = rmt.predict_tasks(bundle, [picture])[0]
    for (task, name, confidence), sl, t in zip(row.answers, mt.slices(rmt.tasks_of_bundle(bundle)), (2.0, 0.5)):
        expected = (out[sl] / t).softmax(0)  # log-probabilities over T: the task's calibrated softmax
        assert confidence == pytest.approx(float(expected.max()), abs=1e-5)
    assert row.prediction("shape").confidence == row.answers[1][2]
    from engine.results.predict import heat_map  # the heat map's sentence: the answer's probability within its task

    assert heat_map(bundle, picture, row.columns[1]).probability == pytest.approx(row.answers[1][2], abs=1e-5)

    evaluate_run(run, device="cpu")
    data = json.loads((run / "evaluation.json").read_text(encoding="utf-8"))
    colour = data["tasks"]["colour"]["splits"]["val"]
    assert colour["temperature"] == 2.0 and colour["ece_before"] is not None and colour["ece"] != colour["ece_before"]
    assert data["tasks"]["shape"]["splits"]["val"]["temperature"] == 0.5

    result = export_run(run, "onnx", pictures=4)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    colour_out, shape_out = session.run(["colour", "shape"], {"input": bundle.preprocess(picture)[None].numpy()})
    np.testing.assert_allclose(colour_out[0], (out[0:3] / 2.0).numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(shape_out[0], (out[3:5] / 0.5).numpy(), rtol=1e-4, atol=1e-4)
    card = (Path(result.path).parent / CARD).read_text(encoding="utf-8")
    assert card.splitlines()[0].endswith("for 2 tasks: colour (3 classes), shape (2 classes)")
    rows = {line.split("|")[1].strip(): line for line in card.splitlines() if line.startswith("| colour |")
            or line.startswith("| shape |")}
    assert "blue, green, red" in rows["colour"] and "round, square" in rows["shape"]
    shape = data["tasks"]["shape"]["splits"]["val"]
    assert f"{100 * shape['accuracy']:.1f} %" in rows["shape"] and f"{shape['ece']:.3f}" in rows["shape"]


def test_the_data_doctor_counts_and_judges_each_task_not_the_combinations(tmp_path):
    from engine.advise.task_doctor import diagnose_any

    source = make_task_csv(tmp_path / "pictures", per=8)  # 6 training pictures per combination, 12+ per class
    rows = list(csv.reader(source.open(encoding="utf-8")))
    # A third shape, drawn on two pictures only: too few for that task, whatever the colours.
    for row in rows[1:3]:
        row[2] = "star"
    with source.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    index = mt.scan_tasks(source, val_fraction=0.25)
    # The scan's health (the window's Data health): per task, never about a combination of labels.
    advice = [a.message for a in index.health.advice]
    assert any(m.startswith("Task 'shape'") and "star" in m for m in advice), advice
    assert all(m.startswith("Task '") and "\u00b7" not in m for m in advice), advice
    features = np.random.default_rng(0).normal(size=(len(index.samples), 8)).astype(np.float32)
    report = diagnose_any(index, features=features, weights="pretrained")
    data = report.to_dict()
    assert set(data["tasks"]) == {"colour", "shape"}
    assert data["tasks"]["shape"]["classes"] == ["round", "square", "star"]
    assert sum(data["tasks"]["shape"]["counts"]["train"].values()) + sum(
        data["tasks"]["shape"]["counts"]["val"].values()) == 48
    assert any("star" in a for a in data["tasks"]["shape"]["advice"])
    assert not data["tasks"]["colour"]["advice"]
    summary = " ".join(report.summary())
    assert "Task 'shape'" in summary and "\u00b7" not in summary  # no combination of labels named as a class
    assert all(x["given"].split(": ")[0] in ("colour", "shape") and "\u00b7" not in x["given"]
               for x in data["label_issues"])


def test_the_doctor_command_reads_a_task_csv(task_csv, capsys):
    import main

    code = main.main(["doctor", str(task_csv), "--model", MODEL, "--weights", "none", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["tasks"]) == {"colour", "shape"} and data["tasks"]["colour"]["counts"]["train"]
