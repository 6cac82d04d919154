"""A project: a name, where its pictures are, and every setting of its runs (the whole RunConfig), in one TOML file.

A project file looks like this (``.tsproj``; plain TOML, so it can be read and edited by hand)::

    [project]
    format = "transfer-studio-project"
    version = 1
    name = "ants vs bees"

    [config]            # exactly what a run folder's config.toml holds (engine.config.to_dict)
    strategy = "feature-extraction"
    out = "runs"        # where the runs go, relative to the project file
    [config.data]
    source = "pictures" # the dataset: relative when it lies inside the project's folder, else absolute
    ...

Safety: a project file may come from someone else, so the one folder it makes the app write into (``out``, the run
folders) must lie inside the project's own folder or inside Transfer Studio's data folder; anything else is replaced
by ``runs`` beside the project file, and the project says so in ``OpenedProject.notes``.

Runs belong to their project: a project not yet saved keeps its runs in a folder of its own in the app's data
folder (``<data folder>/unsaved-runs/<name>-<time>-<id>``, never shared with another project); saving it for the first
time moves them into ``runs`` beside the project file (``save_project_and_runs``). When they cannot be moved (a run
is training, a disk error) they stay where they were, the saved project keeps listing them from there, and the next
save tries again.

Drafts: while a project has unsaved changes the window writes it to ``<data folder>/drafts/draft.tsproj`` every few
seconds; after a crash the next start finds the draft and offers to restore it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
import tomli_w

from engine.config import (DataConfig, RunConfig, from_dict, resolve_path, resolve_weights,
                           to_dict, toml_problem)
from engine.errors import ConfigError
from engine.paths import user_data_dir
from engine.project.starting import starting_model

__all__ = [
    "DRAFT_NAME",
    "PROJECT_FORMAT",
    "PROJECT_SUFFIX",
    "PROJECT_VERSION",
    "Draft",
    "OpenedProject",
    "Project",
    "SavedProject",
    "discard_draft",
    "draft_path",
    "dumps_project",
    "load_run_config",
    "loads_project",
    "new_project",
    "open_project",
    "read_draft",
    "runs_to_adopt",
    "safe_file_stem",
    "save_draft",
    "save_project",
    "save_project_and_runs",
    "unsaved_runs_root",
]

PROJECT_FORMAT = "transfer-studio-project"
PROJECT_VERSION = 1
PROJECT_SUFFIX = ".tsproj"
RUNS_FOLDER = "runs"
UNSAVED_RUNS = "unsaved-runs"  # in the data folder: one folder for the runs of each project not yet saved
DRAFT_NAME = "draft" + PROJECT_SUFFIX
UNTITLED = "Untitled project"


@dataclass(frozen=True)
class Project:
    """What a project holds. ``path`` is its file (None until first saved); ``config`` holds every setting, with
    absolute paths while in memory."""

    name: str
    config: RunConfig = field(default_factory=RunConfig)
    path: str | None = None
    # Active learning (engine.active): the folder of pictures still to label, and the CSV of the answers given
    # (empty: none yet; the labels then go to <project>-labels.csv beside the project file). Absolute in memory.
    pool: str = ""
    labels: str = ""

    @property
    def folder(self) -> Path | None:
        return Path(self.path).parent if self.path else None

    @property
    def dataset(self) -> str:
        return self.config.data.source

    def with_config(self, config: RunConfig) -> "Project":
        return dataclasses.replace(self, config=config)


@dataclass(frozen=True)
class OpenedProject:
    project: Project
    notes: tuple[str, ...] = ()  # sentences for the user about what was changed while opening


@dataclass(frozen=True)
class SavedProject:
    project: Project
    moved: tuple[str, ...] = ()  # the run folders moved beside the project file, in their new place
    notes: tuple[str, ...] = ()  # sentences for the user: why the runs stayed where they were
    copied: tuple[str, ...] = ()  # Save As into another folder: the copies of the runs made beside the new file


@dataclass(frozen=True)
class Draft:
    project: Project  # its ``path`` is the file it was opened from (None for a project never saved)
    saved_at: float  # seconds since the epoch


# --- new projects ---------------------------------------------------------------------------------------------


def new_project(dataset: str | os.PathLike = "", *, name: str = "", data_dir: str | os.PathLike | None = None,
                config: RunConfig | None = None) -> Project:
    """A project not yet saved: named after its dataset's folder, its runs going to a new folder of its own in the
    app's data folder until it is saved (then they move to ``runs`` beside the project file)."""
    dataset = str(Path(dataset).expanduser().resolve()) if str(dataset) else ""
    label = (Path(dataset).stem if Path(dataset).suffix.lower() == ".csv" else Path(dataset).name) if dataset else ""
    name = name or label or UNTITLED
    base = config or RunConfig(data=DataConfig(), model=starting_model())
    base = dataclasses.replace(base, data=dataclasses.replace(base.data, source=dataset),
                               out=str(_new_unsaved_runs(data_dir, name)))
    return Project(name=name, config=base, path=None)


def unsaved_runs_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds the runs folders of the projects not yet saved."""
    return _data_dir(data_dir) / UNSAVED_RUNS


def _new_unsaved_runs(data_dir: str | os.PathLike | None, name: str) -> Path:
    label = safe_file_stem(name).replace(" ", "-")[:40]
    return unsaved_runs_root(data_dir) / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def runs_to_adopt(project: Project, *, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder whose runs the next save moves beside the project file: the runs folder of a project not yet saved
    (or of one whose runs could not be moved when it was saved); None when the runs are already where they stay."""
    out = project.config.out
    if out and _inside(Path(out), unsaved_runs_root(data_dir)):
        return Path(out).expanduser().resolve()
    return None


def _data_dir(data_dir: str | os.PathLike | None) -> Path:
    if data_dir is not None:
        return Path(data_dir).resolve()
    return user_data_dir().resolve()


# --- saving and opening ---------------------------------------------------------------------------------------


def dumps_project(project: Project, path: str | os.PathLike | None = None) -> str:
    """The TOML text of ``project`` as it would be saved at ``path`` (paths inside that folder become relative)."""
    base = Path(path).resolve().parent if path is not None else None
    config = project.config
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, source=_relative(config.data.source, base)),
        model=dataclasses.replace(config.model, weights=_relative_weights(config.model.weights, base)),
        out=_relative(config.out, base),
    )
    document = {
        "project": {"format": PROJECT_FORMAT, "version": PROJECT_VERSION, "name": project.name,
                    **{k: _relative(v, base) for k, v in (("pool", project.pool), ("labels", project.labels)) if v}},
        "config": to_dict(config),
    }
    return tomli_w.dumps(document)


def save_project(project: Project, path: str | os.PathLike, *, data_dir: str | os.PathLike | None = None
                 ) -> Project:
    """Write the project to ``path`` atomically and return it with its new path (see ``save_project_and_runs``)."""
    return save_project_and_runs(project, path, data_dir=data_dir).project


def save_project_and_runs(project: Project, path: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                          busy: str = "") -> SavedProject:
    """Write the project to ``path`` atomically, taking along the runs it made before it was first saved.

    The runs of a project not yet saved (``runs_to_adopt``) move into ``runs`` beside the file (or ``<name>-runs``
    when ``runs`` already holds something), each run folder atomically, all of them or none, and the project then
    sends its runs there. When one is training right now (or the caller is using them: ``busy`` says how, in a
    sentence), or one cannot be moved, every run stays where it was, the saved project keeps its runs folder,
    ``notes`` says so, and the next save tries again. A failed save raises ConfigError and leaves the runs where they
    were.
    """
    from engine.files import atomic_write_text
    from engine.project import runs

    path = Path(path).expanduser().resolve()
    if path.suffix.lower() != PROJECT_SUFFIX:
        path = path.with_name(path.name + PROJECT_SUFFIX)
    config = project.config
    source = runs_to_adopt(project, data_dir=data_dir)
    moved: dict[str, str] = {}
    copied: dict[str, str] = {}
    notes = []
    if source is not None:
        target = _runs_folder_beside(path)
        later = (f"so the runs of this project stay in {source} for now (the project lists them from there): save "
                 f"the project again once that has ended to move them into {target}.")
        try:
            if busy:
                raise runs.RunBusyError(busy)
            moved = runs.move_runs(source, target)
        except runs.RunBusyError as exc:
            notes.append(f"{str(exc).removesuffix('.')}, {later}")
        except runs.RunFolderError as exc:
            notes.append(f"The runs could not be moved beside the project file: {_lower_first(str(exc))} They stay "
                         f"in {source}, and the project lists them from there; saving it again tries once more.")
        else:
            config = dataclasses.replace(config, out=str(target),
                                         model=dataclasses.replace(config.model,
                                                                   weights=_moved(config.model.weights, moved)))
    elif _saved_elsewhere(project, path):
        config, copied, copy_notes = _copy_runs_beside(config, Path(project.path), path)
        notes += copy_notes
    saved = dataclasses.replace(project, config=config, path=str(path))
    try:
        atomic_write_text(path, dumps_project(saved, path))
    except OSError as exc:
        message = f"The project could not be saved to {path} ({exc.strerror or exc}): choose another folder."
        stranded = runs.move_runs_back(moved)
        for copy in copied.values():  # Save As: the copies made for a file that was not written
            shutil.rmtree(copy, ignore_errors=True)
        if copied:
            with contextlib.suppress(OSError):
                Path(config.out).rmdir()
        if stranded:
            message += f" Its runs are in {Path(stranded[0]).parent}."
        elif moved:
            with contextlib.suppress(OSError):
                Path(next(iter(moved.values()))).parent.rmdir()  # the runs folder made for them, empty again
        raise ConfigError(message) from None
    return SavedProject(saved, tuple(moved.values()), copied=tuple(copied.values()), notes=tuple(notes))


def _saved_elsewhere(project: Project, path: Path) -> bool:
    """Whether a saved project is being saved in another folder (Save As) that does not hold its runs folder."""
    if not project.path or not project.config.out:
        return False
    old_folder, out = Path(project.path).resolve().parent, Path(project.config.out).expanduser().resolve()
    return (old_folder != path.parent and _inside(out, old_folder) and not _inside(out, path.parent)
            and out.is_dir())


def _copy_runs_beside(config: RunConfig, old_path: Path, path: Path
                      ) -> tuple[RunConfig, dict[str, str], list[str]]:
    """Save As into another folder: the project's runs are copied beside the new file (the first project keeps its
    own), so the copy opens with its run history; without them (training now, a full disk) it says why."""
    from engine.project import runs

    target = _runs_folder_beside(path)
    try:
        copied = runs.copy_runs(config.out, target)
    except (runs.RunBusyError, runs.RunFolderError) as exc:
        return (dataclasses.replace(config, out=str(target)), {},
                [f"{str(exc).removesuffix('.')}, so this copy of the project starts without the runs of "
                 f"{old_path.name}; they stay beside it in {config.out}."])
    weights = _moved(config.model.weights, copied)
    return dataclasses.replace(config, out=str(target), model=dataclasses.replace(config.model, weights=weights)), \
        copied, []


def _runs_folder_beside(path: Path) -> Path:
    """Where a project saved at ``path`` keeps its runs: ``runs`` beside it, unless that folder already holds
    something (another project's runs), then ``<name>-runs``."""
    def free(folder: Path) -> bool:
        try:
            return not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))
        except OSError:
            return False

    name, i = f"{path.stem}-{RUNS_FOLDER}", 2
    for candidate in (path.parent / RUNS_FOLDER, path.parent / name):
        if free(candidate):
            return candidate
    while not free(path.parent / f"{name}-{i}"):
        i += 1
    return path.parent / f"{name}-{i}"


def _moved(weights: str, moved: dict[str, str]) -> str:
    """A weight file inside a run that moved, in its new place."""
    for old, new in moved.items():
        if weights not in ("pretrained", "none") and _inside(Path(weights), Path(old)):
            return str(Path(new) / Path(weights).resolve().relative_to(Path(old).resolve()))
    return weights


def open_project(path: str | os.PathLike, *, data_dir: str | os.PathLike | None = None) -> OpenedProject:
    """Read a project file; raise ConfigError with a sentence when it cannot be used."""
    path = Path(path).expanduser().resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"The project file {path} does not exist (was it moved or deleted?).") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a project file.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"The project file {path} cannot be read: it is not text (it may be damaged). Open "
                          "another copy of it, or make a new project.") from None
    except OSError as exc:
        raise ConfigError(f"The project file {path} cannot be read ({(exc.strerror or str(exc)).lower()})."
                          ) from None
    return loads_project(text, path, data_dir=data_dir)


def loads_project(text: str, path: str | os.PathLike, *, data_dir: str | os.PathLike | None = None
                  ) -> OpenedProject:
    """Parse the text of the project file at ``path`` (relative paths start at its folder)."""
    path = Path(path).resolve()
    try:
        document = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name} is not a Transfer Studio project: it is not valid TOML ({toml_problem(exc)}). "
                          "It may be damaged or cut short: open another copy of it, or correct it in a text editor."
                          ) from None
    header = document.get("project")
    if not isinstance(header, dict) or header.get("format") != PROJECT_FORMAT:
        raise ConfigError(f"{path.name} is not a Transfer Studio project file (it has no [project] table "
                          f"with format = \"{PROJECT_FORMAT}\"). To repeat a run, use its config.toml instead.")
    version = header.get("version", PROJECT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(f"The project version in {path.name} must be a whole number such as {PROJECT_VERSION}.")
    if version > PROJECT_VERSION:
        raise ConfigError(f"{path.name} was saved by a newer Transfer Studio (project format {version}); this "
                          f"version reads format {PROJECT_VERSION}: please update the app.")
    name = header.get("name", path.stem)
    if not isinstance(name, str):
        raise ConfigError(f"The project name in {path.name} must be text.")
    unknown = sorted(set(document) - {"project", "config"})
    if unknown:
        raise ConfigError(f"{path.name} has an unknown section [{unknown[0]}]: remove it or check its spelling.")
    unknown = sorted(set(header) - {"format", "version", "name", "pool", "labels"})
    if unknown:
        raise ConfigError(f"{path.name} has an unknown setting '{unknown[0]}' in [project]: remove it or check its "
                          "spelling (known settings: format, version, name, pool, labels).")
    raw = document.get("config", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"The [config] section of {path.name} must be a table of settings.")
    try:
        config = from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"The settings in {path.name} cannot be used: {_lower_first(str(exc))}") from None
    config, notes = _resolve_paths(config, path.parent, data_dir)
    pool, labels, more = _active_paths(header, path, data_dir)
    return OpenedProject(Project(name=name.strip() or path.stem, config=config, path=str(path), pool=pool,
                                 labels=labels), notes + more)


def _active_paths(header: dict, path: Path, data_dir) -> tuple[str, str, tuple[str, ...]]:
    """The pool folder and labels CSV named in [project] (absent in older files), absolute. The labels file is
    written by the app, so like ``out`` it must lie inside the project's folder or the app's data folder."""
    values = []
    for key in ("pool", "labels"):
        value = header.get(key, "")
        if not isinstance(value, str):
            raise ConfigError(f"The {key} setting in {path.name} must be text (a path).")
        values.append(resolve_path(value, path.parent) if value else "")
    pool, labels = values
    if labels and not any(_inside(Path(labels), root) for root in (path.parent.resolve(), _data_dir(data_dir))):
        return pool, "", (f"The project asked to keep its labels in {labels}, outside the project's folder; they "
                          "will be kept beside the project file instead.",)
    return pool, labels, ()


def load_run_config(path: str | os.PathLike, *, data_dir: str | os.PathLike | None = None) -> RunConfig:
    """The settings in a project file (``.tsproj``) or in a run's ``config.toml``: what ``main.py train FILE``
    repeats."""
    from engine.config import load

    if Path(path).suffix.lower() == PROJECT_SUFFIX:
        return open_project(path, data_dir=data_dir).project.config
    return load(path)


def _resolve_paths(config: RunConfig, folder: Path, data_dir: str | os.PathLike | None
                   ) -> tuple[RunConfig, tuple[str, ...]]:
    notes = []
    source = resolve_path(config.data.source, folder)
    weights = resolve_weights(config.model.weights, folder)
    out = resolve_path(config.out or RUNS_FOLDER, folder)
    allowed = [folder.resolve(), _data_dir(data_dir)]
    if not any(_inside(Path(out), root) for root in allowed):
        safe = str(folder / RUNS_FOLDER)
        notes.append(f"The project asked to save its runs in {out}, outside the project's folder; they will be "
                     f"saved in {safe} instead.")
        out = safe
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, source=source),
                                 model=dataclasses.replace(config.model, weights=weights), out=out)
    return config, tuple(notes)


def is_safe_output(out: str | os.PathLike, project: Project, *, data_dir: str | os.PathLike | None = None) -> bool:
    """True when ``out`` lies inside the project's folder or the app's data folder (where runs may be written)."""
    roots = [_data_dir(data_dir)] + ([project.folder.resolve()] if project.folder else [])
    return any(_inside(Path(out).expanduser().resolve(), root) for root in roots)


# --- drafts ---------------------------------------------------------------------------------------------------


def draft_path(data_dir: str | os.PathLike | None = None) -> Path:
    return _data_dir(data_dir) / "drafts" / DRAFT_NAME


def save_draft(project: Project, *, data_dir: str | os.PathLike | None = None) -> Path:
    """Write the unsaved state of ``project`` where the next start will find it (atomically)."""
    from engine.files import atomic_write_text

    target = draft_path(data_dir)
    document = tomllib.loads(dumps_project(project))  # absolute paths: the draft lives in another folder
    document["draft"] = {"original": project.path or "", "saved_at": time.time()}
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, tomli_w.dumps(document))
    except OSError as exc:
        raise ConfigError(f"The automatic backup of the project could not be written to {target.parent} "
                          f"({exc.strerror or exc}).") from None
    return target


def read_draft(*, data_dir: str | os.PathLike | None = None) -> Draft | None:
    """The draft left by a session that ended without saving, or None (also for a damaged draft)."""
    target = draft_path(data_dir)
    try:
        document = tomllib.loads(target.read_text(encoding="utf-8"))
        meta = document.pop("draft")
        original = str(meta.get("original", ""))
        saved_at = float(meta.get("saved_at", 0.0))
        base = Path(original).parent if original else target.parent
        opened = loads_project(tomli_w.dumps(document), base / DRAFT_NAME, data_dir=data_dir)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ConfigError, tomllib.TOMLDecodeError):
        return None
    project = dataclasses.replace(opened.project, path=original or None)
    return Draft(project, saved_at)


def discard_draft(*, data_dir: str | os.PathLike | None = None) -> None:
    draft_path(data_dir).unlink(missing_ok=True)


# --- helpers --------------------------------------------------------------------------------------------------


def safe_file_stem(name: str) -> str:
    """A file name made from a project name (no folders, no characters that some systems refuse)."""
    cleaned = "".join(c if c.isalnum() or c in " _-.()" else "_" for c in name).strip(" .")
    return cleaned[:80] or "project"


def _relative(value: str, base: Path | None) -> str:
    if not value or base is None:
        return value
    p = Path(value)
    if p.is_absolute() and _inside(p.resolve(), base):
        rel = p.resolve().relative_to(base)
        return rel.as_posix() if rel.parts else "."
    return value


def _relative_weights(value: str, base: Path | None) -> str:
    return value if value in ("pretrained", "none") else _relative(value, base)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:1].isupper() and text[1:2].islower() else text

