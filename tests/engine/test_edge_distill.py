"""Distillation (engine.edge.distill): the loss is the cross-entropy when the soft weight is 0 and follows the teacher
otherwise; a distilled student is a normal, complete run (evaluate, predict, export, resume work) with its
teacher-vs-student table; the command line prints the new run folder last and refuses bad input with a sentence."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import make_class_folders
from engine import events as ev
from engine.config import DEFAULT_FEATURE_WEIGHT, DistillConfig, RunConfig, dumps, loads
from engine.edge.distill import TABLE, DistillationLoss, distill, distill_config

pytestmark = pytest.mark.usefixtures("quick_training")

STUDENT = "timm:test_efficientnet"


def _targets(classes, labelled=None):
    n = len(classes)
    labelled = labelled if labelled is not None else [1] * n
    return torch.stack([torch.tensor(classes), torch.arange(n), torch.tensor(labelled)], 1)


def test_with_a_soft_weight_of_0_the_loss_is_the_cross_entropy():
    torch.manual_seed(0)
    logits, teacher = torch.randn(6, 3), torch.randn(6, 3).log_softmax(1)
    classes = [0, 1, 2, 2, 1, 0]
    for smoothing in (0.0, 0.1):
        loss = DistillationLoss(teacher, temperature=4.0, soft_weight=0.0, label_smoothing=smoothing)
        expected = F.cross_entropy(logits, torch.tensor(classes), label_smoothing=smoothing)
        assert torch.allclose(loss(logits, _targets(classes)), expected)
        assert torch.allclose(loss(logits, torch.tensor(classes)), expected)  # plain labels too


def test_the_soft_term_pulls_the_student_to_the_teacher_at_its_temperature():
    torch.manual_seed(1)
    teacher_logits = torch.randn(4, 3) * 3
    teacher = teacher_logits.log_softmax(1)
    classes = [0, 1, 2, 0]
    only_soft = DistillationLoss(teacher, temperature=2.0, soft_weight=1.0)
    # A student that gives the teacher's own logits has nothing left to learn from it...
    assert only_soft(teacher_logits.clone(), _targets(classes)).item() == pytest.approx(0.0, abs=1e-6)
    # ...and otherwise the loss is T^2 times the KL divergence at temperature T (Hinton et al., 2015).
    student = torch.randn(4, 3)
    kl = F.kl_div((student / 2).log_softmax(1), (teacher_logits / 2).softmax(1), reduction="batchmean")
    assert only_soft(student, _targets(classes)).item() == pytest.approx(4 * kl.item(), rel=1e-5)
    half = DistillationLoss(teacher, temperature=2.0, soft_weight=0.5)
    ce = F.cross_entropy(student, torch.tensor(classes))
    assert half(student, _targets(classes)).item() == pytest.approx(0.5 * ce.item() + 0.5 * 4 * kl.item(), rel=1e-5)


def test_unlabelled_pictures_teach_through_the_soft_targets_only():
    torch.manual_seed(2)
    logits, teacher = torch.randn(4, 3), torch.randn(4, 3).log_softmax(1)
    loss = DistillationLoss(teacher, temperature=1.0, soft_weight=0.0)
    # Pictures 2 and 3 are unlabelled: the hard term is the mean over pictures 0 and 1 only.
    mixed = loss(logits, _targets([0, 1, 2, 2], labelled=[1, 1, 0, 0]))
    assert mixed.item() == pytest.approx(F.cross_entropy(logits[:2], torch.tensor([0, 1])).item(), rel=1e-6)


def test_the_distill_section_round_trips_and_stays_out_of_ordinary_configs():
    assert "[distill]" not in dumps(RunConfig())
    config = RunConfig(distill=DistillConfig(teacher="/runs/teacher", temperature=3.0, soft_weight=0.5,
                                             feature_weight=2.5))
    assert loads(dumps(config)).distill == config.distill
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match="between 0 and 1"):
        RunConfig(distill=DistillConfig(teacher="x", soft_weight=1.5)).validate()
    with pytest.raises(ConfigError, match="features must be between 0"):
        RunConfig(distill=DistillConfig(teacher="x", feature_weight=-1)).validate()
    # A run written before the features term existed reads back without it.
    old = dumps(RunConfig(distill=DistillConfig(teacher="/runs/teacher"))).replace("feature_weight = 0.0\n", "")
    assert "feature_weight" not in old and loads(old).distill.feature_weight == 0


# --- a real distillation ------------------------------------------------------------------------------------------


class Recorder:
    def __init__(self, stop_after_epoch: int | None = None):
        self.events, self.stop = [], threading.Event()
        self.stop_after_epoch = stop_after_epoch

    def __call__(self, event):
        self.events.append(event)
        if isinstance(event, ev.EpochEnded) and event.epoch == self.stop_after_epoch:
            self.stop.set()

    def logs(self) -> str:
        return "\n".join(e.message for e in self.events if isinstance(e, ev.Log))


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    return make_class_folders(tmp_path_factory.mktemp("pool") / "unlabelled", per_class=2, seed=7)


def test_a_distilled_student_is_a_complete_normal_run_with_its_table(tiny_run, pool, tmp_path):
    from engine.results.evaluate import evaluate_run
    from engine.results.export import export_run
    from engine.results.predict import load_run_model, predict_paths

    config = distill_config(tiny_run, STUDENT, "none", epochs=1, pool=str(pool), out=str(tmp_path / "runs"))
    rec = Recorder()
    done = distill(config, rec, rec.stop, latency_rounds=3)
    assert done.run.status == "completed", done.run.error
    student = Path(done.run.run_dir)
    normal = {p.name for p in tiny_run.iterdir() if p.is_file()}
    assert normal <= {p.name for p in student.iterdir()}  # every file a normal run has
    assert "Distillation: the teacher" in rec.logs() and "6 unlabelled pictures" in rec.logs()
    # The student's BatchNorm statistics were measured on the training pictures before its first step.
    assert "BatchNorm recalibration" in rec.logs() and "weights are unchanged" in rec.logs()
    assert "[distill]" in (student / "config.toml").read_text(encoding="utf-8")
    # New runs would learn from the teacher's features too, but these two models prepare pictures differently: the
    # teacher's features on other pictures than the student's would mislead, and the log says they are not used.
    assert loads((student / "config.toml").read_text(encoding="utf-8")).distill.feature_weight == DEFAULT_FEATURE_WEIGHT
    assert "The feature weight is not used" in rec.logs()
    table = json.loads((student / TABLE).read_text(encoding="utf-8"))
    assert table == done.table
    assert table["teacher"]["model"] == "timm:test_resnet" and table["student"]["model"] == STUDENT
    assert table["student"]["parameters"] < table["teacher"]["parameters"]
    assert table["student"]["file_bytes"] < table["teacher"]["file_bytes"]
    assert table["student"]["latency_ms"] > 0 and 0 <= table["student"]["accuracy"] <= 1
    # evaluate, predict and export treat it like any run
    evaluation = evaluate_run(student, device="cpu")
    assert evaluation.splits["val"].count == table["pictures"]
    pictures = sorted(str(p) for p in pool.rglob("*.png"))
    assert all(p.class_name is not None for p in predict_paths(load_run_model(student, "cpu"), pictures))
    assert Path(export_run(student, "bundle").path).is_file()


def test_a_stopped_distillation_resumes_as_a_distillation(tiny_run, tmp_path):
    from engine.train.trainer import resume

    config = distill_config(tiny_run, STUDENT, "none", epochs=2, out=str(tmp_path / "runs"))
    first = Recorder(stop_after_epoch=1)
    done = distill(config, first, first.stop, latency_rounds=3)
    assert done.run.status == "stopped" and done.table is None
    second = Recorder()
    result = resume(done.run.run_dir, second, second.stop)
    assert result.status == "completed", result.error
    assert result.epochs_completed == 2
    assert "Distillation: the teacher" in second.logs()  # the teacher's soft targets again, not the labels alone
    assert "BatchNorm recalibration" in first.logs()
    assert "BatchNorm recalibration" not in second.logs()  # a resumed run keeps the statistics it trained with


def test_a_resumed_distillation_writes_its_table_again(tiny_run, tmp_path, capsys, monkeypatch):
    import main
    from engine.edge import distill as edge_distill

    monkeypatch.setattr(edge_distill, "LATENCY_ROUNDS", 3)
    config = distill_config(tiny_run, STUDENT, "none", epochs=2, out=str(tmp_path / "runs"))
    first = Recorder(stop_after_epoch=1)
    done = distill(config, first, first.stop, latency_rounds=3)
    assert done.run.status == "stopped" and done.table is None
    student = Path(done.run.run_dir)
    # A table left from before (made by hand, or by an older version): it must not survive the resumed run.
    (student / TABLE).write_text(json.dumps({"student": {"accuracy": -1}}), encoding="utf-8")
    assert main.main(["train", "--resume", str(student)]) == 0
    captured = capsys.readouterr()
    table = json.loads((student / TABLE).read_text(encoding="utf-8"))
    summary = json.loads((student / "summary.json").read_text(encoding="utf-8"))
    assert summary["epochs_completed"] == 2
    assert table["student"]["run"] == str(student) and table["teacher"]["run"] == str(tiny_run.resolve())
    assert 0 <= table["student"]["accuracy"] <= 1 and table["student"]["latency_ms"] > 0
    assert "teacher-vs-student table, measured again" in captured.out + captured.err


def test_the_command_prints_the_table_and_the_new_run_folder_last(tiny_run, tmp_path, capsys):
    import main

    code = main.main(["distill", str(tiny_run), "--student", STUDENT, "--weights", "none", "--epochs", "1",
                      "--out", str(tmp_path / "runs"), "--soft-weight", "0.5", "--feature-weight", "0"])
    captured = capsys.readouterr()
    out = captured.out.strip().splitlines()
    assert code == 0, captured.err
    run_dir = Path(out[-1].rsplit(": ", 1)[-1])
    assert run_dir.is_dir() and run_dir.parent == tmp_path / "runs" and (run_dir / TABLE).is_file()
    assert any(line.startswith("accuracy") for line in out) and any("CPU latency" in line for line in out)
    distilled = loads((run_dir / "config.toml").read_text(encoding="utf-8")).distill
    assert distilled.soft_weight == 0.5 and distilled.feature_weight == 0


@pytest.mark.parametrize("argv, words", [
    (["distill", "{missing}", "--student", STUDENT, "--weights", "none"], "does not exist"),
    (["distill", "{run}", "--student", "timm:no_such_model", "--weights", "none"], "no_such_model"),
    (["distill", "{run}", "--student", STUDENT, "--weights", "none", "--soft-weight", "2"], "between 0 and 1"),
    (["distill", "{run}", "--student", STUDENT, "--weights", "none", "--pool", "{missing}"], "does not exist"),
    (["distill", "{run}", "--student", STUDENT, "--weights", "none", "--feature-weight", "-1"], "between 0 and 1000"),
])
def test_bad_input_is_a_sentence_and_exit_code_2(tiny_run, tmp_path, capsys, argv, words):
    import main

    argv = [a.format(run=tiny_run, missing=tmp_path / "nowhere") for a in argv]
    assert main.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and words in err
