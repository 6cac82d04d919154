"""Labels: kept in a CSV beside the project (atomically), "none of these" kept but never trained on, labelled pool
pictures join training with their labels, rounds recorded, the project holds its pool and labels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import make_class_folders
from engine.active import (NONE_OF_THESE, copy_into_class_folders, joined_config, labels_path_for, read_labels,
                           read_rounds, retrain, scan_pool)
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.config import load as load_config
from engine.errors import UserError
from engine.project.project import new_project, open_project, save_project

pytestmark = pytest.mark.usefixtures("quick_training")


@pytest.fixture
def pool(tmp_path) -> Path:
    return make_class_folders(tmp_path / "pool", per_class=3, seed=11)


def test_labels_round_trip_through_the_csv(tmp_path, pool):
    paths = scan_pool(pool).paths
    labels = read_labels(tmp_path / "project-labels.csv")
    assert len(labels) == 0  # no file yet: nothing answered
    labels.set(paths[0], "red")
    labels.set(paths[1:3], "green")
    labels.set(paths[3], NONE_OF_THESE)
    labels.set(paths[0], "blue")  # a changed answer replaces the first
    labels.save()
    rows = list(csv.reader((tmp_path / "project-labels.csv").open()))
    assert rows[0] == ["path", "label"] and len(rows) == 5
    assert rows[-1][1] == "blue" and rows[-2][1] == NONE_OF_THESE
    assert rows[1][0] == str(Path(paths[1]).relative_to(tmp_path).as_posix())  # relative inside the folder
    again = read_labels(tmp_path / "project-labels.csv")
    assert again.answers == labels.answers
    assert again.label_of(paths[0]) == "blue" and paths[3] in again
    assert set(again.labelled()) == {str(Path(p)) for p in (paths[0], paths[1], paths[2])}
    assert again.none_of_these() == [paths[3]]
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file
    (tmp_path / "bad.csv").write_text("file,class\nx,y\n")
    with pytest.raises(UserError, match="path,label"):
        read_labels(tmp_path / "bad.csv")


def test_labelled_pictures_can_be_copied_into_class_folders(tmp_path, pool):
    paths = scan_pool(pool).paths
    labels = read_labels(tmp_path / "l.csv")
    labels.set(paths[0], "red")
    labels.set(paths[1], NONE_OF_THESE)
    data = tmp_path / "data"
    written = copy_into_class_folders(labels, data)
    assert written == [str(data / "red" / Path(paths[0]).name)]
    assert copy_into_class_folders(labels, data) == []  # already there: not copied twice
    assert not (data / NONE_OF_THESE).exists()


def test_labelled_pool_pictures_join_training_and_none_of_these_stay_out(tmp_path, tiny_dataset, pool):
    paths = scan_pool(pool).paths
    config = RunConfig(data=DataConfig(source=str(tiny_dataset), val_fraction=0.25),
                       model=ModelConfig("timm:test_resnet", "none"), strategy="feature-extraction", epochs=1,
                       train=TrainConfig(batch_size=8, workers=0, augment="none"), out=str(tmp_path / "runs"))
    labels = read_labels(tmp_path / "p-labels.csv")
    blue_pool = [p for p in paths if "/blue/" in p]
    red_pool = [p for p in paths if "/red/" in p]
    labels.set(blue_pool, "blue")
    labels.set(red_pool[0], NONE_OF_THESE)
    labels.set(red_pool[1], "purple")  # not a class of the data
    joined, summary = joined_config(config, labels)
    assert summary.joined == 3 and summary.none_of_these == 1 and summary.unknown == {"purple": 1}
    assert "3 labelled pool pictures join training" in summary.sentence()
    result, _, round_ = retrain(config, labels)
    assert result.status == "completed", result.error
    trained = json.loads((Path(result.run_dir) / "dataset.json").read_text())
    classes = trained["classes"]
    rows = {s["path"]: (classes[s["label"]], s["split"]) for s in trained["samples"]}
    for p in blue_pool:
        assert rows[p] == ("blue", "train")
    assert red_pool[0] not in rows and red_pool[1] not in rows
    original = {str(p) for p in tiny_dataset.rglob("*.png")}
    assert original <= set(rows)  # the data's own pictures are all there ...
    before, _ = joined_config(config, read_labels(tmp_path / "none-yet.csv"))
    first = json.loads(json.dumps([r for r in csv.DictReader(open(before.data.source))]))
    val_before = {r["path"] for r in first if r["split"] == "val"}
    assert val_before == {p for p, (_, split) in rows.items() if split == "val"}  # ... measured on the same pictures
    assert round_ is not None and round_.pool_labelled == 3
    assert read_rounds(labels)[-1].run_dir == result.run_dir
    assert Path(result.run_dir, "config.toml").read_text().count(summary.csv) == 1  # the run can be repeated


def test_retrain_needs_a_label(tmp_path, tiny_dataset):
    config = RunConfig(data=DataConfig(source=str(tiny_dataset)), out=str(tmp_path / "runs"))
    labels = read_labels(tmp_path / "l.csv")
    labels.set(str(tmp_path / "x.png"), NONE_OF_THESE)
    with pytest.raises(UserError, match="label a few pictures first"):
        retrain(config, labels)


def test_the_project_holds_its_pool_and_labels(tmp_path, tiny_dataset, pool):
    project = new_project(tiny_dataset, data_dir=tmp_path / "app")
    assert labels_path_for(project).parent == Path(project.config.out).parent  # unsaved: in the app's data folder
    (tmp_path / "proj").mkdir()
    saved = save_project(project, tmp_path / "proj" / "mine.tsproj", data_dir=tmp_path / "app")
    assert labels_path_for(saved) == tmp_path / "proj" / "mine-labels.csv"
    import dataclasses

    with_pool = dataclasses.replace(saved, pool=str(pool), labels=str(tmp_path / "proj" / "answers.csv"))
    save_project(with_pool, saved.path, data_dir=tmp_path / "app")
    text = Path(saved.path).read_text()
    assert 'labels = "answers.csv"' in text  # relative inside the project's folder
    opened = open_project(saved.path, data_dir=tmp_path / "app").project
    assert opened.pool == str(pool) and opened.labels == str(tmp_path / "proj" / "answers.csv")
    # An older project file (no pool, no labels) still opens.
    old = tmp_path / "proj" / "old.tsproj"
    old.write_text(text.replace('labels = "answers.csv"\n', "").replace(f'pool = "{pool}"\n', ""))
    assert "pool" not in old.read_text()
    reopened = open_project(old, data_dir=tmp_path / "app")
    assert reopened.project.pool == "" and reopened.project.labels == ""
    # A labels file outside the project's folder (a project from someone else) is not written there.
    outside = tmp_path / "proj" / "evil.tsproj"
    outside.write_text(text.replace('labels = "answers.csv"', 'labels = "/etc/labels.csv"'))
    opened = open_project(outside, data_dir=tmp_path / "app")
    assert opened.project.labels == "" and any("labels" in note for note in opened.notes)


def test_a_retrain_reads_pictures_as_the_project_does(tmp_path, tiny_dataset, pool):
    """The joined run keeps the project's data settings (a DICOM window, a contrast stretch, the channels): a retrain
    on pictures read another way would not be the model the user labelled for."""
    import dataclasses

    paths = scan_pool(pool).paths
    data = DataConfig(source=str(tiny_dataset), val_fraction=0.25, dicom_window="auto", stretch="dataset",
                      stretch_low=1.0, stretch_high=99.0, channels="all", split_seed=3)
    config = RunConfig(data=data, model=ModelConfig("timm:test_resnet", "none"), out=str(tmp_path / "runs"))
    labels = read_labels(tmp_path / "p-labels.csv")
    labels.set(paths[0], "blue")
    joined, _ = joined_config(config, labels)
    kept = {f.name for f in dataclasses.fields(DataConfig)} - {"source", "split", "exclude", "relabel"}
    assert {k: getattr(joined.data, k) for k in kept} == {k: getattr(data, k) for k in kept}
    assert joined.data.source.endswith(".csv") and joined.data.split == "auto"


def test_main_train_of_a_project_includes_its_labelled_pool_pictures(tmp_path, tiny_dataset, pool, capsys):
    """``python main.py train PROJECT.tsproj`` trains what the Label step's Retrain trains: the project's data plus
    its labelled pool pictures ("none of these" left out), through the same joined settings."""
    import dataclasses

    from engine.active import project_config
    from main import main

    project = new_project(tiny_dataset, data_dir=tmp_path / "app")
    config = dataclasses.replace(project.config, model=ModelConfig("timm:test_resnet", "none"), epochs=1,
                                 strategy="fine-tune-deep", train=TrainConfig(batch_size=8, workers=0, augment="none"))
    (tmp_path / "proj").mkdir()
    saved = save_project(dataclasses.replace(project, config=config, pool=str(pool)),
                         tmp_path / "proj" / "mine.tsproj", data_dir=tmp_path / "app")
    paths = scan_pool(pool).paths
    labels = read_labels(labels_path_for(saved))
    blue = [p for p in paths if "/blue/" in p]
    labels.set(blue, "blue")
    red = next(p for p in paths if "/red/" in p)
    labels.set(red, NONE_OF_THESE)
    labels.save()
    assert main(["train", saved.path, "--out", str(tmp_path / "cli-runs")]) == 0
    out = capsys.readouterr()
    assert "3 labelled pool pictures join training; 1 marked 'none of these' stay out." in out.err
    run = next((tmp_path / "cli-runs").iterdir())
    trained = json.loads((run / "dataset.json").read_text())
    rows = {s["path"]: (trained["classes"][s["label"]], s["split"]) for s in trained["samples"]}
    assert all(rows[p] == ("blue", "train") for p in blue) and red not in rows
    # The same joined settings as the window's Retrain: the same training list.
    joined, _ = joined_config(config, labels)
    assert project_config(saved.path)[0].data.source == joined.data.source
    assert Path(load_config(run / "config.toml").data.source) == Path(joined.data.source)
