"""Predicting a folder whose sub-folders are named like the model's classes: each picture's true class comes from its
folder, the summary counts pictures correctly and gives the accuracy over them, and the CSV and the command line say
the same, with the CSV's existing columns unchanged (new ones at the end, only when a true class is known)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

import main
from engine.results.predict import (Prediction, load_run_model, predict_paths, summary_line, tally, true_class_of,
                                    write_csv)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = ("ants", "bees", "Wasps", "wasps")
OLD_HEADER = ["path", "prediction", "confidence", "top2", "top2_confidence", "top3", "top3_confidence", "error"]


def test_the_nearest_sub_folder_named_like_a_class_is_the_true_class(tmp_path):
    new = tmp_path / "new"
    assert true_class_of(new / "ants" / "1.jpg", [new], CLASSES) == "ants"
    assert true_class_of(new / "ANTS" / "1.jpg", [new], CLASSES) == "ants"  # case does not matter
    assert true_class_of(new / "ants" / "day 2" / "1.jpg", [new], CLASSES) == "ants"  # deeper folders are fine
    assert true_class_of(new / "bees" / "Ants" / "1.jpg", [new], CLASSES) == "ants"  # the nearest folder wins
    assert true_class_of(new / "wasps" / "1.jpg", [new], CLASSES) == "wasps"  # an exact match first
    assert true_class_of(new / "WASPS" / "1.jpg", [new], CLASSES) is None  # names two classes: neither
    assert true_class_of(new / "1.jpg", [new], CLASSES) is None  # directly in the given folder
    assert true_class_of(new / "others" / "1.jpg", [new], CLASSES) is None
    # The given folder itself and the folders above it say nothing: only its sub-folders sort pictures.
    assert true_class_of(tmp_path / "ants" / "1.jpg", [tmp_path / "ants"], CLASSES) is None
    assert true_class_of(tmp_path / "bees" / "new" / "1.jpg", [tmp_path / "bees" / "new"], CLASSES) is None
    assert true_class_of(tmp_path / "elsewhere" / "ants" / "1.jpg", [new], CLASSES) is None  # not given
    # Of nested given folders, the deepest holding the picture counts.
    assert true_class_of(new / "ants" / "bees" / "1.jpg", [new, new / "ants"], CLASSES) == "bees"
    assert true_class_of(new / "ants" / "1.jpg", [new, new / "ants"], CLASSES) is None


def test_summary_counts_pictures_and_gives_the_accuracy():
    read = Prediction("a/ants/1.jpg", "ants", 0, 0.9, (("ants", 0.9),), true_class="ants")
    wrong = Prediction("a/ants/2.jpg", "bees", 1, 0.6, (("bees", 0.6),), true_class="ants")
    unknown = Prediction("a/3.jpg", "bees", 1, 0.7, (("bees", 0.7),))
    broken = Prediction("a/ants/4.jpg", error="The file is empty.", true_class="ants")
    assert (read.correct, wrong.correct, unknown.correct, broken.correct) == (True, False, None, None)
    assert summary_line([unknown]) == "1 picture predicted"
    assert summary_line([unknown, unknown]) == "2 pictures predicted"
    assert summary_line([read, wrong, unknown, broken]) == (
        "4 pictures: 3 predicted, 1 could not be read; accuracy 50 % on 2 pictures whose folder names their class")
    assert summary_line([read, broken]) == (
        "2 pictures: 1 predicted, 1 could not be read; accuracy 100 % on 1 picture whose folder names its class")
    assert summary_line([unknown], unreadable_always=True) == "1 picture: 1 predicted, 0 could not be read"
    t = tally([read, wrong, unknown, broken])
    assert (t.total, t.predicted, t.unreadable, t.known, t.right, t.accuracy) == (4, 3, 1, 2, 1, 0.5)


@pytest.fixture(scope="module")
def sorted_folder(tiny_run_data, tmp_path_factory) -> Path:
    """new/ with the run's class folders (one in capitals), a picture outside them and an unreadable one inside."""
    new = tmp_path_factory.mktemp("truth") / "new"
    for name, folder in (("blue", "blue"), ("green", "GREEN"), ("red", "red")):
        (new / folder).mkdir(parents=True)
        for picture in sorted((tiny_run_data / name).glob("*.png"))[:3]:
            shutil.copy(picture, new / folder / picture.name)
    shutil.copy(next((tiny_run_data / "red").glob("*.png")), new / "loose.png")
    (new / "red" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return new


def test_a_folder_sorted_by_class_gives_true_classes_accuracy_and_csv_columns(tiny_run, sorted_folder, tmp_path):
    bundle = load_run_model(tiny_run, device="cpu")
    rows = predict_paths(bundle, [sorted_folder])
    by_name = {Path(p.path).name: p for p in rows}
    assert len(rows) == 11
    assert by_name["loose.png"].true_class is None
    assert by_name["broken.jpg"].true_class == "red" and by_name["broken.jpg"].error
    for p in rows:
        if p.path.endswith(".png") and p.true_class is not None:
            assert p.true_class == Path(p.path).parent.name.lower()
            assert p.correct == (p.class_name == p.true_class)
    known = [p for p in rows if p.error is None and p.true_class is not None]
    right = sum(p.class_name == p.true_class for p in known)
    assert len(known) == 9
    assert summary_line(rows) == (f"11 pictures: 10 predicted, 1 could not be read; accuracy "
                                  f"{100 * right / 9:.0f} % on 9 pictures whose folder names their class")

    with_truth = write_csv(rows, tmp_path / "with.csv")
    with with_truth.open(newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == OLD_HEADER + ["true_class", "correct"]
    for p, r in zip(rows, table):
        assert r["path"] == p.path and r["true_class"] == (p.true_class or "")
        assert r["correct"] == {True: "yes", False: "no", None: ""}[p.correct]

    # The pictures given one by one: no true class, and the CSV keeps exactly its columns.
    plain = predict_paths(bundle, [p.path for p in rows if p.error is None][:3])
    assert all(p.true_class is None for p in plain)
    assert summary_line(plain) == "3 pictures predicted"
    with write_csv(plain, tmp_path / "plain.csv").open(newline="") as f:
        assert next(csv.reader(f)) == OLD_HEADER


def test_the_command_line_prints_the_accuracy_and_writes_the_columns(tiny_run, sorted_folder, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert main.main(["predict", str(tiny_run), str(sorted_folder), "--csv", str(out), "--device", "cpu"]) == 0
    rows = predict_paths(load_run_model(tiny_run, device="cpu"), [sorted_folder])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"{summary_line(rows, unreadable_always=True)}; CSV written to {out}"
    assert "accuracy" in last and "on 9 pictures whose folder names their class" in last
    with out.open(newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == OLD_HEADER + ["true_class", "correct", "ood_score", "in_domain"]  # + engine.shift.ood
    assert [r["true_class"] for r in table] == [p.true_class or "" for p in rows]
    # Without --csv, each picture's line says whether the model was right.
    assert main.main(["predict", str(tiny_run), str(sorted_folder), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "[true class red: " in printed and "loose.png: " in printed
