"""Run folders: what a run writes so that it can be inspected and repeated.

A run folder holds
    config.toml       the fully resolved RunConfig (``python main.py train RUN/config.toml`` repeats the run)
    labels.json       class names in index order
    model.json        architecture, head, preprocessing, weight source and stages
    dataset.json      the pictures of each split, so that evaluation uses exactly the same split
    metrics.jsonl     one JSON object per epoch
    summary.json      status, best accuracy and epoch, epochs completed, error sentence
    best.safetensors  the weights of the best epoch
    checkpoint.pt     everything needed to continue the run after a crash or a stop (engine.train.trainer.resume); removed
                      when the run completes, like checkpoint-base.pt
    checkpoint-base.pt  the weights the current phase does not train (when it trains few), so that each checkpoint
                      holds only those it trains
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from engine.errors import UserError
from engine.files import atomic_write_json, atomic_write_text

CONFIG = "config.toml"
LABELS = "labels.json"
DATASET = "dataset.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
BEST = "best.safetensors"
MODEL = "model.json"
ERROR_LOG = "error.log"
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_BASE = "checkpoint-base.pt"  # the weights a phase does not train, saved once when it starts
DISTILL = "distill.json"  # a distilled run's teacher-vs-student table (engine.edge.distill)
LOCK = ".lock"  # held (flock) by the process training the run, so that a second one cannot resume it meanwhile
FULL_DISK = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and flush it to disk (an epoch's line survives a crash right after it)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def rewrite_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """Replace a JSON-lines file with exactly ``records`` (atomically: the old file or the new one, never half)."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


class RunFolderError(UserError):
    """A run folder that cannot be written (full disk, read-only) or resumed (busy, finished, no checkpoint)."""


class RunBusyError(RunFolderError):
    """A run folder in which another process (or another run of this one) is training."""


def write_problem(what: str, folder: str | os.PathLike, exc: OSError) -> str:
    """A sentence saying why ``what`` (e.g. "the checkpoint") could not be written into ``folder``."""
    reason = exc.strerror or str(exc)
    if exc.errno in FULL_DISK:
        return f"The disk is full: {what} could not be written in {folder} ({reason}). Free some space"
    if exc.errno in READ_ONLY:
        return (f"The run folder {folder} cannot be written to ({reason}), so {what} could not be saved. Make the "
                "folder writable")
    return f"{what[0].upper()}{what[1:]} could not be written in {folder} ({reason}). Check the disk"


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold the run folder's lock while a run trains in it; RunFolderError when another process (or another run in
    this one) holds it. The operating system releases the lock when the process ends, even when it is killed.
    Without ``fcntl`` (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    run_dir = Path(run_dir)
    try:
        handle = open(run_dir / LOCK, "a+b")
    except OSError as exc:
        raise RunFolderError(write_problem("its lock file", run_dir, exc) + ", then try again.") from None
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunBusyError(f"The run in {run_dir} is still training (in another window or process): stop it "
                               "there, or wait until it ends.") from None
        yield
    finally:
        handle.close()


def run_is_active(run_dir: str | os.PathLike) -> bool:
    """Whether a process is training in ``run_dir`` right now (its lock is held)."""
    try:
        with run_lock(run_dir):
            return False
    except RunBusyError:
        return True
    except RunFolderError:  # the lock file cannot be made (a read-only folder): no run can be training there
        return False


def resume_problem(run_dir: str | os.PathLike) -> str | None:
    """Why the run in ``run_dir`` cannot be resumed, as a sentence; None when it can (a stopped, failed or
    interrupted run with a checkpoint). Cheap: reads only summary.json and looks for the files."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return f"The run folder {run_dir} does not exist."
    if not (run_dir / CONFIG).is_file():
        return f"{run_dir} is not a run folder (it has no {CONFIG}): give the folder of a run to resume."
    summary = read_summary(run_dir)
    if summary.get("status") == "completed":
        done = summary.get("epochs_completed")
        return (f"The run in {run_dir} has already completed" + (f" all its {done} epochs" if done else "")
                + f": there is nothing to resume. To train again, start a new run from its {CONFIG}.")
    if not (run_dir / CHECKPOINT).is_file():
        return (f"The run in {run_dir} has no checkpoint to resume from (it ended before its first epoch, or was "
                f"made by an older version): start it again from its {CONFIG}.")
    if run_is_active(run_dir):
        return f"The run in {run_dir} is still training (in another window or process): stop it there first."
    return None


def create_run_dir(out: str | os.PathLike, model_name: str, strategy: str, name: str = "") -> Path:
    """Make a new, uniquely named run folder under ``out``: ``20261121-143000-mobilenet_v2-feature-extraction``."""
    out = Path(out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"The run folder {out} cannot be created ({exc.strerror or exc}): "
                        "choose another output folder.") from None
    label = name or f"{model_name.split(':')[-1]}-{strategy}"
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("._")[:100] or "run"  # a name of any length fits
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        candidate = out / (f"{stamp}-{label}" + (f"-{i + 1}" if i else ""))
        try:
            candidate.mkdir()
            (candidate / METRICS).touch()  # present from the start: a run stopped early still has its (empty) file
            return candidate
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserError(f"The run folder cannot be created in {out} ({exc.strerror or exc}): "
                            "choose another output folder.") from None
    raise UserError(f"Too many runs started in the same second in {out}.")


@dataclass(frozen=True)
class RunInfo:
    """A past run, as listed from its folder."""

    path: str
    status: str
    best_val_acc: float | None
    epochs_completed: int
    strategy: str
    model: str


def read_summary(run_dir: str | os.PathLike) -> dict:
    try:
        return json.loads((Path(run_dir) / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The epoch records of a run; a line cut short by a crash is skipped."""
    records = []
    try:
        lines = (Path(run_dir) / METRICS).read_text(encoding="utf-8").splitlines()
    except OSError:
        return records
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def list_runs(out: str | os.PathLike) -> list[RunInfo]:
    """The run folders under ``out``, newest first."""
    runs = []
    out = Path(out)
    if not out.is_dir():
        return runs
    for d in sorted((p for p in out.iterdir() if (p / CONFIG).is_file()), reverse=True):
        summary = read_summary(d)
        runs.append(RunInfo(
            path=str(d),
            status=summary.get("status", "unknown"),
            best_val_acc=summary.get("best_val_acc"),
            epochs_completed=summary.get("epochs_completed", 0),
            strategy=summary.get("strategy", ""),
            model=summary.get("model", ""),
        ))
    return runs


# --- moving runs (a project saved for the first time takes its runs with it) -----------------------------------


class RunMoveError(RunFolderError):
    """Runs that could not be moved; every run is left (or put back) where it was, unless ``stranded`` names some."""

    def __init__(self, message: str, stranded: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.stranded = stranded  # runs already moved that could not be put back (they are whole where they went)


def _run_folders(source: Path) -> list[Path]:
    """The run folders directly in ``source`` (none when it is not a folder), sorted."""
    return sorted(p for p in source.iterdir() if (p / CONFIG).is_file()) if source.is_dir() else []


@contextlib.contextmanager
def _all_locked(folders: list[Path]):
    """Every run of ``folders`` locked while the block runs; RunBusyError naming the one training right now."""
    with contextlib.ExitStack() as locks:
        for folder in folders:
            try:
                locks.enter_context(run_lock(folder))
            except RunBusyError:
                raise RunBusyError(f"The run {folder.name} is still training.") from None
        yield


def move_runs(source: str | os.PathLike, target: str | os.PathLike) -> dict[str, str]:
    """Move every run folder of ``source`` into ``target`` (made when missing, in an existing folder): all of them,
    or none.

    Each run moves atomically: renamed on the same disk; across disks copied under a hidden name, renamed into place
    once whole, and only then removed from ``source``. A run keeps its name unless ``target`` already has one of that
    name (then ``-2``, ``-3``, ... is added). Each run's lock is held while it moves, so no process can start
    resuming it meanwhile. Returns {old folder: new folder}, and removes ``source`` once it is empty.

    Raises RunBusyError, naming the run, when one is training right now (nothing is moved), and RunMoveError with a
    sentence when one cannot be moved (the runs moved until then are put back).
    """
    source, target = Path(source), Path(target)
    folders = _run_folders(source)
    moved: dict[str, str] = {}
    with _all_locked(folders):
        if folders:
            try:
                target.mkdir(exist_ok=True)  # its parent must exist: nothing is made in a folder that is not
            except OSError as exc:
                raise RunMoveError(f"The folder {target} cannot be created ({exc.strerror or exc}).") from None
        for folder in folders:
            destination = _free_name(target, folder.name)
            try:
                _move_folder(folder, destination)
            except OSError as exc:
                stranded = move_runs_back(moved)
                message = f"The run {folder.name} could not be moved into {target} ({exc.strerror or exc})."
                if stranded:
                    message += (f" {len(stranded)} run{'s' if len(stranded) > 1 else ''} already moved could not "
                                f"be put back and {'are' if len(stranded) > 1 else 'is'} whole in {target}: "
                                + ", ".join(Path(p).name for p in stranded) + ".")
                with contextlib.suppress(OSError):
                    target.rmdir()  # when it is empty again
                raise RunMoveError(message, tuple(stranded)) from None
            moved[str(folder)] = str(destination)
    with contextlib.suppress(OSError):
        source.rmdir()  # only when empty: anything else in it stays
    return moved


def copy_runs(source: str | os.PathLike, target: str | os.PathLike) -> dict[str, str]:
    """Copy every run folder of ``source`` into ``target`` (made when missing): all of them, or none (a project saved
    under another name in another folder takes copies of its runs; the first project keeps its own).

    Each run is copied under a hidden name and renamed into place once whole, its lock held meanwhile. Returns {old
    folder: copy}. Raises RunBusyError when one is training right now and RunMoveError with a sentence when one
    cannot be copied (a full disk): the copies made until then are removed."""
    import shutil
    import uuid

    source, target = Path(source), Path(target)
    folders = _run_folders(source)
    copied: dict[str, str] = {}
    with _all_locked(folders):
        try:
            if folders:
                target.mkdir(exist_ok=True)
            for folder in folders:
                destination = _free_name(target, folder.name)
                partial = destination.with_name(f".{destination.name}.copying-{uuid.uuid4().hex[:8]}")
                try:
                    shutil.copytree(folder, partial, symlinks=True, copy_function=_copy_or_link,
                                    ignore=shutil.ignore_patterns(LOCK))  # the lock held here stays with the original
                    os.rename(partial, destination)
                except BaseException:
                    shutil.rmtree(partial, ignore_errors=True)
                    raise
                copied[str(folder)] = str(destination)
        except OSError as exc:
            for made in copied.values():
                shutil.rmtree(made, ignore_errors=True)
            with contextlib.suppress(OSError):
                target.rmdir()  # when it is empty again
            raise RunMoveError(f"The runs could not be copied into {target} ({exc.strerror or exc}).") from None
    _point_at_copies(copied)
    return copied


def _point_at_copies(copied: dict[str, str]) -> None:
    """A copied run that names another copied run -- a distilled student its teacher, an adapted run the run it was
    adapted from -- names that run's copy, so that the project's copy stands on its own (a resumed distillation
    asks its teacher again; the teacher-vs-student table names both runs). The runs' settings (config.toml) and the
    table (distill.json) are rewritten whole (they are copies, not shared with the original). Best effort: a copy
    whose files cannot be read or written keeps them as they were, still pointing at the original runs."""
    import dataclasses

    from engine.config import ConfigError, load, save

    def new_place(path: str) -> str | None:
        return by_place.get(str(Path(path).resolve())) if path else None

    by_place = {str(Path(old).resolve()): new for old, new in copied.items()}
    for new in copied.values():
        folder = Path(new)
        try:
            config = load(folder / CONFIG)
        except (ConfigError, OSError):
            continue
        teacher, parent = new_place(config.distill.teacher), new_place(config.adapted_from)
        if teacher or parent:
            changed = dataclasses.replace(
                config, adapted_from=parent or config.adapted_from,
                distill=dataclasses.replace(config.distill, teacher=teacher or config.distill.teacher))
            with contextlib.suppress(ConfigError):
                save(changed, folder / CONFIG)
        table = folder / DISTILL
        try:
            rows = json.loads(table.read_text(encoding="utf-8"))
            moved = {role: new_place(rows[role]["run"]) for role in ("teacher", "student")}
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if any(moved.values()):
            for role, place in moved.items():
                rows[role]["run"] = place or rows[role]["run"]
            with contextlib.suppress(OSError):
                atomic_write_json(table, rows)


# A run's bulk: weights, checkpoints, statistics. The app writes these only by replacing the file whole
# (engine.files.atomic_write), never in place, so a copy may share them with the original (a hard link: no time, no
# space) -- a later write in either project puts a new file there and leaves the other's as it was. Files that grow
# in place (metrics.jsonl during a resumed run) and everything else are copied.
SHARED_ON_COPY = (".safetensors", ".ckpt", ".pt")


def _copy_or_link(source: str, destination: str) -> str:
    import shutil

    if source.endswith(SHARED_ON_COPY):
        try:
            os.link(source, destination)
            return destination
        except OSError:  # another disk, a file system without hard links: copied
            pass
    return shutil.copy2(source, destination)


def _free_name(folder: Path, name: str) -> Path:
    candidate, i = folder / name, 1
    while candidate.exists():
        i += 1
        candidate = folder / f"{name}-{i}"
    return candidate


def _move_folder(source: Path, destination: Path) -> None:
    """Rename ``source`` to ``destination`` (which must not exist); across disks copy it whole first."""
    import shutil
    import uuid

    try:
        os.rename(source, destination)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    partial = destination.with_name(f".{destination.name}.moving-{uuid.uuid4().hex[:8]}")
    try:
        shutil.copytree(source, partial, symlinks=True)
        for root, _dirs, files in os.walk(partial):  # on disk before the original goes
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    os.fsync(f.fileno())
        os.rename(partial, destination)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(source, ignore_errors=True)  # the run is whole in its new place


def move_runs_back(moved: dict[str, str]) -> list[str]:
    """Undo ``move_runs``: move the runs of ``moved`` ({old folder: new folder}) back; the ones that could not be."""
    stranded = []
    for old, new in reversed(list(moved.items())):
        try:
            Path(old).parent.mkdir(parents=True, exist_ok=True)  # move_runs removed it once empty
            _move_folder(Path(new), Path(old))
        except OSError:
            stranded.append(new)
    return stranded
