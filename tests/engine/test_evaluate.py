"""Evaluation: metrics checked against values worked out by hand, and a whole run evaluated into evaluation.json."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_class_folders
from engine.project import runs
from engine.errors import UserError
from engine.results.evaluate import EVALUATION, calibration_bins, compute_split, evaluate_run, load_evaluation
from engine.results.predict import Stopped

# Eight pictures of three classes a, b, c: true label, class probabilities, and (worked out below) the prediction.
LABELS = [0, 0, 0, 1, 1, 2, 2, 2]
PROBS = [
    (0.90, 0.05, 0.05),  # a -> a, 0.90
    (0.62, 0.28, 0.10),  # a -> a, 0.62
    (0.20, 0.70, 0.10),  # a -> b, 0.70  mistake
    (0.08, 0.82, 0.10),  # b -> b, 0.82
    (0.05, 0.10, 0.85),  # b -> c, 0.85  mistake
    (0.02, 0.03, 0.95),  # c -> c, 0.95
    (0.30, 0.45, 0.25),  # c -> b, 0.45  mistake
    (0.15, 0.10, 0.75),  # c -> c, 0.75
]


@pytest.fixture(scope="module")
def split():
    return compute_split("val", ["a", "b", "c"], LABELS, np.array(PROBS), [f"p{i}.png" for i in range(8)], n_bins=5)


def test_metrics_match_the_values_worked_out_by_hand(split):
    # Confusion matrix, rows = true class, columns = predicted class:
    #   a: 2 a, 1 b        b: 1 b, 1 c        c: 1 b, 2 c
    assert split.confusion == [[2, 1, 0], [0, 1, 1], [0, 1, 2]]
    assert split.accuracy == pytest.approx(5 / 8)
    assert split.count == 8 and split.correct == 5
    # precision = diagonal / column sum (2/2, 1/3, 2/3); recall = diagonal / row sum (2/3, 1/2, 2/3)
    # F1 = 2PR / (P + R): a 2*(1)(2/3)/(5/3) = 0.8, b 2*(1/3)(1/2)/(5/6) = 0.4, c 2/3
    expected = {"a": (1.0, 2 / 3, 0.8, 3), "b": (1 / 3, 1 / 2, 0.4, 2), "c": (2 / 3, 2 / 3, 2 / 3, 3)}
    for c in split.per_class:
        p, r, f, n = expected[c.name]
        assert (c.precision, c.recall, c.f1) == (pytest.approx(p, abs=1e-6), pytest.approx(r, abs=1e-6),
                                                  pytest.approx(f, abs=1e-6))
        assert c.support == n
    assert split.macro_precision == pytest.approx((1 + 1 / 3 + 2 / 3) / 3, abs=1e-6)
    assert split.macro_recall == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3, abs=1e-6)
    assert split.macro_f1 == pytest.approx((0.8 + 0.4 + 2 / 3) / 3, abs=1e-6)
    assert split.weighted_f1 == pytest.approx((3 * 0.8 + 2 * 0.4 + 3 * 2 / 3) / 8, abs=1e-6)


def test_cells_and_mistakes_point_at_the_pictures(split):
    assert split.cell(0, 1) == [2]
    assert split.cell(2, 2) == [5, 7]  # most confident first: 0.95, 0.75
    assert split.cell(1, 0) == []
    assert split.mistakes == [4, 2, 6]  # 0.85, 0.70, 0.45
    wrong = split.samples[6]
    assert (wrong.path, wrong.label, wrong.predicted, wrong.correct) == ("p6.png", 2, 1, False)
    assert wrong.top == ((1, pytest.approx(0.45)), (0, pytest.approx(0.30)), (2, pytest.approx(0.25)))


def test_calibration_matches_the_hand_computation_and_torchmetrics(split):
    # Five bins of width 0.2. [0.4, 0.6): 0.45 wrong -> gap 0.45. [0.6, 0.8): 0.62 right, 0.70 wrong, 0.75 right ->
    # confidence 0.69, accuracy 2/3. [0.8, 1]: 0.90, 0.82, 0.95 right, 0.85 wrong -> confidence 0.88, accuracy 3/4.
    # ECE = (1 * 0.45 + 3 * |2/3 - 0.69| + 4 * |0.75 - 0.88|) / 8 = (0.45 + 0.07 + 0.52) / 8 = 0.13
    counts = [b.count for b in split.calibration]
    assert counts == [0, 0, 1, 3, 4]
    assert split.calibration[3].confidence == pytest.approx(0.69)
    assert split.calibration[3].accuracy == pytest.approx(2 / 3)
    assert split.calibration[4].confidence == pytest.approx(0.88)
    assert split.calibration[4].accuracy == pytest.approx(0.75)
    assert split.ece == pytest.approx(0.13)
    from torchmetrics.functional.classification import multiclass_calibration_error

    reference = multiclass_calibration_error(torch.tensor(PROBS, dtype=torch.float64), torch.tensor(LABELS),
                                             num_classes=3, n_bins=5)
    assert split.ece == pytest.approx(reference.item())


def test_a_confidence_of_one_counts_in_the_last_bin():
    bins, ece = calibration_bins(np.array([1.0, 1.0, 0.5]), np.array([True, False, True]), n_bins=10)
    assert bins[-1].count == 2 and bins[-1].accuracy == 0.5 and bins[-1].confidence == 1.0
    assert bins[5].count == 1
    assert ece == pytest.approx((2 * 0.5 + 1 * 0.5) / 3)


def test_a_class_missing_from_the_split_does_not_drag_the_macro_means():
    split = compute_split("data", ["a", "b", "c"], [0, 0, 1], np.array([(0.9, 0.1, 0), (0.2, 0.7, 0.1),
                                                                           (0.1, 0.8, 0.1)]))
    assert [c.support for c in split.per_class] == [2, 1, 0]
    assert split.macro_recall == pytest.approx((0.5 + 1.0) / 2)


# --- a whole run ----------------------------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tiny_run_data):
    return tiny_run_data


@pytest.fixture(scope="module")
def run_dir(tiny_run) -> Path:
    """A copy of the session's tiny trained run (see conftest)."""
    return tiny_run


def test_a_run_is_evaluated_on_its_own_validation_and_test_pictures(run_dir):
    progress = []
    evaluation = evaluate_run(run_dir, on_progress=lambda done, total: progress.append((done, total)), device="cpu")
    dataset = json.loads((run_dir / "dataset.json").read_text())
    assert list(evaluation.splits) == ["val", "test"]
    for name, split in evaluation.splits.items():
        recorded = sorted(s["path"] for s in dataset["samples"] if s["split"] == name)
        assert sorted(s.path for s in split.samples) == recorded  # exactly the run's split
        assert sum(map(sum, split.confusion)) == split.count == len(recorded)
        assert split.correct == sum(split.confusion[i][i] for i in range(3))
        assert [c.support for c in split.per_class] == [sum(row) for row in split.confusion]
        assert all(len(s.top) == 3 for s in split.samples)
    total = sum(s.count for s in evaluation.splits.values())
    assert progress[-1] == (total, total)
    # evaluation.json holds the same, and reads back.
    stored = json.loads((run_dir / EVALUATION).read_text())
    assert stored["splits"]["val"]["confusion"] == evaluation.splits["val"].confusion
    again = load_evaluation(run_dir)
    assert again.splits["test"].samples == evaluation.splits["test"].samples
    assert again.splits["val"].mistakes == evaluation.splits["val"].mistakes
    leftovers = [p for p in run_dir.iterdir() if p.name.startswith(".") and p.name != runs.LOCK]
    assert not leftovers  # no temporary file left behind (the run's lock file stays, see engine.project.runs.run_lock)


def test_the_accuracy_agrees_with_training(run_dir):
    # The trainer measured the same weights on the same validation pictures.
    summary = json.loads((run_dir / "summary.json").read_text())
    evaluation = evaluate_run(run_dir, device="cpu")
    assert evaluation.splits["val"].accuracy == pytest.approx(summary["best_val_acc"])


def test_another_folder_is_evaluated_by_class_name(run_dir, tmp_path):
    other = make_class_folders(tmp_path / "new", per_class=3, classes=("red", "blue"), seed=7)
    (other / "red" / "broken.png").write_bytes(b"not a picture")
    evaluation = evaluate_run(run_dir, data=other, device="cpu")
    split = evaluation.splits["data"]
    assert list(evaluation.splits) == ["data"] and evaluation.data == str(other)
    assert split.count == 6
    # The model's classes are blue, green, red: the folder's red pictures are class 2, its blue ones class 0.
    assert sorted({(Path(s.path).parent.name, s.label) for s in split.samples}) == [("blue", 0), ("red", 2)]
    assert [c.support for c in split.per_class] == [3, 0, 3]
    assert [Path(p).name for p, _ in split.unreadable] == ["broken.png"]
    assert load_evaluation(run_dir).data == str(other)


def test_a_folder_with_unknown_classes_is_refused_with_a_sentence(run_dir, tmp_path):
    other = make_class_folders(tmp_path / "new", per_class=2, classes=("red", "blue"))
    shutil.copytree(other / "red", other / "purple")
    with pytest.raises(UserError, match="'purple' is unknown to it"):
        evaluate_run(run_dir, data=other, device="cpu")


def test_unreadable_validation_pictures_are_left_out_and_listed(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    dataset = json.loads((copy / "dataset.json").read_text())
    val = [s for s in dataset["samples"] if s["split"] == "val"]
    broken = tmp_path / "gone.png"
    val[0]["path"] = str(broken)  # the picture was moved away since training
    (copy / "dataset.json").write_text(json.dumps(dataset))
    split = evaluate_run(copy, device="cpu").splits["val"]
    assert split.count == len(val) - 1
    assert split.unreadable == [(str(broken), "The file does not exist.")]
    for s in val:  # none readable at all: a sentence, not a crash
        s["path"] = str(broken)
    (copy / "dataset.json").write_text(json.dumps(dataset))
    with pytest.raises(UserError, match="None of the 6 validation pictures could be read"):
        evaluate_run(copy, device="cpu")


def test_stopping_writes_nothing(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / EVALUATION).unlink(missing_ok=True)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped, match="stopped"):
        evaluate_run(copy, stop=stop, device="cpu")
    assert not (copy / EVALUATION).exists()


def test_a_folder_that_is_not_a_run_gets_a_sentence(tmp_path):
    with pytest.raises(UserError, match="is not a run folder"):
        evaluate_run(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        evaluate_run(tmp_path / "nothing")
