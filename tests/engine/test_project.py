"""Project files: a TOML round-trip of the name, the dataset and the whole RunConfig; relative paths; the run folder
kept inside the project's own folders; drafts that survive a crash."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from engine.config import DataConfig, ModelConfig, Phase, RunConfig, TrainConfig, from_dict
from engine.errors import ConfigError
from engine.project.project import (PROJECT_SUFFIX, Project, discard_draft, draft_path, load_run_config, new_project,
                            open_project, read_draft, save_draft, save_project)


def _config(source: Path, out: Path) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=str(source), val_fraction=0.25, test_fraction=0.1, split_seed=7),
        model=ModelConfig(name="torchvision:mobilenet_v2", weights="none"),
        strategy="custom",
        epochs=3,
        lr=0.002,
        phases=(Phase("head", 2, 0.01, {"head": 1.0}), Phase("all", 1, 0.001, {"features.18": 0.5, "head": 1.0},
                                                                 bn="train")),
        train=TrainConfig(batch_size=8, optimizer="sgd", augment="strong", early_stopping=2, seed=3),
        out=str(out),
        name="my-run",
    )


def test_save_and_open_round_trip_keeps_every_setting(tmp_path):
    pictures = tmp_path / "work" / "pictures"
    pictures.mkdir(parents=True)
    project = Project("Leaves", _config(pictures, tmp_path / "work" / "runs"))
    saved = save_project(project, tmp_path / "work" / "leaves", data_dir=tmp_path / "data")

    assert saved.path == str(tmp_path / "work" / ("leaves" + PROJECT_SUFFIX))
    opened = open_project(saved.path, data_dir=tmp_path / "data")
    assert opened.notes == ()
    assert opened.project == saved
    assert opened.project.config == project.config
    assert opened.project.name == "Leaves"


def test_the_file_is_plain_toml_with_relative_paths_inside_the_project_folder(tmp_path):
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    elsewhere = tmp_path.parent / "elsewhere-dataset"
    path = save_project(Project("A", _config(pictures, tmp_path / "runs")), tmp_path / "a.tsproj",
                        data_dir=tmp_path / "data").path
    document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    assert document["project"] == {"format": "transfer-studio-project", "version": 1, "name": "A"}
    assert document["config"]["data"]["source"] == "pictures"
    assert document["config"]["out"] == "runs"
    from_dict(document["config"])  # the [config] table is a whole RunConfig

    # A dataset outside the project's folder stays absolute, so the project can be moved on its own.
    path = save_project(Project("B", _config(elsewhere, tmp_path / "runs")), tmp_path / "b.tsproj").path
    assert tomllib.loads(Path(path).read_text())["config"]["data"]["source"] == str(elsewhere)


def test_moving_a_project_with_its_pictures_keeps_it_working(tmp_path):
    (tmp_path / "one" / "pictures").mkdir(parents=True)
    path = save_project(Project("M", _config(tmp_path / "one" / "pictures", tmp_path / "one" / "runs")),
                        tmp_path / "one" / "m.tsproj").path
    moved = tmp_path / "two"
    (tmp_path / "one").rename(moved)
    project = open_project(moved / Path(path).name, data_dir=tmp_path / "data").project
    assert project.dataset == str(moved / "pictures")
    assert project.config.out == str(moved / "runs")


@pytest.mark.parametrize("out", ["/tmp/../etc/somewhere", "../../outside", "~/Desktop/runs"])
def test_a_project_file_cannot_make_the_app_write_outside_its_folders(tmp_path, out):
    folder = tmp_path / "shared-project"
    folder.mkdir()
    text = save_project(Project("S", _config(folder, folder / "runs")), folder / "s.tsproj").path
    content = Path(text).read_text(encoding="utf-8").replace('out = "runs"', f'out = "{out}"')
    Path(text).write_text(content, encoding="utf-8")

    opened = open_project(text, data_dir=tmp_path / "data")
    assert opened.project.config.out == str(folder / "runs")
    assert len(opened.notes) == 1 and "outside the project's folder" in opened.notes[0]


def test_runs_may_go_to_the_app_data_folder(tmp_path):
    data_dir = tmp_path / "data"
    folder = tmp_path / "p"
    folder.mkdir()
    path = save_project(Project("D", _config(folder, data_dir / "demo" / "runs")), folder / "d.tsproj").path
    opened = open_project(path, data_dir=data_dir)
    assert opened.notes == () and opened.project.config.out == str(data_dir / "demo" / "runs")


def test_a_new_project_saves_its_runs_beside_its_file(tmp_path):
    project = new_project(tmp_path / "pics", data_dir=tmp_path / "data")
    assert project.name == "pics" and project.path is None
    out = Path(project.config.out)  # a folder of its own in the app's data folder, until it is saved
    assert out.parent == (tmp_path / "data" / "unsaved-runs").resolve() and out.name.startswith("pics-")
    saved = save_project(project, tmp_path / "x.tsproj", data_dir=tmp_path / "data")
    assert saved.config.out == str(tmp_path / "runs")
    assert open_project(saved.path, data_dir=tmp_path / "data").project.config.out == str(tmp_path / "runs")


@pytest.mark.parametrize("text, words", [
    ("not = [toml", "not valid TOML"),
    ('version = 1\nstrategy = "feature-extraction"\n', "not a Transfer Studio project"),
    ('[project]\nformat = "transfer-studio-project"\nversion = 99\n', "newer Transfer Studio"),
    ('[project]\nformat = "transfer-studio-project"\n[config]\nstrategy = "magic"\n', "Unknown strategy 'magic'"),
    ('[project]\nformat = "transfer-studio-project"\n[config.train]\nbatch_size = "big"\n', "whole number"),
    ('[project]\nformat = "transfer-studio-project"\n[extras]\na = 1\n', "unknown section [extras]"),
    ('[project]\nformat = "transfer-studio-project"\ntitle = "x"\n', "unknown setting 'title' in [project]"),
    ('[project]\nformat = "transfer-studio-project"\n[config]\nlearning_rate = 0.1\n', "unknown setting 'learning_rate'"),
])
def test_a_broken_project_file_is_refused_with_a_sentence(tmp_path, text, words):
    path = tmp_path / "broken.tsproj"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        open_project(path, data_dir=tmp_path / "data")
    message = str(caught.value)
    assert words.lower() in message.lower()
    assert "\n" not in message and "Traceback" not in message


def test_a_damaged_project_file_says_what_happened_and_what_to_do(tmp_path):
    whole = save_project(Project("Leaves", RunConfig()), tmp_path / "whole.tsproj").path
    cut = tmp_path / "cut.tsproj"
    cut.write_text(Path(whole).read_text(encoding="utf-8")[:60], encoding="utf-8")  # a save cut short
    with pytest.raises(ConfigError) as caught:
        open_project(cut, data_dir=tmp_path / "data")
    message = str(caught.value)
    assert message.startswith("cut.tsproj is not a Transfer Studio project: it is not valid TOML (")
    assert message.endswith("It may be damaged or cut short: open another copy of it, or correct it in a text "
                            "editor.")
    garbage = tmp_path / "garbage.tsproj"
    garbage.write_bytes(b"\x00\x01\x02\xff\xfe garbage")
    with pytest.raises(ConfigError) as caught:
        open_project(garbage, data_dir=tmp_path / "data")
    assert str(caught.value) == (f"The project file {garbage} cannot be read: it is not text (it may be damaged). "
                                 "Open another copy of it, or make a new project.")
    assert Path(whole).is_file()  # opening damaged projects changed nothing


def test_a_missing_project_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        open_project(tmp_path / "gone.tsproj")


def test_saving_into_a_missing_folder_fails_with_a_sentence_and_writes_nothing(tmp_path):
    with pytest.raises(ConfigError, match="could not be saved"):
        save_project(Project("X", RunConfig()), tmp_path / "no" / "such" / "folder" / "x.tsproj")
    assert not (tmp_path / "no").exists()


def test_a_failed_save_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = save_project(Project("Old", RunConfig()), tmp_path / "p.tsproj").path
    before = Path(path).read_text(encoding="utf-8")

    import engine.files

    def broken_write(tmp, text):  # the disk fills up half-way through the write
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine.files, "atomic_write_text",
                        lambda p, text: engine.files.atomic_write(p, lambda tmp: broken_write(tmp, text)))
    with pytest.raises(ConfigError, match="No space left"):
        save_project(Project("New", RunConfig()), path)
    assert Path(path).read_text(encoding="utf-8") == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.tsproj"]  # no temporary file left behind


def test_a_draft_survives_and_restores_the_unsaved_state(tmp_path):
    data_dir = tmp_path / "data"
    saved = save_project(Project("Work", _config(tmp_path, tmp_path / "runs")), tmp_path / "work.tsproj")
    changed = saved.with_config(dataclasses.replace(saved.config, epochs=42))
    save_draft(changed, data_dir=data_dir)

    draft = read_draft(data_dir=data_dir)
    assert draft is not None
    assert draft.project.path == saved.path  # "save" goes back to the original file
    assert draft.project.config.epochs == 42
    assert draft.project.config == changed.config

    discard_draft(data_dir=data_dir)
    assert read_draft(data_dir=data_dir) is None


def test_a_draft_of_a_project_never_saved_has_no_file(tmp_path):
    project = new_project(tmp_path / "pics", data_dir=tmp_path / "data")
    save_draft(project, data_dir=tmp_path / "data")
    draft = read_draft(data_dir=tmp_path / "data")
    assert draft.project.path is None and draft.project.name == "pics"
    assert draft.project.dataset == str((tmp_path / "pics").resolve())


def test_a_damaged_draft_is_ignored(tmp_path):
    target = draft_path(tmp_path)
    target.parent.mkdir(parents=True)
    target.write_text("[draft\nbroken", encoding="utf-8")
    assert read_draft(data_dir=tmp_path) is None


def test_a_project_and_a_run_config_both_give_their_settings(tmp_path):
    from engine.config import save

    project = save_project(Project("R", _config(tmp_path, tmp_path / "runs")), tmp_path / "r.tsproj")
    assert load_run_config(project.path, data_dir=tmp_path / "data") == project.config
    save(project.config, tmp_path / "config.toml")
    assert load_run_config(tmp_path / "config.toml") == project.config
