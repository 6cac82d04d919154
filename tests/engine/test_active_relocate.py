"""The labels go with the project: saving a project moves its labels CSV and rounds folder from the app's data folder
beside the project file, like its runs (the rounds naming the runs, and the runs the training lists, in their new
place); Save as elsewhere copies them; an old project file still opens and saves."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_class_folders
from engine.active import labels_path_for, read_labels, read_rounds, retrain, scan_pool
from engine.active.relocate import save_project_with_labels
from engine.config import load
from engine.project.project import new_project, open_project

pytestmark = pytest.mark.usefixtures("quick_training")


@pytest.fixture
def unsaved_with_a_round(tmp_path, tiny_dataset):
    """A project not yet saved, with a pool picture labelled and one retrain: labels, rounds and the run all live in
    the app's data folder."""
    import dataclasses

    from engine.config import ModelConfig, TrainConfig

    app = tmp_path / "app"
    project = new_project(tiny_dataset, data_dir=app)
    config = dataclasses.replace(project.config, model=ModelConfig("timm:test_resnet", "none"), epochs=1,
                                 strategy="fine-tune-deep",
                                 train=TrainConfig(batch_size=8, workers=0, augment="none"))
    project = dataclasses.replace(project, config=config)
    pool = scan_pool(make_class_folders(tmp_path / "pool", per_class=1, seed=3)).paths
    labels = read_labels(labels_path_for(project))
    labels.set(pool[0], Path(pool[0]).parent.name)
    labels.save()
    done = retrain(project.config, labels)
    assert done.result.status == "completed", done.result.error
    assert Path(labels.path).is_relative_to(app)
    return project, labels, done, app, pool


def test_the_first_save_moves_labels_and_rounds_beside_the_project(tmp_path, unsaved_with_a_round):
    project, labels, done, app, pool = unsaved_with_a_round
    old_csv, old_rounds = Path(labels.path), Path(labels.path).with_name(Path(labels.path).stem + "-rounds")
    (tmp_path / "proj").mkdir()
    saved = save_project_with_labels(project, tmp_path / "proj" / "mine.tsproj", data_dir=app)
    assert saved.notes == ()
    here = tmp_path / "proj" / "mine-labels.csv"
    assert labels_path_for(saved.project) == here
    assert read_labels(here).label_of(pool[0]) == Path(pool[0]).parent.name  # the answers came along
    assert not old_csv.exists() and not old_rounds.exists()  # moved, not copied
    rounds = read_rounds(read_labels(here))
    assert [r.run_dir for r in rounds] == list(saved.moved)  # the rounds name the runs in their new place
    run_config = load(Path(saved.moved[0]) / "config.toml")
    assert Path(run_config.data.source).parent == tmp_path / "proj" / "mine-labels-rounds"
    assert Path(run_config.data.source).is_file()  # the round can still be repeated
    # Reopened, the project finds its labels; an old project file (no labels setting) too.
    opened = open_project(saved.project.path, data_dir=app).project
    assert labels_path_for(opened) == here


def test_save_as_elsewhere_copies_the_labels_and_an_old_file_still_opens(tmp_path, unsaved_with_a_round):
    project, labels, done, app, pool = unsaved_with_a_round
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = save_project_with_labels(project, tmp_path / "a" / "one.tsproj", data_dir=app).project
    again = save_project_with_labels(first, tmp_path / "a" / "one.tsproj", data_dir=app).project
    assert labels_path_for(again) == tmp_path / "a" / "one-labels.csv"  # saved in place: left where they are
    (tmp_path / "b" / "two-labels.csv").write_text("path,label\nsomeone.png,else\n")  # the name is taken
    other = save_project_with_labels(again, tmp_path / "b" / "two.tsproj", data_dir=app).project
    copied = labels_path_for(other)
    assert copied == tmp_path / "b" / "two-labels-2.csv"
    assert 'labels = "two-labels-2.csv"' in Path(other.path).read_text()
    assert read_labels(copied).answers == read_labels(tmp_path / "a" / "one-labels.csv").answers  # both keep them
    assert (tmp_path / "b" / "two-labels-2-rounds" / "rounds.jsonl").is_file()
    assert read_labels(tmp_path / "b" / "two-labels.csv").label_of(tmp_path / "b" / "someone.png") == "else"
    # An old project file, without pool or labels settings, opens and saves.
    old = tmp_path / "b" / "old.tsproj"
    old.write_text("\n".join(line for line in Path(other.path).read_text().splitlines()
                             if not line.startswith(("labels =", "pool ="))) + "\n")
    reopened = open_project(old, data_dir=app).project
    assert reopened.labels == "" and labels_path_for(reopened) == tmp_path / "b" / "old-labels.csv"
    resaved = save_project_with_labels(reopened, old, data_dir=app)
    assert resaved.notes == () and resaved.project.labels == ""
