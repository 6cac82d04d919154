"""The labels go with the project: when a project is saved, its labels CSV and rounds folder come beside the file.

A project not yet saved keeps its answers in the app's data folder, beside its runs folder
(``<data>/unsaved-runs/<project>-...-labels.csv`` and ``...-labels-rounds/``). Its first save moves the runs beside
the project file (engine.project.project.save_project_and_runs), and :func:`carry_labels` then brings the answers
along the same way:

- from the app's data folder (a project saved for the first time): *moved*; the rounds' record (``rounds.jsonl``)
  names the runs in their new place, and the moved runs' ``config.toml`` names the training lists in theirs, so that
  ``python main.py train RUN/config.toml`` still repeats a round;
- from another project's folder (*Save as* elsewhere): *copied*, so that each project keeps answers of its own;
- already in the project's folder: left where they are.

They arrive as ``<project>-labels.csv`` (and ``<project>-labels-rounds``) beside the file, or, when that name is
taken by other answers, ``<project>-labels-2.csv`` and so on (the project file then names it). The labels CSV is
rewritten through :class:`engine.active.labels.Labels`, so that its paths relative to its folder stay right; every
file is written atomically, and the old copy is removed only once the new one is whole. A failure leaves the answers
where they were, says so in a sentence, and the project keeps pointing at them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from pathlib import Path

from engine.errors import UserError
from engine.files import atomic_write_text

from engine.active.join import ROUNDS, rounds_folder
from engine.active.labels import LABELS_SUFFIX, labels_path_for, read_labels

__all__ = ["carry_labels", "save_project_with_labels"]


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except (ValueError, OSError):
        return False


def _target(path: Path, old: Path) -> Path:
    """``<project>-labels.csv`` beside ``path``, or the first numbered name whose CSV and rounds folder are free."""
    from engine.project.project import safe_file_stem

    stem = safe_file_stem(path.stem)
    n = 1
    while True:
        name = f"{stem}{LABELS_SUFFIX}" if n == 1 else f"{stem}-labels-{n}.csv"
        target = path.parent / name
        rounds = target.with_name(target.stem + "-rounds")
        if target.resolve() == old.resolve() or (not target.exists() and not rounds.exists()):
            return target
        n += 1


def carry_labels(project, path: str | os.PathLike, moved_runs: dict[str, str], *, data_dir=None
                 ) -> tuple[str, tuple[str, ...]]:
    """Bring ``project``'s labels CSV and rounds folder beside the project file ``path`` (see the module); returns
    the saved project's ``labels`` setting ("" for the default place beside the file) and sentences for the user.
    ``moved_runs``: {old run folder: new one}, the runs the same save moved."""
    from engine.project.project import safe_file_stem, unsaved_runs_root

    path = Path(path)
    old = Path(labels_path_for(project))
    old_rounds = rounds_folder(read_labels_safely(old))
    if not old.is_file() and not old_rounds.is_dir():
        return ("" if not project.labels or not _inside(Path(project.labels), path.parent) else project.labels), ()
    default = path.parent / f"{safe_file_stem(path.stem)}{LABELS_SUFFIX}"
    if _inside(old, path.parent):
        return ("" if old.resolve() == default.resolve() else str(old)), ()
    target = _target(path, old)
    setting = "" if target == default else str(target)
    move = _inside(old, unsaved_runs_root(data_dir))
    try:
        _copy(old, old_rounds, target, moved_runs if move else {})
    except (OSError, UserError) as exc:
        if not target.exists():  # the rounds folder copied before the labels failed: not left half-done
            with contextlib.suppress(OSError):
                shutil.rmtree(target.with_name(target.stem + "-rounds"))
        reason = str(exc) if isinstance(exc, UserError) else (exc.strerror or str(exc))
        return str(old), (f"The labels could not be {'moved' if move else 'copied'} beside the project file "
                          f"({reason}); they stay in {old}, and the project uses them from there.",)
    if move:
        _retarget_runs(moved_runs, old_rounds, rounds_folder(read_labels_safely(target)))
        with contextlib.suppress(OSError):
            old.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            shutil.rmtree(old_rounds)
    return setting, ()


def read_labels_safely(path: Path):
    """The labels at ``path`` (for its rounds folder's name); an empty set when the file cannot be read."""
    from engine.active.labels import Labels

    try:
        return read_labels(path)
    except UserError:
        return Labels(str(path))


def _copy(old: Path, old_rounds: Path, target: Path, moved_runs: dict[str, str]) -> None:
    """The labels CSV (paths made relative to its new folder) and the rounds folder (rounds.jsonl naming the moved
    runs in their new place) at ``target``; the rounds folder is copied under a hidden name and renamed when whole."""
    labels = read_labels(old)  # UserError when it cannot be read: nothing is copied then
    new_rounds = target.with_name(target.stem + "-rounds")
    if old_rounds.is_dir():
        staging = new_rounds.with_name(f".{new_rounds.name}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(old_rounds, staging)
        record = staging / ROUNDS
        if record.is_file() and moved_runs:
            lines = []
            for line in record.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    entry["run_dir"] = _renamed(str(entry.get("run_dir", "")), moved_runs)
                    lines.append(json.dumps(entry))
                except ValueError:
                    lines.append(line)
            atomic_write_text(record, "".join(line + "\n" for line in lines))
        os.replace(staging, new_rounds)
    labels.path = str(target)
    labels.save()


def _renamed(run_dir: str, moved_runs: dict[str, str]) -> str:
    for before, after in moved_runs.items():
        if os.path.normcase(os.path.abspath(run_dir)) == os.path.normcase(os.path.abspath(before)):
            return after
    return run_dir


def _retarget_runs(moved_runs: dict[str, str], old_rounds: Path, new_rounds: Path) -> None:
    """The moved runs trained on a training list of the old rounds folder: their config.toml names the new one."""
    from engine.config import dumps, load

    for run in moved_runs.values():
        settings = Path(run) / "config.toml"
        try:
            config = load(settings)
        except Exception:  # noqa: BLE001  (a run folder the user broke: left as it is)
            continue
        source = Path(config.data.source)
        if _inside(source, old_rounds):
            config = dataclasses.replace(config, data=dataclasses.replace(
                config.data, source=str(new_rounds / source.resolve().relative_to(old_rounds.resolve()))))
            with contextlib.suppress(OSError):
                atomic_write_text(settings, dumps(config))


def save_project_with_labels(project, path: str | os.PathLike, *, data_dir=None, busy: str = ""):
    """engine.project.project.save_project_and_runs, then the labels brought beside the file (:func:`carry_labels`);
    the project file is written again when the labels' place differs from the one it names. Returns the
    SavedProject (its notes say when the labels stayed where they were)."""
    from engine.project.project import dumps_project, runs_to_adopt, save_project_and_runs

    source = runs_to_adopt(project, data_dir=data_dir)
    before = _run_folders(source) if source is not None else []  # in the order the save moves them
    saved = save_project_and_runs(project, path, data_dir=data_dir, busy=busy)
    moved = dict(zip(before, saved.moved)) if len(before) == len(saved.moved) else {}
    labels, notes = carry_labels(project, saved.project.path, moved, data_dir=data_dir)
    result = saved.project
    if labels != result.labels:
        result = dataclasses.replace(result, labels=labels)
        try:
            atomic_write_text(Path(result.path), dumps_project(result, result.path))
        except OSError as exc:
            notes += (f"The project file could not be written again to name its labels ({exc.strerror or exc}): "
                      "save it once more.",)
    return dataclasses.replace(saved, project=result, notes=saved.notes + notes)


def _run_folders(folder: Path) -> list[str]:
    """The run folders in ``folder``, as engine.project.runs.move_runs lists (and moves) them."""
    from engine.project import runs

    try:
        return [str(p) for p in sorted(p for p in folder.iterdir() if (p / runs.CONFIG).is_file())]
    except OSError:
        return []
