"""Labelled pool pictures join training, and a retrain measures how much they helped.

:func:`joined_config` turns the project's settings and the labels into the settings of the next run: its data becomes a
CSV file (``path,label,split``) listing every picture of the project's data with the split it has there (the
validation pictures stay the same, so the rounds are measured on the same pictures) and every pool picture given a
class, as a training picture. "None of these" pictures never join. The CSV file is written once per content, beside
the labels (``<project>-labels-rounds/training-<n>-<hash>.csv``), and stays there, so the run's ``config.toml``
repeats the run exactly (``python main.py train RUN/config.toml``).

:func:`retrain` trains that configuration (the project's own strategy; with feature extraction and the frozen
layers' outputs stored, engine.active.refit refits the head alone on them, so only the new pictures pass through the
network: seconds) and records the round: pictures labelled, validation accuracy, run folder, in ``rounds.jsonl`` there.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from engine.config import RunConfig
from engine.errors import UserError
from engine.files import atomic_write_text

from engine.active.labels import Labels

__all__ = ["JoinSummary", "Retrained", "Round", "joined_config", "project_config", "read_rounds", "record_round",
           "retrain", "rounds_folder", "with_labelled_pool"]

ROUNDS = "rounds.jsonl"


@dataclass(frozen=True)
class JoinSummary:
    csv: str  # the training CSV the run reads
    data_pictures: int  # pictures of the project's data (every split)
    joined: int  # labelled pool pictures added as training pictures
    none_of_these: int  # answered "none of these": left out
    unknown: dict[str, int]  # labels naming a class the data does not have: left out, by label

    def sentence(self) -> str:
        text = f"{self.joined} labelled pool picture{'s' if self.joined != 1 else ''} join training"
        if self.none_of_these:
            text += f"; {self.none_of_these} marked 'none of these' stay out"
        for name, n in sorted(self.unknown.items()):
            text += f"; {n} labelled '{name}', a class the data does not have, stay out"
        return text + "."


@dataclass(frozen=True)
class Round:
    labelled: int  # training pictures of the run: the data's own plus the labelled pool pictures
    pool_labelled: int  # of which from the pool
    val_accuracy: float | None
    run_dir: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Retrained:
    result: object  # engine.train.trainer.RunResult
    summary: JoinSummary
    round: Round | None
    refit: object = None  # engine.active.refit.Refit, when the head alone was refitted on the stored outputs

    def __iter__(self):  # unpacks as (result, summary, round), as before
        return iter((self.result, self.summary, self.round))


def rounds_folder(labels: Labels) -> Path:
    """``<project>-labels-rounds`` beside the labels CSV: the training CSVs and rounds.jsonl."""
    path = Path(labels.path)
    return path.with_name(path.stem + "-rounds")


def joined_config(config: RunConfig, labels: Labels, *, stop: threading.Event | None = None
                  ) -> tuple[RunConfig, JoinSummary]:
    """The settings of a run on the project's data plus the labelled pool pictures (see the module)."""
    from engine.data.scan import scan

    d = config.data
    if not d.source:
        raise UserError("The project has no pictures yet: choose its data folder first.")
    index = scan(d.source, val_fraction=d.val_fraction, test_fraction=d.test_fraction, seed=d.split_seed,
                 split=d.split, verify=False, stop=stop, exclude=d.exclude, relabel=d.relabel, formats=d)
    known = set(index.classes)
    in_data = {os.path.normcase(os.path.abspath(s.path)) for s in index.samples}
    rows = [(os.path.abspath(s.path), index.classes[s.label], s.split) for s in index.samples
            if os.path.normcase(os.path.abspath(s.path)) not in labels]  # a pool answer overrides the folder
    unknown: dict[str, int] = {}
    joined = 0
    for picture, label in labels.labelled().items():
        if label not in known:
            unknown[label] = unknown.get(label, 0) + 1
            continue
        split = "train"
        if picture in in_data:  # a picture of the data itself, answered again: it keeps its split
            split = next((s.split for s in index.samples if os.path.normcase(os.path.abspath(s.path)) == picture),
                         "train")
        rows.append((picture, label, split))
        joined += 1
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "split"])
    writer.writerows(rows)
    text = buffer.getvalue()
    folder = rounds_folder(labels)
    target = folder / f"training-{joined}-{hashlib.sha256(text.encode()).hexdigest()[:10]}.csv"
    if not target.is_file():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(target, text)
        except OSError as exc:
            raise UserError(f"The list of training pictures could not be written to {folder} "
                            f"({exc.strerror or exc}): check that the project's folder can be written to.") from None
    # Everything else about the data stays the project's (how lab pictures are read above all: a retrain must see
    # the pictures as the run it follows did); the list already holds the exclusions, new names and splits.
    data = dataclasses.replace(d, source=str(target), split="auto", exclude=(), relabel={})
    joined_cfg = dataclasses.replace(config, data=data, name=config.name or f"retrain-{joined}-labelled")
    return joined_cfg, JoinSummary(str(target), len(index.samples), joined, len(labels.none_of_these()), unknown)


def record_round(labels: Labels, round_: Round) -> None:
    """Add a round to rounds.jsonl (the whole file rewritten atomically)."""
    rounds = read_rounds(labels)
    rounds = [r for r in rounds if r.run_dir != round_.run_dir] + [round_]
    folder = rounds_folder(labels)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / ROUNDS, "".join(json.dumps(r.to_dict()) + "\n" for r in rounds))
    except OSError as exc:
        raise UserError(f"The round could not be recorded in {folder} ({exc.strerror or exc}).") from None


def read_rounds(labels: Labels) -> list[Round]:
    """The rounds recorded so far, oldest first (lines that cannot be read are skipped)."""
    out = []
    try:
        lines = (rounds_folder(labels) / ROUNDS).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            r = json.loads(line)
            out.append(Round(int(r["labelled"]), int(r["pool_labelled"]), r.get("val_accuracy"), str(r["run_dir"])))
        except (ValueError, KeyError, TypeError):
            continue
    return out


def run_round(run_dir: str | os.PathLike, pool_labelled: int = 0) -> Round | None:
    """A finished run as a round (its training pictures and best validation accuracy); None when unreadable."""
    from engine.project import runs

    try:
        info = json.loads((Path(run_dir) / runs.DATASET).read_text(encoding="utf-8"))
        train = sum(1 for s in info["samples"] if s.get("split") == "train")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    acc = runs.read_summary(run_dir).get("best_val_acc")
    return Round(train, pool_labelled, float(acc) if acc is not None else None, str(run_dir))


def retrain(config: RunConfig, labels: Labels, *, on_event=None, stop: threading.Event | None = None,
            start_run: str | None = None) -> "Retrained":
    """Train the project's settings on its data plus the labelled pool pictures and record the round (the run the
    suggestions came from, ``start_run``, is recorded first as the starting point when no round is yet). With
    feature extraction and the frozen layers' outputs stored, only the head is refitted on them
    (engine.active.refit): seconds. Returns a Retrained (unpacks as RunResult, JoinSummary, Round or None; ``refit``
    says what a head refit did, None when the run trained the normal way)."""
    from engine.active.refit import eligible, refit_head
    from engine.train.trainer import fit

    if not labels.labelled():
        raise UserError("No pool picture has a class yet: label a few pictures first.")
    if start_run and not read_rounds(labels):
        first = run_round(start_run, 0)
        if first is not None:
            record_round(labels, first)
    joined_cfg, summary = joined_config(config, labels, stop=stop)
    refit = None
    if eligible(joined_cfg) is None:  # feature extraction: the head alone, refitted on the stored outputs
        from engine.data.scan import scan

        # Every picture of the list was checked already (the project's data by its scan, the pool's by scan_pool):
        # not decoded again.
        d = joined_cfg.data
        dataset = scan(d.source, val_fraction=d.val_fraction, test_fraction=d.test_fraction, seed=d.split_seed,
                       split=d.split, verify=False, stop=stop, exclude=d.exclude, relabel=d.relabel, formats=d)
        result, refit = refit_head(joined_cfg, on_event, stop, dataset=dataset)
    else:
        result = fit(joined_cfg, on_event, stop)
    round_ = None
    if result.status == "completed" and result.run_dir:
        round_ = run_round(result.run_dir, summary.joined)
        if round_ is not None:
            record_round(labels, round_)
    return Retrained(result, summary, round_, refit)


def project_config(path: str | os.PathLike, *, data_dir=None, stop: threading.Event | None = None
                   ) -> tuple[RunConfig, JoinSummary | None]:
    """The settings ``python main.py train FILE`` trains: a run's config.toml as it is; a saved project's settings
    joined with its labelled pool pictures (:func:`joined_config`, as the Label step's Retrain does), or as they are
    when no pool picture is labelled yet (then the summary is None)."""
    from engine.project.project import PROJECT_SUFFIX, load_run_config, open_project

    if Path(path).suffix.lower() != PROJECT_SUFFIX:
        return load_run_config(path, data_dir=data_dir), None
    project = open_project(path, data_dir=data_dir).project
    return with_labelled_pool(project, project.config, stop=stop)


def with_labelled_pool(project, config: RunConfig, *, stop: threading.Event | None = None
                       ) -> tuple[RunConfig, JoinSummary | None]:
    """``config`` (the project's settings, or the window's edit of them) joined with the pool pictures labelled for
    ``project`` (:func:`joined_config`), or as it is when none is labelled yet (then the summary is None): what
    ``train PROJECT.tsproj`` and the Train step's Start train."""
    from engine.active.labels import labels_path_for, read_labels

    labels = read_labels(labels_path_for(project))
    if not labels.labelled():
        return config, None
    return joined_config(config, labels, stop=stop)
