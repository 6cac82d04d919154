"""Runs belong to their project: a project not yet saved keeps its runs in a folder of its own, and saving it takes
them along (beside the project file), all or none, never losing one; another project never lists them."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from engine.config import DataConfig, ModelConfig, RunConfig
from engine.errors import ConfigError
from engine.project import runs
from engine.project.project import new_project, open_project, runs_to_adopt, save_project_and_runs


def fake_run(out: Path, name: str, acc: float = 0.5) -> Path:
    """A finished run folder as the trainer leaves it (the files the listing and the moves look at)."""
    folder = out / name
    folder.mkdir(parents=True)
    (folder / runs.CONFIG).write_text('strategy = "feature-extraction"\n', encoding="utf-8")
    (folder / runs.SUMMARY).write_text(json.dumps({"status": "completed", "best_val_acc": acc}), encoding="utf-8")
    (folder / runs.BEST).write_bytes(os.urandom(4096))
    return folder


def names(folder) -> list[str]:
    return [Path(r.path).name for r in runs.list_runs(folder)]


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def unsaved(tmp_path, data_dir):
    """A project opened from a folder of pictures and never saved, with two runs."""
    project = new_project(tmp_path / "pictures", data_dir=data_dir)
    fake_run(Path(project.config.out), "20260101-100000-resnet18-feature-extraction", 0.8)
    fake_run(Path(project.config.out), "20260101-110000-resnet18-fine-tune", 0.9)
    return project


def test_each_unsaved_project_has_runs_of_its_own(tmp_path, data_dir, unsaved):
    other = new_project(tmp_path / "pictures", data_dir=data_dir)  # even on the same pictures
    assert other.config.out != unsaved.config.out
    assert names(other.config.out) == [] and len(names(unsaved.config.out)) == 2
    assert runs_to_adopt(unsaved, data_dir=data_dir) == Path(unsaved.config.out)


def test_saving_moves_the_runs_beside_the_project_file_and_reopening_lists_them(tmp_path, data_dir, unsaved):
    before = names(unsaved.config.out)
    best = Path(unsaved.config.out) / before[0] / runs.BEST
    content = best.read_bytes()
    project = unsaved.with_config(dataclasses.replace(  # its model starts from one of its own runs
        unsaved.config, model=dataclasses.replace(unsaved.config.model, weights=str(best))))
    folder = tmp_path / "work"
    folder.mkdir()

    saved = save_project_and_runs(project, folder / "colours.tsproj", data_dir=data_dir)

    assert saved.notes == ()
    assert saved.project.config.out == str(folder / "runs")
    assert names(folder / "runs") == before
    assert sorted(saved.moved) == sorted(str(folder / "runs" / n) for n in before)
    assert not Path(unsaved.config.out).exists()  # nothing left behind in the app's data folder
    assert saved.project.config.model.weights == str(folder / "runs" / before[0] / runs.BEST)
    assert Path(saved.project.config.model.weights).read_bytes() == content
    assert runs_to_adopt(saved.project, data_dir=data_dir) is None

    reopened = open_project(folder / "colours.tsproj", data_dir=data_dir).project
    assert names(reopened.config.out) == before
    assert reopened.config.model.weights == saved.project.config.model.weights


def test_another_project_in_the_same_folder_keeps_its_own_runs(tmp_path, data_dir, unsaved):
    folder = tmp_path / "work"
    fake_run(folder / "runs", "20250101-090000-older-project")  # a project saved here before
    saved = save_project_and_runs(unsaved, folder / "colours.tsproj", data_dir=data_dir)
    assert saved.project.config.out == str(folder / "colours-runs")
    assert len(names(folder / "colours-runs")) == 2
    assert names(folder / "runs") == ["20250101-090000-older-project"]


def test_a_run_still_training_keeps_every_run_where_it_is_and_the_next_save_moves_them(tmp_path, data_dir,
                                                                                     unsaved):
    source = Path(unsaved.config.out)
    training = source / names(source)[0]
    folder = tmp_path / "work"
    folder.mkdir()
    with runs.run_lock(training):  # as the process training it holds it
        saved = save_project_and_runs(unsaved, folder / "colours.tsproj", data_dir=data_dir)
    assert len(saved.notes) == 1
    assert f"The run {training.name} is still training" in saved.notes[0]
    assert str(source) in saved.notes[0] and "save the project again" in saved.notes[0]
    assert saved.moved == () and saved.project.config.out == str(source)
    assert len(names(source)) == 2 and not (folder / "runs").exists()
    reopened = open_project(saved.project.path, data_dir=data_dir)  # the saved project lists them from there
    assert reopened.notes == () and len(names(reopened.project.config.out)) == 2

    again = save_project_and_runs(reopened.project, saved.project.path, data_dir=data_dir)
    assert again.notes == () and again.project.config.out == str(folder / "runs")
    assert len(names(folder / "runs")) == 2 and not source.exists()


def test_a_caller_using_the_runs_keeps_them_where_they_are(tmp_path, data_dir, unsaved):
    saved = save_project_and_runs(unsaved, tmp_path / "colours.tsproj", data_dir=data_dir,
                                  busy="A model of this project is training.")
    assert saved.project.config.out == unsaved.config.out and len(names(unsaved.config.out)) == 2
    assert saved.notes[0].startswith("A model of this project is training, so the runs of this project stay in ")


def test_a_move_failing_half_way_puts_every_run_back(tmp_path, data_dir, unsaved, monkeypatch):
    source = Path(unsaved.config.out)
    before = {n: (source / n / runs.BEST).read_bytes() for n in names(source)}
    rename = os.rename
    calls = []

    def second_fails(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise PermissionError(errno.EACCES, "Permission denied")
        return rename(src, dst)

    monkeypatch.setattr(os, "rename", second_fails)
    saved = save_project_and_runs(unsaved, tmp_path / "colours.tsproj", data_dir=data_dir)
    monkeypatch.undo()

    assert saved.project.config.out == str(source) and saved.moved == ()
    assert len(saved.notes) == 1 and "could not be moved" in saved.notes[0] and "Permission denied" in saved.notes[0]
    assert str(source) in saved.notes[0]
    assert {n: (source / n / runs.BEST).read_bytes() for n in names(source)} == before
    assert not (tmp_path / "runs").exists()


def test_runs_move_across_disks_by_copying_them_whole(tmp_path, data_dir, unsaved, monkeypatch):
    source = Path(unsaved.config.out)
    before = {n: (source / n / runs.BEST).read_bytes() for n in names(source)}
    rename = os.rename

    def across_disks(src, dst):
        if Path(src).parent != Path(dst).parent:  # a rename within one folder stays on its disk
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return rename(src, dst)

    monkeypatch.setattr(os, "rename", across_disks)
    saved = save_project_and_runs(unsaved, tmp_path / "colours.tsproj", data_dir=data_dir)
    monkeypatch.undo()

    assert saved.notes == () and not source.exists()
    assert {n: (tmp_path / "runs" / n / runs.BEST).read_bytes() for n in names(tmp_path / "runs")} == before
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]  # no partial copy left


def test_a_copy_failing_across_disks_leaves_the_run_whole_where_it_was(tmp_path, data_dir, unsaved, monkeypatch):
    source = Path(unsaved.config.out)
    before = {n: (source / n / runs.BEST).read_bytes() for n in names(source)}

    def across_disks(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def disk_full(src, dst, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "rename", across_disks)
    monkeypatch.setattr(shutil, "copytree", disk_full)
    saved = save_project_and_runs(unsaved, tmp_path / "colours.tsproj", data_dir=data_dir)
    monkeypatch.undo()

    assert saved.project.config.out == str(source) and "No space left" in saved.notes[0]
    assert {n: (source / n / runs.BEST).read_bytes() for n in names(source)} == before
    assert not (tmp_path / "runs").exists()


def test_a_failed_save_puts_the_runs_back(tmp_path, data_dir, unsaved, monkeypatch):
    import engine.files

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(engine.files, "atomic_write_text", full)
    with pytest.raises(ConfigError, match="could not be saved"):
        save_project_and_runs(unsaved, tmp_path / "colours.tsproj", data_dir=data_dir)
    assert len(names(unsaved.config.out)) == 2 and not (tmp_path / "runs").exists()


def test_a_saved_project_and_the_demo_keep_their_runs_folder(tmp_path, data_dir):
    config = RunConfig(data=DataConfig(source=str(tmp_path / "pictures")), model=ModelConfig(),
                       out=str(data_dir / "demo" / "runs"))
    fake_run(data_dir / "demo" / "runs", "20260101-100000-demo")
    project = dataclasses.replace(new_project(tmp_path / "pictures", data_dir=data_dir), config=config)
    first = save_project_and_runs(project, tmp_path / "demo-copy.tsproj", data_dir=data_dir)
    assert first.project.config.out == str(data_dir / "demo" / "runs") and first.moved == ()
    assert names(data_dir / "demo" / "runs") == ["20260101-100000-demo"]


def test_saving_into_a_missing_folder_moves_nothing_and_makes_no_folder(tmp_path, data_dir, unsaved):
    with pytest.raises(ConfigError, match="could not be saved"):
        save_project_and_runs(unsaved, tmp_path / "no" / "such" / "colours.tsproj", data_dir=data_dir)
    assert not (tmp_path / "no").exists() and len(names(unsaved.config.out)) == 2


def saved_with_runs(tmp_path, data_dir, unsaved):
    first = tmp_path / "first"
    first.mkdir()
    return save_project_and_runs(unsaved, first / "colours.tsproj", data_dir=data_dir).project


def test_save_as_into_another_folder_takes_copies_of_the_runs(tmp_path, data_dir, unsaved):
    project = saved_with_runs(tmp_path, data_dir, unsaved)
    before = names(project.config.out)
    best = Path(project.config.out) / before[1] / runs.BEST
    project = project.with_config(dataclasses.replace(
        project.config, model=dataclasses.replace(project.config.model, weights=str(best))))
    other = tmp_path / "other"
    other.mkdir()

    copy = save_project_and_runs(project, other / "colours-v2.tsproj", data_dir=data_dir)

    assert copy.project.config.out == str(other / "runs")
    assert names(other / "runs") == before  # the copy opens with its run history
    assert names(project.config.out) == before  # and the first project keeps its own
    assert copy.notes == () and sorted(copy.copied) == sorted(str(other / "runs" / n) for n in before)
    assert copy.project.config.model.weights == str(other / "runs" / before[1] / runs.BEST)
    assert Path(copy.project.config.model.weights).read_bytes() == best.read_bytes()
    reopened = open_project(other / "colours-v2.tsproj", data_dir=data_dir)
    assert reopened.notes == () and names(reopened.project.config.out) == before


def test_save_as_in_the_same_folder_shares_the_runs_folder(tmp_path, data_dir, unsaved):
    project = saved_with_runs(tmp_path, data_dir, unsaved)
    copy = save_project_and_runs(project, tmp_path / "first" / "colours-v2.tsproj", data_dir=data_dir)
    assert copy.notes == () and copy.project.config.out == project.config.out
    assert sorted(p.name for p in (tmp_path / "first").iterdir()) == ["colours-v2.tsproj", "colours.tsproj", "runs"]


def test_save_as_while_a_run_trains_says_the_copy_starts_without_runs(tmp_path, data_dir, unsaved):
    project = saved_with_runs(tmp_path, data_dir, unsaved)
    training = Path(project.config.out) / names(project.config.out)[0]
    other = tmp_path / "other"
    other.mkdir()
    with runs.run_lock(training):
        copy = save_project_and_runs(project, other / "colours-v2.tsproj", data_dir=data_dir)
    assert f"The run {training.name} is still training, so this copy of the project starts without" in copy.notes[0]
    assert copy.project.config.out == str(other / "runs") and not (other / "runs").exists()
    assert len(names(project.config.out)) == 2


def test_a_copy_failing_half_way_leaves_no_partial_runs(tmp_path, data_dir, unsaved, monkeypatch):
    project = saved_with_runs(tmp_path, data_dir, unsaved)
    other = tmp_path / "other"
    other.mkdir()
    real = shutil.copytree
    calls = []

    def full_disk(src, dst, *args, **kwargs):
        calls.append(src)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copytree", full_disk)
    copy = save_project_and_runs(project, other / "colours-v2.tsproj", data_dir=data_dir)
    assert "could not be copied" in copy.notes[0] and "No space left on device" in copy.notes[0]
    assert not (other / "runs").exists()  # no half copy
    assert len(names(project.config.out)) == 2


def test_save_as_shares_the_weights_until_either_project_rewrites_them(tmp_path, data_dir, unsaved):
    """The copy of a run's weights takes no time or disk space (a hard link, where the disk allows it), and a run
    later rewritten in one project (a resumed run's new best weights) leaves the other project's run as it was."""
    from engine import files

    project = saved_with_runs(tmp_path, data_dir, unsaved)
    name = names(project.config.out)[0]
    original = Path(project.config.out) / name
    other = tmp_path / "other"
    other.mkdir()
    copy = save_project_and_runs(project, other / "colours-v2.tsproj", data_dir=data_dir)
    copied = Path(copy.project.config.out) / name
    assert (copied / runs.BEST).stat().st_ino == (original / runs.BEST).stat().st_ino  # shared, not duplicated
    assert (copied / runs.SUMMARY).stat().st_ino != (original / runs.SUMMARY).stat().st_ino  # small files: copied
    before = (original / runs.BEST).read_bytes()
    files.atomic_write(copied / runs.BEST, lambda tmp: tmp.write_bytes(b"new weights"))
    assert (original / runs.BEST).read_bytes() == before
    assert (copied / runs.BEST).read_bytes() == b"new weights"


def test_save_as_copies_name_their_teacher_and_parent_runs_in_the_copy(tmp_path, data_dir, unsaved):
    from engine.config import DistillConfig, load, save

    project = saved_with_runs(tmp_path, data_dir, unsaved)
    out = Path(project.config.out)
    teacher = out / names(out)[0]
    student, adapted = fake_run(out, "20260101-120000-student"), fake_run(out, "20260101-130000-adapted")
    save(RunConfig(distill=DistillConfig(teacher=str(teacher))), student / runs.CONFIG)
    (student / "distill.json").write_text(json.dumps({"teacher": {"run": str(teacher)}, "student": {"run": str(student)},
                                                      "pictures": 3}), encoding="utf-8")
    save(RunConfig(adapted_from=str(teacher), adapted_data=str(tmp_path / "new"), adapted_method="adabn"),
         adapted / runs.CONFIG)
    other = tmp_path / "other"
    other.mkdir()

    save_project_and_runs(project, other / "copy.tsproj", data_dir=data_dir)

    copies = other / "runs"
    assert load(copies / student.name / runs.CONFIG).distill.teacher == str(copies / teacher.name)
    table = json.loads((copies / student.name / "distill.json").read_text(encoding="utf-8"))
    assert table["teacher"]["run"] == str(copies / teacher.name) and table["student"]["run"] == str(copies / student.name)
    assert load(copies / adapted.name / runs.CONFIG).adapted_from == str(copies / teacher.name)
    # The first project's runs still name their own.
    assert load(student / runs.CONFIG).distill.teacher == str(teacher)
    assert json.loads((student / "distill.json").read_text(encoding="utf-8"))["teacher"]["run"] == str(teacher)
