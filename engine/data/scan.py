"""Find the pictures of a dataset, split them into train/val/test and report on the dataset's health.

Three layouts are recognised:

- ``class-folders``: a folder with one sub-folder per class (pictures in nested folders count for that class);
- ``split-folders``: a folder holding ``train/``, ``val/`` (or ``valid/``, ``validation/``) and optionally ``test/``,
  each with one sub-folder per class;
- ``csv``: a CSV file with the columns ``path,label`` and optionally ``split`` (relative paths start at its folder).

When the data names no validation pictures (no ``val`` folder or ``val`` rows), the training pictures are split here
with :func:`stratified_split`. Hidden entries (names starting with ``.``) and files that are not pictures are skipped;
pictures that cannot be decoded are reported in the health report and left out of the samples.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import random
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from engine.errors import UserError
from engine.data import formats as _formats
from engine.data.formats import FormatSettings, Inspection
from engine.data.images import is_image_path

__all__ = [
    "SPLITS",
    "Advice",
    "DataError",
    "DatasetIndex",
    "HealthReport",
    "Problem",
    "Sample",
    "apply_overrides",
    "scan",
    "stratified_split",
]

SPLITS = ("train", "val", "test")
FEW_PICTURES = 10  # fewer training pictures than this in a class -> "few-images" advice
GOOD_START = 20  # the number of pictures per class the advice recommends
IMBALANCE_RATIO = 5.0  # largest / smallest training class at or above this -> "imbalance" advice

SPLIT_FOLDER_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_HIDDEN_FOLDERS = frozenset({"__MACOSX"})  # resource forks left by macOS zip files
_LISTED_PROBLEMS = 20  # HealthReport.lines() lists at most this many left-out files


class DataError(UserError):
    """The dataset cannot be used; ``str(error)`` is one plain sentence saying why and what to do."""


@dataclass(frozen=True)
class Sample:
    """One readable picture: absolute path, class index into ``DatasetIndex.classes`` and split name."""

    path: str
    label: int
    split: str


@dataclass(frozen=True)
class Problem:
    """A file (or CSV line, or folder) left out of the dataset, with the plain reason why."""

    path: str
    reason: str


@dataclass(frozen=True)
class Advice:
    """A health finding that says what is wrong and what to do about it.

    ``kind`` is one of: ``few-images`` (a class has fewer than 10 training pictures), ``missing-in-train`` (a class
    has validation or test pictures but no training ones), ``imbalance`` (largest / smallest training class >= 5),
    ``missing-in-val`` (a class has training pictures but no validation ones), ``no-validation`` (no validation
    pictures at all), ``empty-class`` (a class folder or CSV label without any readable picture, left out),
    ``outside-class`` (pictures lying outside any class folder, ignored), ``duplicate-path`` (CSV rows repeating a
    picture, ignored), ``unreadable`` (summary of the files left out), ``overrides`` (pictures left out or relabelled
    by the user's review), ``override-unknown-class`` (a relabelling to a class the data does not have, ignored) and
    ``small-pictures`` (pictures far smaller than the model's input; from small_pictures_advice, once a model is known).
    """

    kind: str
    message: str


@dataclass
class HealthReport:
    """What was left out or skipped while scanning, and advice on the dataset."""

    unreadable: list[Problem] = field(default_factory=list)
    ignored: int = 0  # hidden entries, files that are not pictures and pictures outside any class folder
    advice: list[Advice] = field(default_factory=list)
    # The user's review decisions that were applied (apply_overrides): {"excluded": [path, ...], "relabelled":
    # {path: class}}, absolute paths; empty when there are none. A run's dataset.json records them through to_dict.
    overrides: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        out = {
            "unreadable": [asdict(problem) for problem in self.unreadable],
            "ignored": self.ignored,
            "advice": [asdict(item) for item in self.advice],
        }
        if self.overrides:
            out["overrides"] = self.overrides
        return out

    def lines(self) -> list[str]:
        """Human-readable lines for the command line."""
        out = [f"- {item.message}" for item in self.advice]
        if self.unreadable:
            out.append(f"Left out ({len(self.unreadable)}):")
            out.extend(f"  {problem.path}: {problem.reason}" for problem in self.unreadable[:_LISTED_PROBLEMS])
            if len(self.unreadable) > _LISTED_PROBLEMS:
                out.append(f"  ... and {len(self.unreadable) - _LISTED_PROBLEMS} more.")
        if self.ignored:
            out.append(f"Skipped {self.ignored} hidden entries or files that are not pictures.")
        return out or ["No problems found."]


@dataclass
class DatasetIndex:
    """The readable pictures of a dataset, their classes and splits, and its health report."""

    root: str
    layout: str  # "class-folders", "split-folders" or "csv"
    classes: list[str]
    samples: list[Sample]
    health: HealthReport
    split_source: str  # "folders": validation pictures given by the data; "random": seeded stratified split
    own_split: bool = False  # the data gives validation pictures (train/ val/ folders, a CSV's split column), whether
    # or not they were used (split="random" pools them)
    # What was read (format_summary): {"files": {"JPEG": 10, "DICOM": 4, ...}, "slides": {...}, "settings": {...}};
    # never a tag of a file (no patient data).
    formats: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> list[Sample]:
        """The samples of one split ("train", "val" or "test"), in path order."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return [sample for sample in self.samples if sample.split == name]

    def counts(self) -> dict[str, dict[str, int]]:
        """Pictures per split and class, every split and class included (zeros too)."""
        return count_samples(self.samples, self.classes)

    def to_dict(self, with_samples: bool = False) -> dict[str, Any]:
        """JSON-serialisable summary (the samples themselves only when asked for)."""
        counts = self.counts()
        summary: dict[str, Any] = {
            "root": self.root,
            "layout": self.layout,
            "split_source": self.split_source,
            "classes": list(self.classes),
            "counts": counts,
            "totals": {name: sum(per_class.values()) for name, per_class in counts.items()},
            "health": self.health.to_dict(),
        }
        if self.formats:
            summary["formats"] = self.formats
        if with_samples:
            summary["samples"] = [
                {"path": s.path, "label": s.label, "class": self.classes[s.label], "split": s.split}
                for s in self.samples
            ]
        return summary


def scan(
    source: str | os.PathLike[str],
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    split: str = "auto",
    verify: bool = True,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
    exclude: Iterable[str] = (),
    relabel: Mapping[str, str] | None = None,
    formats: Any = None,
) -> DatasetIndex:
    """Index a dataset folder or CSV file; raise DataError when it cannot be used.

    With ``verify`` every picture is decoded (at a reduced size) on ``workers`` threads, and ``on_progress(done,
    total)`` is called from the calling thread as pictures are checked. Setting ``stop`` cancels the scan.
    ``test_fraction`` only applies when the data gives no test pictures itself. ``split="auto"`` keeps the data's
    own split (train/ val/ folders, a CSV's split column) when it has one; ``split="random"`` pools every picture and
    draws the split, class by class. ``exclude`` and ``relabel`` are the user's review decisions (see
    :func:`apply_overrides`), applied after the split is drawn.

    ``formats`` (a DataConfig or engine.data.formats.FormatSettings; None: the process's active settings) says how
    lab pictures are read: slides become their tissue tiles and multi-frame DICOMs read with every frame become their
    frames, all pictures of one file in the same split. The settings (the dataset's contrast range resolved) become
    the process's active ones, so that every view of a picture matches what the model sees.
    """
    settings = _settings_of(formats)
    if split not in ("auto", "random"):
        raise DataError(f"Unknown split '{split}': choose auto (the data's own split when it has one) or random.")
    if not _valid_fractions(val_fraction, test_fraction):
        raise DataError(
            "The validation and test fractions must each be between 0 and 1 and add up to less than 1 "
            f"(got {val_fraction:g} and {test_fraction:g})."
        )
    root = Path(os.path.abspath(Path(source).expanduser()))
    if root.is_dir():
        listing = _list_folder(root, stop)
    elif root.is_file() and root.suffix.lower() == ".csv":
        listing = _list_csv(root)
    elif root.suffix.lower() == ".csv" and not root.exists():
        raise DataError(f"The file {root} does not exist.")
    elif not root.exists():
        raise DataError(f"The folder {root} does not exist.")
    else:
        raise DataError(
            f"{root} is not a folder or a CSV file: choose a folder with one sub-folder per class, "
            "or a CSV file with the columns path,label."
        )

    candidates = sorted(listing.candidates)
    paths = [c.path for c in candidates]
    inspections = _verify(paths, workers, on_progress, stop, settings, verify)
    reasons = [found.reason for found in inspections]
    readable = [c for c, reason in zip(candidates, reasons, strict=True) if reason is None]
    problems = listing.problems + [
        Problem(c.path, r) for c, r in zip(candidates, reasons, strict=True) if r is not None
    ]
    channels = None
    if settings.all_channels:  # every channel into the model: every picture must have as many
        readable, odd, channels = _same_channels(readable, settings)
        problems += odd
    problems.sort(key=lambda problem: problem.path)

    classes = sorted({c.class_name for c in readable})
    if len(classes) < 2:
        raise DataError(_too_few_classes(root, listing, classes, problems))
    samples, split_source = _assign_splits(readable, classes, val_fraction, test_fraction, seed, split)
    # A file that gives several pictures (a slide's tiles, a DICOM's frames) gives them all to its own split.
    parts = {c.path: found.parts for c, found in zip(candidates, inspections, strict=True)
             if found.reason is None and found.parts is not None}
    if parts:
        samples = [Sample(part, s.label, s.split) for s in samples for part in (parts.get(s.path) or (s.path,))]
    if settings.stretch == "dataset":
        settings = dataclasses.replace(settings, stretch_range=_formats.dataset_range([s.path for s in samples],
                                                                                    settings))
    _formats.activate(settings)
    read = [found for found, reason in zip(inspections, reasons, strict=True) if reason is None]

    advice = class_advice(count_samples(samples, classes), split_source)
    advice += [
        Advice("empty-class", f"Class '{name}' has no readable pictures and was left out.")
        for name in sorted(listing.class_names - set(classes))
    ]
    advice += listing.advice
    if problems:
        advice.append(
            Advice(
                "unreadable",
                f"{_plural(len(problems), 'file')} could not be used and {'were' if len(problems) > 1 else 'was'} "
                "left out: fix or remove them (the list says what is wrong with each).",
            )
        )
    health = HealthReport(unreadable=problems, ignored=listing.ignored, advice=advice)
    own = any(c.split == "val" for c in readable)
    index = DatasetIndex(str(root), listing.layout, classes, samples, health, split_source, own,
                         format_summary(read, settings, channels))
    return apply_overrides(index, exclude, relabel)


def _settings_of(formats: Any) -> FormatSettings:
    if formats is None:
        return _formats.active()
    if isinstance(formats, FormatSettings):
        return formats
    return FormatSettings.from_data(formats)


def _same_channels(readable: list[_Candidate], settings: FormatSettings
                   ) -> tuple[list[_Candidate], list[Problem], int | None]:
    """The pictures with the most common number of channels, the others as problems, and that number."""
    counts = {c.path: _formats.channel_count(c.path, settings) for c in readable}
    known = [n for n in counts.values() if n]
    if not known:
        return readable, [], None
    common = max(sorted(set(known)), key=known.count)
    kept = [c for c in readable if counts[c.path] == common]
    odd = [Problem(c.path, f"The picture has {counts[c.path] or 'another number of'} channel"
                           f"{'s' if counts[c.path] != 1 else ''}, but most pictures have {common}: with every "
                           "channel going into the model (channels = all), all pictures need the same channels.")
           for c in readable if counts[c.path] != common]
    return kept, odd, common


def format_summary(read: Sequence[Inspection], settings: FormatSettings, channels: int | None = None
                   ) -> dict[str, Any]:
    """How many files of each format were read, the slides' tiles, and the settings when lab pictures were read
    (empty for a folder of ordinary pictures read with the default settings: nothing to say); with the channels
    setting "all", the number of channels every picture gives the model."""
    files = _formats.summary(found.label for found in read)
    lab = any(found.label not in _ORDINARY_LABELS for found in read)
    if not lab and settings == FormatSettings():
        return {"files": files} if files else {}
    out: dict[str, Any] = {"files": files, "settings": settings.to_dict()}
    if channels is not None:
        out["channels"] = channels
    slides = [found for found in read if found.label == "slide"]
    if slides:
        out["slides"] = {"slides": len(slides), "tiles": sum(len(found.parts or ()) for found in slides),
                         "background": sum(found.background for found in slides)}
    frames = [found for found in read if found.parts is not None and found.label != "slide"]
    if frames:
        out["frames"] = {"files": len(frames), "pictures": sum(len(found.parts or ()) for found in frames)}
    return out


_ORDINARY_LABELS = frozenset({"JPEG", "PNG", "BMP", "GIF", "WebP", "TIFF"})


def format_lines(index: DatasetIndex) -> list[str]:
    """The scan's lines on what was read and with which settings (the command line prints them)."""
    info = index.formats or {}
    files = info.get("files") or {}
    if not files:
        return []
    total = sum(files.values())
    lines = [f"Read {_plural(total, 'file')}: "
             + ", ".join(_plural(n, label) if label == "slide" else f"{n} {label}" for label, n in files.items()) + "."]
    slides = info.get("slides")
    if slides:
        lines.append(f"{_plural(slides['slides'], 'slide')} cut into {_plural(slides['tiles'], 'tile')} "
                     f"({slides['background']} background {'tile' if slides['background'] == 1 else 'tiles'} "
                     "skipped); each tile has its slide's class and split.")
    frames = info.get("frames")
    if frames:
        lines.append(f"{_plural(frames['files'], 'multi-frame DICOM')} gave {_plural(frames['pictures'], 'picture')}"
                     " (one per frame).")
    if "settings" in info:
        settings = FormatSettings.from_dict(info["settings"])
        lines.append(f"Settings: {settings.words()}.")
        if info.get("channels"):
            lines.append(f"Every picture gives the model {_plural(info['channels'], 'channel')}: its first layer is "
                         "adapted to take them.")
        if settings.stretch == "dataset" and settings.stretch_range:
            ranges = "; ".join(f"{lo:.4g} to {hi:.4g}" for lo, hi in settings.stretch_range)
            lines.append(f"The dataset's contrast range: {ranges}.")
    return lines


# Advice that follows from the pictures per split and class (computed again when overrides change them).
_COUNT_ADVICE = frozenset({"few-images", "missing-in-train", "imbalance", "no-validation", "missing-in-val"})


def override_key(index: DatasetIndex, path: str) -> str:
    """How an override names a picture: its path relative to the data's folder (the folder itself, or the CSV file's
    folder) with forward slashes, or the absolute path when it lies elsewhere. Stable when the folder moves."""
    base = index.root if index.layout != "csv" else os.path.dirname(index.root)
    rel = os.path.relpath(os.path.abspath(path), base)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
        return os.path.abspath(path)
    return rel.replace(os.sep, "/")


def apply_overrides(index: DatasetIndex, exclude: Iterable[str] = (),
                    relabel: Mapping[str, str] | None = None) -> DatasetIndex:
    """``index`` with the user's review decisions applied; the files themselves are never touched.

    ``exclude`` lists pictures to leave out of every split; ``relabel`` maps pictures to the class they really
    belong to. Both name pictures as :func:`override_key` does (absolute paths work too). They are applied after the
    split is drawn, so excluding or relabelling one picture never moves another between training and validation,
    and a run before and one after a review are measured on the same validation pictures. A picture that is no longer
    in the data is skipped; a relabelling to a class the data does not have is ignored, with advice saying so.
    """
    exclude = tuple(exclude)
    relabel = dict(relabel or {})
    if not exclude and not relabel:
        return index
    base = index.root if index.layout != "csv" else os.path.dirname(index.root)

    def key(path: str) -> str:
        return os.path.normcase(os.path.normpath(os.path.join(base, path)))

    excluded = {key(p) for p in exclude}
    wanted = {key(p): name for p, name in relabel.items()}
    label_of = {name: i for i, name in enumerate(index.classes)}
    samples: list[Sample] = []
    left_out: list[str] = []
    relabelled: dict[str, str] = {}
    unknown: dict[str, int] = {}
    for sample in index.samples:
        k = key(sample.path)
        if k in excluded:
            left_out.append(sample.path)
            continue
        name = wanted.get(k)
        if name is not None and name not in label_of:
            unknown[name] = unknown.get(name, 0) + 1
        elif name is not None:
            relabelled[sample.path] = name
            sample = Sample(sample.path, label_of[name], sample.split)
        samples.append(sample)
    advice = class_advice(count_samples(samples, index.classes), index.split_source)
    advice += [a for a in index.health.advice if a.kind not in _COUNT_ADVICE]
    if left_out or relabelled:
        parts = []
        if left_out:
            parts.append(f"{_plural(len(left_out), 'picture')} left out")
        if relabelled:
            parts.append(f"{_plural(len(relabelled), 'picture')} given another class")
        advice.append(Advice("overrides", f"Your review applies: {' and '.join(parts)}. The files themselves are "
                             "unchanged; undo a decision in the Review view of the Data step."))
    for name, n in sorted(unknown.items()):
        advice.append(Advice("override-unknown-class",
                             f"{_plural(n, 'picture')} should become '{name}', but the data has no such class: "
                             f"{'they keep their' if n > 1 else 'it keeps its'} own class. Add a folder '{name}' "
                             "or choose another class in the Review view."))
    overrides: dict[str, Any] = {}
    if left_out:
        overrides["excluded"] = left_out
    if relabelled:
        overrides["relabelled"] = relabelled
    health = HealthReport(index.health.unreadable, index.health.ignored, advice, overrides)
    return DatasetIndex(index.root, index.layout, list(index.classes), samples, health, index.split_source,
                        index.own_split, index.formats)


def stratified_split(labels: Sequence[int], val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """Assign "train", "val" or "test" to each label's position, class by class, reproducibly for a seed.

    Each class keeps at least one training picture; with ``val_fraction > 0`` each class of two or more pictures
    gives at least one to validation (and with ``test_fraction > 0`` each class of three or more one to test).
    The result depends only on the labels and their order, so callers sort their items (by path) first.
    """
    if not _valid_fractions(val_fraction, test_fraction):
        raise ValueError(f"invalid fractions: val={val_fraction}, test={test_fraction}")
    out = ["train"] * len(labels)
    members: dict[int, list[int]] = {}
    for position, label in enumerate(labels):
        members.setdefault(label, []).append(position)
    for label, positions in members.items():
        random.Random(f"{seed}/{label}").shuffle(positions)  # a class's split ignores the other classes
        n = len(positions)
        n_val = _share(n, val_fraction, minimum=1 if n >= 2 else 0)
        n_test = _share(n, test_fraction, minimum=1 if n >= 3 else 0)
        n_test = min(n_test, n - 1 - n_val)
        for position in positions[:n_val]:
            out[position] = "val"
        for position in positions[n_val : n_val + n_test]:
            out[position] = "test"
    return out


def _valid_fractions(val_fraction: float, test_fraction: float) -> bool:
    return 0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0


def _share(n: int, fraction: float, minimum: int) -> int:
    """Items of a class of ``n`` given to a split: rounded, at least ``minimum`` when the fraction is > 0."""
    if fraction <= 0.0:
        return 0
    return min(n - 1, max(minimum, int(n * fraction + 0.5)))


class _Candidate(NamedTuple):
    path: str
    class_name: str
    split: str | None  # given by the data; None when the split is made here


@dataclass
class _Listing:
    layout: str
    candidates: list[_Candidate] = field(default_factory=list)
    class_names: set[str] = field(default_factory=set)  # every class the data names, even without pictures
    problems: list[Problem] = field(default_factory=list)
    advice: list[Advice] = field(default_factory=list)
    ignored: int = 0
    loose: int = 0  # pictures outside any class folder


def _list_folder(root: Path, stop: threading.Event | None) -> _Listing:
    folders, files, hidden = _children(root)
    split_folders: dict[str, Path] = {}
    for folder in folders:
        split = SPLIT_FOLDER_NAMES.get(folder.name.lower())
        if split is None:
            continue
        if split in split_folders:
            raise DataError(
                f"{root} has both a '{split_folders[split].name}' and a '{folder.name}' folder: keep only one."
            )
        split_folders[split] = folder

    if "val" in split_folders and "train" not in split_folders:
        raise DataError(
            f"{root} has a '{split_folders['val'].name}' folder but no 'train' folder: add a train folder with one "
            "sub-folder per class."
        )
    if "train" in split_folders:
        listing = _Listing("split-folders", ignored=hidden + len(files) + len(folders) - len(split_folders))
        listing.loose = sum(1 for file in files if is_image_path(file))
        for split, folder in split_folders.items():
            _add_class_folders(listing, folder, split, stop)
    else:
        listing = _Listing("class-folders")
        _add_class_folders(listing, root, None, stop, (folders, files, hidden))
    if listing.loose:
        listing.advice.append(
            Advice(
                "outside-class",
                f"{_plural(listing.loose, 'picture')} outside any class folder {'were' if listing.loose > 1 else 'was'}"
                " ignored: move each one into the sub-folder of its class.",
            )
        )
    return listing


def _add_class_folders(
    listing: _Listing,
    folder: Path,
    split: str | None,
    stop: threading.Event | None,
    children: tuple[list[Path], list[Path], int] | None = None,
) -> None:
    class_folders, files, hidden = children or _children(folder)
    listing.loose += sum(1 for file in files if is_image_path(file))
    listing.ignored += hidden + len(files)
    for class_folder in class_folders:
        listing.class_names.add(class_folder.name)
        listing.candidates.extend(
            _Candidate(path, class_folder.name, split) for path in _walk_pictures(class_folder, listing, stop)
        )


def _children(folder: Path) -> tuple[list[Path], list[Path], int]:
    """Visible sub-folders and files of a folder (sorted), and the number of hidden entries."""
    folders: list[Path] = []
    files: list[Path] = []
    hidden = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if _is_hidden(entry.name):
                    hidden += 1
                elif entry.is_dir():
                    folders.append(Path(entry.path))
                else:
                    files.append(Path(entry.path))
    except OSError as error:
        raise DataError(f"The folder {folder} cannot be read ({_reason(error)}).") from None
    return sorted(folders), sorted(files), hidden


def _walk_pictures(folder: Path, listing: _Listing, stop: threading.Event | None) -> Iterable[str]:
    """Picture paths under a class folder; follows links to folders but visits each real folder once."""
    visited = {os.path.realpath(folder)}

    def unreadable_folder(error: OSError) -> None:
        listing.problems.append(Problem(str(error.filename), f"The folder cannot be read ({_reason(error)})."))

    for current, folder_names, file_names in os.walk(folder, onerror=unreadable_folder, followlinks=True):
        _raise_if_stopped(stop)
        kept = []
        for name in folder_names:
            real = os.path.realpath(os.path.join(current, name))
            if _is_hidden(name):
                listing.ignored += 1
            elif real not in visited:
                visited.add(real)
                kept.append(name)
        folder_names[:] = kept
        for name in file_names:
            if is_image_path(name):
                yield os.path.join(current, name)
            elif not os.path.splitext(name)[1] and _formats.is_picture_file(os.path.join(current, name)):
                yield os.path.join(current, name)  # an extension-less DICOM file (it carries the DICOM preamble)
            else:
                listing.ignored += 1


def _list_csv(csv_path: Path) -> _Listing:
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError:
        raise DataError(f"The CSV file {csv_path} cannot be read: save it as UTF-8 text.") from None
    except csv.Error as error:
        raise DataError(f"The CSV file {csv_path} is not valid CSV ({error}).") from None
    except OSError as error:
        raise DataError(f"The CSV file {csv_path} cannot be read ({_reason(error)}).") from None

    header = [name.strip().lower() for name in rows[0]] if rows else []
    if "path" not in header or "label" not in header:
        found = ",".join(rows[0]) if rows else "an empty file"
        raise DataError(f"The CSV file {csv_path} must have the columns path,label (found: {found}).")
    path_col, label_col = header.index("path"), header.index("label")
    split_col = header.index("split") if "split" in header else None

    listing = _Listing("csv")
    listed: set[str] = set()
    repeats = 0
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = row + [""] * (len(header) - len(row))
        raw_path, label = cells[path_col].strip(), cells[label_col].strip()
        path = os.path.normpath(os.path.join(csv_path.parent, raw_path)) if raw_path else f"{csv_path}:{line}"
        if not raw_path or not label:
            missing = "path" if not raw_path else "label"
            listing.problems.append(Problem(path, f"Line {line} of the CSV file has no {missing}."))
            continue
        split = None
        if split_col is not None:
            split = SPLIT_FOLDER_NAMES.get(cells[split_col].strip().lower())
            if split is None:
                listing.problems.append(
                    Problem(
                        path,
                        f"Line {line} of the CSV file has the split '{cells[split_col].strip()}': "
                        "use train, val or test.",
                    )
                )
                continue
        listing.class_names.add(label)
        if path in listed:
            repeats += 1
        elif not os.path.isfile(path):
            listed.add(path)
            listing.problems.append(Problem(path, "The file does not exist."))
        else:
            listed.add(path)
            listing.candidates.append(_Candidate(path, label, split))
    if repeats:
        listing.advice.append(
            Advice(
                "duplicate-path",
                f"{_plural(repeats, 'row')} of the CSV file repeat a picture listed above and "
                f"{'were' if repeats > 1 else 'was'} ignored: list each picture once.",
            )
        )
    return listing


def _verify(
    paths: list[str],
    workers: int | None,
    on_progress: Callable[[int, int], None] | None,
    stop: threading.Event | None,
    settings: FormatSettings | None = None,
    verify: bool = True,
) -> list[Inspection]:
    """Decode every picture on a thread pool (with ``verify``; without, only the files that give several pictures
    are opened, to list those); what each one is and the reason it cannot be used, or None."""
    _raise_if_stopped(stop)
    total = len(paths)
    settings = settings or _formats.active()
    reasons: list[Inspection] = [Inspection("other")] * total
    if not verify:
        return [_formats.inspect(path, settings, decode=False) for path in paths]
    if on_progress is not None:
        on_progress(0, total)
    pool = ThreadPoolExecutor(max_workers=max(1, workers or min(8, (os.cpu_count() or 1) * 2)))
    try:
        futures = {pool.submit(_formats.inspect, path, settings): i for i, path in enumerate(paths)}
        for done, future in enumerate(as_completed(futures), start=1):
            _raise_if_stopped(stop)
            reasons[futures[future]] = future.result()
            if on_progress is not None:
                on_progress(done, total)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return reasons


def _assign_splits(
    readable: list[_Candidate], classes: list[str], val_fraction: float, test_fraction: float, seed: int,
    split: str = "auto",
) -> tuple[list[Sample], str]:
    """Samples with their splits, and the split source ("folders" or "random")."""
    label_of = {name: i for i, name in enumerate(classes)}
    if split == "random":  # the data's own split set aside: everything is drawn
        readable = [c._replace(split=None) for c in readable]
    given = {c.split for c in readable}
    if "val" in given:
        return [Sample(c.path, label_of[c.class_name], c.split or "train") for c in readable], "folders"
    pool = [c for c in readable if c.split in (None, "train")]
    drawn = stratified_split(
        [label_of[c.class_name] for c in pool], val_fraction, 0.0 if "test" in given else test_fraction, seed
    )
    split_of = {c.path: split for c, split in zip(pool, drawn, strict=True)}
    samples = [Sample(c.path, label_of[c.class_name], split_of.get(c.path, c.split or "train")) for c in readable]
    return samples, "random"


def count_samples(samples: Iterable[Sample], classes: list[str]) -> dict[str, dict[str, int]]:
    counts = {split: dict.fromkeys(classes, 0) for split in SPLITS}
    for sample in samples:
        counts[sample.split][classes[sample.label]] += 1
    return counts


def class_advice(counts: dict[str, dict[str, int]], split_source: str) -> list[Advice]:
    train, val = counts["train"], counts["val"]
    advice = []
    for name, n in train.items():
        if n == 0:
            advice.append(
                Advice(
                    "missing-in-train",
                    f"Class '{name}' has no training pictures, so the model cannot learn it: add training pictures.",
                )
            )
        elif n < FEW_PICTURES:
            advice.append(
                Advice(
                    "few-images",
                    f"Class '{name}' has only {_plural(n, 'training picture')}: add more (at least {GOOD_START} is "
                    "a good start) or merge it with a similar class.",
                )
            )
    present = {name: n for name, n in train.items() if n > 0}
    if len(present) >= 2:
        largest = max(present, key=present.__getitem__)
        smallest = min(present, key=present.__getitem__)
        ratio = present[largest] / present[smallest]
        if ratio >= IMBALANCE_RATIO:
            advice.append(
                Advice(
                    "imbalance",
                    f"The classes are unbalanced: '{largest}' has {present[largest]} training pictures but "
                    f"'{smallest}' only {present[smallest]} ({ratio:.0f} times fewer). Add pictures to the small "
                    "classes, or expect the model to favour the large ones.",
                )
            )
    if not any(val.values()):
        advice.append(
            Advice(
                "no-validation",
                "There are no validation pictures, so accuracy cannot be measured during training: "
                "add a val folder or set a validation fraction above 0.",
            )
        )
        return advice
    where = "add some to the validation folder" if split_source == "folders" else "add more pictures of it"
    advice.extend(
        Advice(
            "missing-in-val",
            f"Class '{name}' has no validation pictures, so how well the model recognises it cannot be "
            f"measured: {where}.",
        )
        for name, n in train.items()
        if n > 0 and val[name] == 0
    )
    return advice


def _too_few_classes(root: Path, listing: _Listing, classes: list[str], problems: list[Problem]) -> str:
    if classes:
        hint = {
            "class-folders": f"add a sub-folder of pictures for each other class (if '{classes[0]}' itself holds "
            "one folder per class, choose that folder instead).",
            "split-folders": "add a sub-folder of pictures for each other class in the train folder.",
            "csv": "add rows for pictures of the other classes.",
        }[listing.layout]
        return (
            f"Only one class ('{classes[0]}') was found in {root}: a model needs at least two classes to tell "
            f"apart, so {hint}"
        )
    if problems:
        first = problems[0]
        return (
            f"None of the {_plural(len(problems), 'picture')} in {root} can be used; the first problem is "
            f"{first.path}: {first.reason}"
        )
    if listing.layout == "csv":
        return f"The CSV file {root} lists no pictures: add one row per picture with its path and label."
    if listing.loose:
        return (
            f"The pictures in {root} are not sorted into classes: make one sub-folder per class and move each "
            "picture into the folder of its class."
        )
    return f"No pictures were found in {root}: put one sub-folder per class with pictures inside."


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in _HIDDEN_FOLDERS


def _reason(error: OSError) -> str:
    return (error.strerror or "unknown error").lower()


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _raise_if_stopped(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise DataError("The scan was cancelled.")


SMALL_PICTURE_FACTOR = 3.0  # pictures enlarged this many times or more to the model's input -> "small-pictures" advice
_SIZE_SAMPLE = 200  # pictures whose size small_pictures_advice reads (their headers only), spread over the dataset


def small_pictures_advice(paths: Sequence[str], input_side: int) -> Advice | None:
    """Advice when most pictures are far smaller than the model's input (32x32 pictures into a 224x224 model are
    enlarged 7 times): a model with a smaller input, or lower accuracy. ``input_side`` is the model's input size
    (the caller knows the model: engine.data does not import engine.models). Reads the headers of at most
    _SIZE_SAMPLE pictures spread over ``paths``; None when the pictures are large enough (or none can be read)."""
    from PIL import Image

    if not paths or input_side <= 0:
        return None
    step = max(1, len(paths) // _SIZE_SAMPLE)
    sizes = []
    for path in list(paths)[::step][:_SIZE_SAMPLE]:
        try:
            if _formats.kind_of(path) not in ("ordinary", "tiff") or "::" in path:  # DICOM, tiles: decoded
                from engine.data.images import load_rgb

                sizes.append(load_rgb(path).size)
                continue
            with Image.open(path) as img:
                sizes.append(img.size)
        except Exception:  # unreadable pictures have their own advice
            continue
    if not sizes:
        return None
    sizes.sort(key=min)
    width, height = sizes[len(sizes) // 2]  # the median picture by its shorter side
    factor = input_side / max(1, min(width, height))
    if factor < SMALL_PICTURE_FACTOR:
        return None
    return Advice(
        "small-pictures",
        f"The pictures are far smaller than the model's input: a typical one is {width}x{height} pixels, enlarged "
        f"{factor:.0f} times to {input_side}x{input_side}, so the model sees blurred shapes. Choose a model made for "
        "smaller inputs (or one whose pretrained weights were trained on small pictures), or expect lower accuracy.",
    )
