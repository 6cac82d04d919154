"""The app's model library: weight files the user imported, and the models trained in earlier runs.

An imported file (``.safetensors``, ``.pth``, ``.pt``, ``.bin``) is read safely (``engine.models.weights.read_weight_file``:
pickles with ``weights_only=True``), checked against its architecture when that is known, and stored as
``.safetensors`` with a small JSON file beside it (architecture, original file, size), in
``engine.paths.user_data_dir()/models``. Every write is atomic. A previous run's model is its run folder's
``best.safetensors``, with the architecture and classes from the run folder's own files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from engine import files
from engine.project import runs
from engine.files import sha256_of
from engine.errors import ModelError
from engine.paths import user_data_dir

LIBRARY_FOLDER = "models"


@dataclass(frozen=True)
class ImportedWeights:
    path: str  # the .safetensors file in the library
    label: str  # the original file's name
    architecture: str | None  # "timm:resnet18" when known
    source: str  # the file it was imported from
    imported: str  # date and time, ISO 8601
    tensors: int
    params: int
    sha256: str  # of the original file


@dataclass(frozen=True)
class TrainedModel:
    """The best weights of an earlier run."""

    path: str  # the run's best.safetensors
    run_dir: str
    architecture: str
    classes: tuple[str, ...]
    best_val_acc: float | None
    strategy: str
    status: str

    @property
    def label(self) -> str:
        acc = f", {self.best_val_acc:.0%} validation accuracy" if self.best_val_acc is not None else ""
        return f"{Path(self.run_dir).name} ({len(self.classes)} classes{acc})"


def default_library_dir() -> Path:
    return user_data_dir() / LIBRARY_FOLDER


def check_fits(architecture: str, state: dict, what: str) -> None:
    """Raise ModelError with a sentence when ``state`` does not fit ``architecture``, by the same rules as
    training (every tensor but the classifier's must match). The model is built on the meta device: no memory,
    no initialisation."""
    from engine.models.catalogue import meta_model
    from engine.models.build import _find_head, split_name
    from engine.models.weights import load_weights

    source, _ = split_name(architecture)
    try:
        model = meta_model(architecture)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"The model {architecture} could not be created to check {what} "
                         f"({exc.__class__.__name__}).") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # copying into meta tensors is a no-op, which is what a check wants
        load_weights(model, state, _find_head(model, source), what, architecture)


class ModelLibrary:
    """The imported weight files, in ``root`` (by default the user's data folder)."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_library_dir()

    def import_file(self, path: str | os.PathLike, architecture: str | None = None) -> ImportedWeights:
        """Copy a weight file into the library as ``.safetensors``. With ``architecture`` the weights must fit it;
        without, it is taken from a run folder's ``model.json`` beside the file when there is one. Importing the
        same file again returns the entry already there (with the architecture added when it was unknown)."""
        from engine.models.weights import read_weight_file

        source = Path(path).expanduser()
        state = read_weight_file(source)  # raises a sentence for a missing, unsafe or damaged file
        architecture = architecture or _architecture_beside(source)
        if architecture:
            check_fits(architecture, state, source.name)
        digest = sha256_of(source)
        for existing in self.imported():
            if existing.sha256 == digest:
                if architecture and existing.architecture != architecture:
                    existing = dataclasses.replace(existing, architecture=architecture)
                    self._write_entry(existing)
                return existing
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.stem).strip("._") or "weights"
        target = self.root / f"{stem}-{digest[:8]}.safetensors"
        entry = ImportedWeights(
            path=str(target), label=source.name, architecture=architecture, source=str(source.resolve()),
            imported=time.strftime("%Y-%m-%dT%H:%M:%S"), tensors=len(state),
            params=int(sum(t.numel() for t in state.values())), sha256=digest)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            _save_safetensors(state, target, architecture)
            self._write_entry(entry)
        except OSError as exc:
            raise ModelError(f"{source.name} could not be stored in the model library {self.root} "
                             f"({exc.strerror or exc}): free some disk space or check the folder's permissions.") from None
        return entry

    def imported(self) -> list[ImportedWeights]:
        """Every imported file whose weights are still there, newest first."""
        entries = []
        if not self.root.is_dir():
            return entries
        for sidecar in self.root.glob("*.json"):
            try:
                data = json.loads(sidecar.read_text(encoding="utf-8"))
                entry = ImportedWeights(**data)
            except (OSError, ValueError, TypeError):
                continue  # a damaged entry is skipped, not fatal
            if not self._holds(entry.path):
                continue  # an entry naming a file elsewhere was not written here: never use (or delete) that file
            if Path(entry.path).is_file():
                entries.append(entry)
        return sorted(entries, key=lambda e: e.imported, reverse=True)

    def for_architecture(self, architecture: str) -> list[ImportedWeights]:
        return [e for e in self.imported() if e.architecture == architecture]

    def remove(self, entry: ImportedWeights) -> None:
        """Delete an imported file and its note; only ever files inside the library's folder."""
        if not self._holds(entry.path):
            raise ModelError(f"{entry.label} is not stored in the model library {self.root}, so it was not deleted.")
        Path(entry.path).unlink(missing_ok=True)
        Path(entry.path).with_suffix(".json").unlink(missing_ok=True)

    def _holds(self, path: str) -> bool:
        """Whether ``path`` is a file directly inside the library's folder (links resolved)."""
        try:
            return Path(path).resolve().parent == self.root.resolve()
        except (OSError, RuntimeError, TypeError, ValueError):
            return False

    def _write_entry(self, entry: ImportedWeights) -> None:
        files.atomic_write_json(Path(entry.path).with_suffix(".json"), dataclasses.asdict(entry))


def _save_safetensors(state: dict, target: Path, architecture: str | None) -> None:
    from safetensors.torch import save_file

    # safetensors refuses tensors that share memory (tied weights) or are views: store each as its own copy.
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    metadata = {"architecture": architecture} if architecture else None
    files.atomic_write(target, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))



def _architecture_beside(path: Path) -> str | None:
    """The model name a run folder records for its weights (model.json beside best.safetensors)."""
    try:
        data = json.loads((path.parent / runs.MODEL).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = data.get("model") if isinstance(data, dict) else None
    return name if isinstance(name, str) and ":" in name else None


def trained_models(runs_dir: str | os.PathLike) -> list[TrainedModel]:
    """The models trained in earlier runs under ``runs_dir`` that left weights (``best.safetensors``), newest
    first."""
    found = []
    for run in runs.list_runs(runs_dir):
        run_dir = Path(run.path)
        best = run_dir / runs.BEST
        if not best.is_file():
            continue
        try:
            model = json.loads((run_dir / runs.MODEL).read_text(encoding="utf-8"))
            classes = json.loads((run_dir / runs.LABELS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a run folder without its description cannot be reused safely
        if not isinstance(model, dict) or not isinstance(model.get("model"), str) or not isinstance(classes, list):
            continue
        found.append(TrainedModel(
            path=str(best), run_dir=str(run_dir), architecture=model["model"],
            classes=tuple(str(c) for c in classes), best_val_acc=run.best_val_acc,
            strategy=run.strategy, status=run.status))
    return found
