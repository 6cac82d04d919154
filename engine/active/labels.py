"""The user's answers for pool pictures, kept in a CSV file beside the project (``<project>-labels.csv``).

The file has the columns ``path,label`` (the same two columns as a dataset CSV, so it can be opened in a spreadsheet
or used as a dataset itself): ``label`` is a class name, or ``<none of these>`` for a picture that belongs to none of
the classes (a folder cannot be named with ``<`` and ``>`` on Windows, so no class can clash with it). Paths inside
the CSV file's folder are written relative to it (the project folder can move), others absolute. Every save rewrites
the whole file atomically (engine.files): a crash leaves the old answers or the new ones, never half of them.

"None of these" pictures are kept (so they are never suggested again) but never join training.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import UserError
from engine.files import atomic_write, atomic_write_text

__all__ = ["NONE_OF_THESE", "LABELS_SUFFIX", "Labels", "copy_into_class_folders", "labels_path_for", "read_labels"]

NONE_OF_THESE = "<none of these>"
LABELS_SUFFIX = "-labels.csv"


def _key(path: str | os.PathLike) -> str:
    return os.path.normcase(os.path.abspath(os.path.expanduser(str(path))))


@dataclass
class Labels:
    """Answers by picture (absolute paths, in the order they were given) and the CSV file they live in."""

    path: str
    answers: dict[str, str] = field(default_factory=dict)

    # -- reading ---------------------------------------------------------------------------------------------

    def label_of(self, picture: str) -> str | None:
        return self.answers.get(_key(picture))

    def labelled(self) -> dict[str, str]:
        """The pictures given a class (not "none of these"): the ones that join training."""
        return {p: c for p, c in self.answers.items() if c != NONE_OF_THESE}

    def none_of_these(self) -> list[str]:
        return [p for p, c in self.answers.items() if c == NONE_OF_THESE]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for label in self.answers.values():
            out[label] = out.get(label, 0) + 1
        return out

    def __len__(self) -> int:
        return len(self.answers)

    def __contains__(self, picture: object) -> bool:
        return isinstance(picture, (str, os.PathLike)) and _key(picture) in self.answers

    # -- changing (call save() to keep) ----------------------------------------------------------------------

    def set(self, pictures: str | Iterable[str], label: str) -> None:
        """Give one picture or several the class ``label`` (or NONE_OF_THESE); a later answer replaces an earlier."""
        label = str(label).strip()
        if not label:
            raise UserError("A label cannot be empty: choose a class, or 'none of these'.")
        for picture in [pictures] if isinstance(pictures, (str, os.PathLike)) else pictures:
            key = _key(picture)
            self.answers.pop(key, None)  # a changed answer moves to the end: the order is the order of answering
            self.answers[key] = label

    def remove(self, pictures: str | Iterable[str]) -> None:
        for picture in [pictures] if isinstance(pictures, (str, os.PathLike)) else pictures:
            self.answers.pop(_key(picture), None)

    def save(self) -> Path:
        """Write the CSV file atomically; raise UserError with a sentence when it cannot be written."""
        target = Path(self.path)
        base = target.parent.resolve()
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "label"])
        for picture, label in self.answers.items():
            writer.writerow([_relative(picture, base), label])
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(target, buffer.getvalue())
        except OSError as exc:
            raise UserError(f"The labels could not be saved to {target} ({exc.strerror or exc}): check that the "
                            "folder can be written to and the disk is not full.") from None
        return target


def read_labels(path: str | os.PathLike) -> Labels:
    """The answers in a labels CSV file; an empty set when the file does not exist yet. UserError when it cannot be
    read or has no path,label columns."""
    target = Path(path).expanduser().absolute()
    labels = Labels(str(target))
    try:
        with target.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        return labels
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"The labels file {target} cannot be read ({getattr(exc, 'strerror', None) or exc}): "
                        "restore it from a copy, or move it away to start labelling afresh.") from None
    header = [c.strip().lower() for c in rows[0]] if rows else []
    if "path" not in header or "label" not in header:
        raise UserError(f"The labels file {target} must have the columns path,label: restore it from a copy, or move "
                        "it away to start labelling afresh.")
    p, l = header.index("path"), header.index("label")
    for row in rows[1:]:
        if len(row) <= max(p, l) or not row[p].strip() or not row[l].strip():
            continue
        labels.answers[_key(target.parent / row[p].strip())] = row[l].strip()
    return labels


def copy_into_class_folders(labels: Labels, root: str | os.PathLike) -> list[str]:
    """Copy every picture given a class into ``root/<class>/`` (a dataset folder with one sub-folder per class), so
    that the labelled data itself holds them; "none of these" pictures are not copied. A picture already there (the
    same name and size) is skipped; another file of the same name gets a numbered name. Each copy is atomic. Returns
    the files written."""
    root = Path(root).expanduser()
    written: list[str] = []
    for picture, label in labels.labelled().items():
        source = Path(picture)
        folder = root / label
        try:
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / source.name
            n = 2
            while target.exists():
                if target.stat().st_size == source.stat().st_size:
                    break
                target = folder / f"{source.stem}-{n}{source.suffix}"
                n += 1
            else:
                atomic_write(target, lambda tmp, src=source: shutil.copyfile(src, tmp))
                written.append(str(target))
        except OSError as exc:
            raise UserError(f"{source.name} could not be copied into {folder} ({exc.strerror or exc}); "
                            f"{len(written)} pictures were copied before it.") from None
    return written


def _relative(picture: str, base: Path) -> str:
    try:
        return Path(picture).resolve().relative_to(base).as_posix()
    except ValueError:
        return picture


def labels_path_for(project) -> Path:
    """Where a project's labels live: its own setting, else ``<project>-labels.csv`` beside the project file, else
    (a project not yet saved) beside its runs folder in the app's data folder."""
    if project.labels:
        return Path(project.labels)
    if project.path:
        from engine.project.project import safe_file_stem

        return Path(project.path).parent / f"{safe_file_stem(Path(project.path).stem)}{LABELS_SUFFIX}"
    out = Path(project.config.out)
    return out.with_name(out.name + LABELS_SUFFIX)
