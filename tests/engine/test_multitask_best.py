"""A multi-task run's best epoch per task (issue #17): with the backbone frozen, each task's head is kept from the
epoch best for that task (as its single-task run would keep it); where the backbone trains, one best epoch stays."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.config import DataConfig, Phase
from engine.events import Log
from engine.models.layers import HEAD
from engine.train import loop
from engine.train import multitask as mt
from engine.train.checkpoint import Live, RunState
from engine.train.task_fit import TaskBest
from engine.train.trainer import fit

from tests.engine.test_multitask import config_for, make_task_csv

pytestmark = pytest.mark.usefixtures("quick_training")

TASKS = [mt.Task("insect", ("ant", "bee")), mt.Task("light", ("dark", "bright"))]


class Folder:
    """The run folder as the loop uses it: best.safetensors written from the model as it is at that moment."""

    def __init__(self, path: Path):
        self.path, self.summary_extra, self.metrics = path, {}, []

    def save_best(self, model):
        save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
                  str(self.path / "best.safetensors"))

    def append_metrics(self, record):
        self.metrics.append(record)

    def write_running(self):
        pass


def session_for(model, phases, folder):
    criterion = mt.MultiTaskLoss(TASKS, [1.0, 1.0], head=mt.head_of(model))
    state = RunState()
    criterion.task_best = TaskBest(TASKS, phases, model, state.records, folder)
    marks = []
    checkpoints = SimpleNamespace(folder=folder, save=marks.append)
    s = SimpleNamespace(state=state, criterion=criterion, checkpoints=checkpoints, model=model,
                        train=SimpleNamespace(early_stopping=0), total_epochs=2, emit=lambda event: None,
                        log=lambda *a: None)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    live = Live(0, phases[0], optimizer, None, None, True, {})
    return s, live, marks


def epoch(s, live, weights: dict[str, float], accuracy: dict[str, float]):
    """One epoch's end: the heads' weights as training left them (every weight ``weights[task]``), and the
    validation pass's figures (10 pictures per task, ``accuracy[task]`` of them right)."""
    head = mt.head_of(s.model)
    with torch.no_grad():
        for key, task in zip(head.keys, TASKS):
            getattr(head, key).weight.fill_(weights[task.name])
    s.criterion.tally = [[1.0, round(accuracy[t.name] * 10), 10] for t in TASKS]
    mean = sum(accuracy.values()) / len(accuracy)
    s.state.epoch += 1
    loop._end_epoch(s, live, 0.0, (0.5, 0.5), (1.0, mean))


def model_with_heads():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    mt.install_head(model, "2", TASKS)
    return model


def test_with_a_frozen_backbone_each_task_keeps_the_head_of_its_own_best_epoch(tmp_path):
    """insect is best in epoch 1, light in epoch 2; the mean accuracy is best in epoch 2, which a run with one best
    epoch would keep for both tasks (insect 0.7 instead of its 0.9)."""
    model = model_with_heads()
    s, live, marks = session_for(model, (Phase("head", 2, 0.01, {HEAD: 1.0}),), Folder(tmp_path))
    epoch(s, live, {"insect": 1.0, "light": 1.0}, {"insect": 0.9, "light": 0.5})
    epoch(s, live, {"insect": 2.0, "light": 2.0}, {"insect": 0.7, "light": 0.8})
    saved = load_file(str(tmp_path / "best.safetensors"))
    assert float(saved["2.insect.weight"].unique()) == 1.0  # insect's head from epoch 1
    assert float(saved["2.light.weight"].unique()) == 2.0  # light's from epoch 2
    # the backbone as it is
    assert float(saved["0.weight"].sum()) == pytest.approx(float(model[0].weight.detach().sum()))
    # The model itself goes on training from where it is (its heads were only lent to the saved file).
    assert float(model[2].insect.weight.detach().unique()) == 2.0
    best = s.checkpoints.folder.summary_extra["task_best"]
    assert best == {"insect": {"epoch": 1, "val_acc": 0.9, "val_loss": 0.1},
                    "light": {"epoch": 2, "val_acc": 0.8, "val_loss": 0.1}}
    assert s.state.best_acc == pytest.approx(0.85) and s.state.best_epoch == 2
    # Each epoch's record has each task's figures; the checkpoint knows the model is not the best weights now.
    assert [r["tasks"]["insect"]["val_acc"] for r in s.state.records] == [0.9, 0.7]
    assert [m.best_is_model for m in marks] == [True, False]


def test_where_the_backbone_trains_the_run_keeps_one_best_epoch(tmp_path):
    model = model_with_heads()
    phases = (Phase("head", 1, 0.01, {HEAD: 1.0}), Phase("+body", 1, 0.01, {HEAD: 1.0, "body": 0.1}))
    s, live, _ = session_for(model, phases, Folder(tmp_path))
    epoch(s, live, {"insect": 1.0, "light": 1.0}, {"insect": 0.9, "light": 0.5})
    epoch(s, live, {"insect": 2.0, "light": 2.0}, {"insect": 0.7, "light": 0.8})
    saved = load_file(str(tmp_path / "best.safetensors"))
    assert float(saved["2.insect.weight"].unique()) == 2.0 and float(saved["2.light.weight"].unique()) == 2.0
    assert s.checkpoints.folder.summary_extra["task_best"]["insect"] == {"epoch": 2, "val_acc": 0.7,
                                                                         "val_loss": 0.1}
    assert s.checkpoints.folder.summary_extra["best_epoch_per_task"] is False


def test_a_resumed_run_takes_each_tasks_best_from_its_records_and_best_weights(tmp_path):
    """After a resume, an epoch worse for insect than its best before must not replace insect's head."""
    model = model_with_heads()
    phases = (Phase("head", 3, 0.01, {HEAD: 1.0}),)
    s, live, _ = session_for(model, phases, Folder(tmp_path))
    epoch(s, live, {"insect": 1.0, "light": 1.0}, {"insect": 0.9, "light": 0.5})
    records = list(s.state.records)
    resumed = model_with_heads()
    s2, live2, _ = session_for(resumed, phases, Folder(tmp_path))
    s2.criterion.task_best = TaskBest(TASKS, phases, resumed, records, s2.checkpoints.folder)
    s2.state.records, s2.state.epoch = records, 1
    s2.state.best_acc, s2.state.best_loss, s2.state.best_epoch = 0.7, 0.1, 1
    epoch(s2, live2, {"insect": 3.0, "light": 3.0}, {"insect": 0.6, "light": 0.6})
    saved = load_file(str(tmp_path / "best.safetensors"))
    assert float(saved["2.insect.weight"].unique()) == 1.0 and float(saved["2.light.weight"].unique()) == 3.0


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory) -> Path:
    """A feature-extraction (heads only) multi-task run of a few epochs."""
    source = make_task_csv(tmp_path_factory.mktemp("frozen") / "pictures", per=8, missing_every=4, seed=2)
    config = dataclasses.replace(config_for(source, tmp_path_factory.mktemp("runs"), fit_head=False),
                                 strategy="feature-extraction", epochs=4, lr=0.05,
                                 data=DataConfig(source=str(source), val_fraction=0.4))
    lines = []
    result = fit(config, on_event=lambda e: lines.append(e.message) if isinstance(e, Log) else None)
    assert result.status == "completed", result.error
    (Path(result.run_dir) / "test-log.txt").write_text("\n".join(lines), encoding="utf-8")
    return Path(result.run_dir)


def test_a_frozen_backbone_run_reports_and_evaluates_each_task_at_its_best_epoch(frozen_run):
    from engine.results.evaluate import evaluate_run

    records = [json.loads(line) for line in (frozen_run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    summary = json.loads((frozen_run / "summary.json").read_text(encoding="utf-8"))
    assert summary["best_epoch_per_task"] is True
    evaluation = evaluate_run(frozen_run, device="cpu")
    for task in ("colour", "shape"):
        figures = [(r["tasks"][task]["val_acc"], -r["tasks"][task]["val_loss"], -r["epoch"]) for r in records]
        acc, _, epoch_ = max(figures)
        assert summary["task_best"][task]["epoch"] == -epoch_
        assert summary["task_best"][task]["val_acc"] == pytest.approx(acc)
        # The saved model gives each task the accuracy of its own best epoch.
        assert evaluation.tasks[task].splits["val"].accuracy == pytest.approx(acc, abs=1e-6)
    log = (frozen_run / "test-log.txt").read_text(encoding="utf-8")
    assert "2 tasks: colour (3 classes), shape (2 classes)" in log
    assert "each task keeps its own best epoch" in log
