"""Run folders: what a run writes so that it can be inspected and repeated, and atomic file writes.

A run folder holds
    config.toml       the fully resolved RunConfig (``python main.py train RUN/config.toml`` repeats the run)
    labels.json       class names in index order
    model.json        architecture, head, preprocessing, weight source and stages
    dataset.json      the pictures of each split, so that evaluation uses exactly the same split
    metrics.jsonl     one JSON object per epoch
    summary.json      status, best accuracy and epoch, epochs completed, error sentence
    best.safetensors  the weights of the best epoch
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from engine.errors import UserError

CONFIG = "config.toml"
LABELS = "labels.json"
DATASET = "dataset.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
BEST = "best.safetensors"
MODEL = "model.json"
ERROR_LOG = "error.log"
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Write through ``write(tmp_path)`` into a temporary file beside ``path``, then rename it over ``path``.

    Readers see the old file or the new one, never half of one; a failure leaves the old file untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes owner-only files; give the usual permissions
        write(tmp_path)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and flush it to disk (an epoch's line survives a crash right after it)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def create_run_dir(out: str | os.PathLike, model_name: str, strategy: str, name: str = "") -> Path:
    """Make a new, uniquely named run folder under ``out``: ``20261121-143000-mobilenet_v2-feature-extraction``."""
    out = Path(out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"The run folder {out} cannot be created ({exc.strerror or exc}): "
                        "choose another output folder.") from None
    label = name or f"{model_name.split(':')[-1]}-{strategy}"
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("._") or "run"
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
