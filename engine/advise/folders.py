"""*Apply to folders*: carry the review's decisions out on the files themselves, with an undo log.

Until the user chooses this, decisions are overrides in the project (engine.config.DataConfig.exclude / relabel) and
no file moves. Applying them:

- a relabelled picture moves into the folder of its new class, in the same split folder (``train/ants/x.jpg`` ->
  ``train/bees/x.jpg``; a name already taken there gets `` (2)``);
- an excluded picture moves into ``.excluded-by-review/`` inside the data folder, at the same relative place (the
  scan skips hidden folders, so it leaves the dataset but stays with it).

Before the first file moves, the whole plan is written (atomically) to ``.review-undo/<time>.json`` in the data
folder; ``undo_last`` moves every file of the latest log back that is still where it was moved to, so an application
cut short (a crash, a full disk) is undone as well as a complete one. Only folder layouts can be applied: with a CSV
file, the labels are in the file, and the user edits it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine.data.scan import DatasetIndex, SPLIT_FOLDER_NAMES
from engine.errors import UserError
from engine.files import atomic_write_json

EXCLUDED_FOLDER = ".excluded-by-review"
UNDO_FOLDER = ".review-undo"


@dataclass
class Applied:
    moves: list[tuple[str, str]] = field(default_factory=list)  # (from, to), done
    excluded: list[str] = field(default_factory=list)  # the override keys carried out (to drop from the project)
    relabelled: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # sentences: decisions that could not be carried out
    log: str = ""

    def message(self) -> str:
        text = (f"Moved {len(self.moves)} file{'s' if len(self.moves) != 1 else ''}; the undo log is {self.log}."
                if self.moves else "No file needed to move.")
        if self.skipped:
            text += f" {len(self.skipped)} decision{'s' if len(self.skipped) != 1 else ''} could not be applied: " \
                    f"{self.skipped[0]}"
        return text


def _class_folder(index: DatasetIndex, path: Path) -> tuple[Path, Path]:
    """(the class folder that holds ``path``, the path inside it)."""
    rel = path.relative_to(index.root)
    depth = 2 if index.layout == "split-folders" and SPLIT_FOLDER_NAMES.get(rel.parts[0].lower()) else 1
    return Path(index.root).joinpath(*rel.parts[:depth]), Path(*rel.parts[depth:])


def _free(target: Path) -> Path:
    if not target.exists():
        return target
    i = 2
    while (candidate := target.with_name(f"{target.stem} ({i}){target.suffix}")).exists():
        i += 1
    return candidate


def apply_to_folders(index: DatasetIndex, exclude: Iterable[str] = (),
                     relabel: Mapping[str, str] | None = None) -> Applied:
    """Move the files as the decisions say (see the module); ``index`` is the scan without the overrides (or with
    them: only the paths matter). Raises UserError with a sentence when nothing can be applied."""
    if index.layout == "csv":
        raise UserError("The labels of this dataset come from a CSV file, so moving files would not change them: "
                        "edit the CSV file instead (your decisions stay in the project meanwhile).")
    root = Path(index.root)
    from engine.data.scan import override_key

    present = {override_key(index, s.path): Path(s.path) for s in index.samples}
    result = Applied()
    plan: list[tuple[str, str, str, str]] = []  # (from, to, key, "exclude" | "relabel")
    planned: set[Path] = set()
    for key in dict.fromkeys(exclude):
        source = present.get(_key(index, key))
        if source is None:
            result.skipped.append(f"{key} is no longer in the data.")
            continue
        target = _free(root / EXCLUDED_FOLDER / source.relative_to(root))
        plan.append((str(source), str(target), key, "exclude"))
    for key, name in (relabel or {}).items():
        source = present.get(_key(index, key))
        if source is None or key in exclude:
            if source is None:
                result.skipped.append(f"{key} is no longer in the data.")
            continue
        if name not in index.classes:
            result.skipped.append(f"'{name}' is not a class of this data, so {source.name} stays where it is.")
            continue
        folder, inside = _class_folder(index, source)
        if folder.name == name:
            continue
        target = folder.parent / name / inside
        while target in planned or target.exists():
            target = _free(target) if target.exists() else target.with_name(f"{target.stem} (2){target.suffix}")
        planned.add(target)
        plan.append((str(source), str(target), key, "relabel"))
    if not plan:
        return result
    log_dir = root / UNDO_FOLDER
    log = log_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.json"
    try:
        log_dir.mkdir(exist_ok=True)
        atomic_write_json(log, {"root": str(root), "made": time.time(),
                                "moves": [{"from": a, "to": b} for a, b, _, _ in plan]})
    except OSError as exc:
        raise UserError(f"The folder {root} cannot be written to ({(exc.strerror or str(exc)).lower()}), so no "
                        "file was moved: your decisions stay in the project.") from None
    result.log = str(log)
    for source, target, key, what in plan:
        try:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(source, target)
        except OSError as exc:
            result.skipped.append(f"{source} could not be moved ({(exc.strerror or str(exc)).lower()}).")
            continue
        result.moves.append((source, target))
        (result.excluded if what == "exclude" else result.relabelled).append(key)
    return result


def _key(index: DatasetIndex, key: str) -> str:
    from engine.data.scan import override_key

    return override_key(index, os.path.join(index.root, key))


def undo_logs(root: str | os.PathLike) -> list[Path]:
    """The undo logs of a data folder, oldest first."""
    folder = Path(root) / UNDO_FOLDER
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def undo_last(root: str | os.PathLike) -> Applied:
    """Move back the files of the latest application (those still where it put them) and remove its log."""
    logs = undo_logs(root)
    if not logs:
        raise UserError(f"There is nothing to undo in {root}: no review was applied to its folders.")
    log = logs[-1]
    try:
        moves = json.loads(log.read_text(encoding="utf-8"))["moves"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"The undo log {log} cannot be read, so nothing was moved back.") from None
    result = Applied(log=str(log))
    for move in reversed(moves):
        source, target = Path(move["from"]), Path(move["to"])
        if not target.exists():
            continue  # never moved (cut short), or moved on by the user since
        if source.exists():
            result.skipped.append(f"{source} exists again, so {target} stays where it is.")
            continue
        try:
            source.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(target), str(source))
        except OSError as exc:
            result.skipped.append(f"{target} could not be moved back ({(exc.strerror or str(exc)).lower()}).")
            continue
        result.moves.append((str(target), str(source)))
    if not result.skipped:
        log.unlink(missing_ok=True)
        _remove_empty(Path(root) / EXCLUDED_FOLDER)
        _remove_empty(Path(root) / UNDO_FOLDER)
    return result


def _remove_empty(folder: Path) -> None:
    if not folder.is_dir():
        return
    for current, _, _ in sorted(os.walk(folder), key=lambda t: -len(t[0])):
        try:
            os.rmdir(current)
        except OSError:
            pass
