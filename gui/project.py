"""The project the steps share: a small QObject around the plain ``engine.project.project.Project``.

Every step reads the settings from ``ProjectModel.config`` (the RunConfig, the single source of truth) and changes
them with ``set_config`` / ``update_data`` / ..., which emit ``config_changed`` and mark the project as modified.
The scanned dataset (a ``DatasetIndex``) is shared the same way through ``dataset`` and ``dataset_changed``.

Saving takes along the runs the project made before its first save (``engine.project.project.save_project_and_runs``):
``runs_waiting`` is the folder they wait in until then, and ``runs_note`` says so in a sentence for the Train step.

``DraftKeeper`` writes the unsaved state to the app's data folder a moment after each change, so that a crash loses
nothing; a clean save, a discard or a clean close removes the draft.
"""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

import dataclasses
import os
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from engine.config import RunConfig
from engine.data.scan import DatasetIndex
from engine.errors import UserError
from engine.project.project import Project, SavedProject, discard_draft, runs_to_adopt, save_draft

from engine.active.relocate import save_project_with_labels

DRAFT_DELAY_MS = 2000  # write the draft this long after the last change (many quick changes: one write)


class ProjectModel(QObject):
    """The open project (or none), whether it has unsaved changes, and its scanned dataset."""

    changed = Signal()  # anything at all: name, path, settings, modified flag, another project
    project_replaced = Signal()  # another project was opened (or the project was closed)
    config_changed = Signal(object)  # the new RunConfig
    dataset_changed = Signal(object)  # the new DatasetIndex, or None
    dirty_changed = Signal(bool)

    def __init__(self, data_dir: str | os.PathLike | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.data_dir = data_dir
        self._project: Project | None = None
        self._dataset: DatasetIndex | None = None
        self._dirty = False

    # -- reading ---------------------------------------------------------------------------------------------

    @property
    def project(self) -> Project | None:
        return self._project

    @property
    def is_open(self) -> bool:
        return self._project is not None

    @property
    def config(self) -> RunConfig:
        return self._project.config if self._project else RunConfig()

    @property
    def name(self) -> str:
        return self._project.name if self._project else ""

    @property
    def path(self) -> str | None:
        return self._project.path if self._project else None

    @property
    def dataset(self) -> DatasetIndex | None:
        return self._dataset

    @property
    def is_dirty(self) -> bool:
        return self._dirty

    @property
    def runs_waiting(self) -> Path | None:
        """The folder of runs that the next save moves beside the project file (kept in the app's data folder until
        then); None when the project's runs are already where they stay."""
        return runs_to_adopt(self._project, data_dir=self.data_dir) if self._project else None

    def runs_note(self) -> str:
        """A sentence on where the project's runs go, when that is not simply its runs folder."""
        if self.runs_waiting is None:
            return ""
        if self.path is None:
            return ("The project is not saved yet, so its runs are kept in the app's data folder; saving the project "
                    "moves them into a runs folder beside the project file.")
        return ("These runs were in use when the project was saved: save it again to move them into a runs folder "
                "beside the project file.")

    # -- changing --------------------------------------------------------------------------------------------

    def load(self, project: Project | None, *, dirty: bool = False) -> None:
        """Make ``project`` the open one (None closes it); its dataset is scanned again by the Data step."""
        self._project = project
        self._dataset = None
        self._dirty = dirty
        self.project_replaced.emit()
        self.dataset_changed.emit(None)
        self.config_changed.emit(self.config)
        self.dirty_changed.emit(dirty)
        self.changed.emit()

    def set_config(self, config: RunConfig) -> None:
        """Replace the settings (validated first: a ConfigError leaves the project as it was)."""
        if self._project is None:
            raise RuntimeError("no project is open")
        config.validate()
        if config == self._project.config:
            return
        self._project = self._project.with_config(config)
        self.config_changed.emit(config)
        self._set_dirty(True)
        self.changed.emit()

    def update_data(self, **changes) -> None:
        self.set_config(dataclasses.replace(self.config, data=dataclasses.replace(self.config.data, **changes)))

    def update_model(self, **changes) -> None:
        self.set_config(dataclasses.replace(self.config, model=dataclasses.replace(self.config.model, **changes)))

    def update_train(self, **changes) -> None:
        self.set_config(dataclasses.replace(self.config, train=dataclasses.replace(self.config.train, **changes)))

    def update(self, **changes) -> None:
        """Top-level settings: strategy, epochs, lr, phases, out, name."""
        self.set_config(dataclasses.replace(self.config, **changes))

    def rename(self, name: str) -> None:
        if self._project is None or not name.strip() or name.strip() == self._project.name:
            return
        self._project = dataclasses.replace(self._project, name=name.strip())
        self._set_dirty(True)
        self.changed.emit()

    def set_active_paths(self, **changes) -> None:
        """The project's pool folder and labels CSV (``pool=``, ``labels=``: engine.active), kept by the next save."""
        if self._project is None or all(getattr(self._project, k) == v for k, v in changes.items()):
            return
        self._project = dataclasses.replace(self._project, **changes)
        self._set_dirty(True)
        self.changed.emit()

    def set_dataset(self, index: DatasetIndex | None) -> None:
        self._dataset = index
        self.dataset_changed.emit(index)
        self.changed.emit()

    def save(self, path: str | os.PathLike | None = None, *, busy: str = "") -> SavedProject:
        """Save to ``path`` (or the project's own file), moving the runs made before the first save beside it (not
        while the window is ``busy`` with them: a sentence saying how); raise ConfigError with a sentence when it
        fails."""
        if self._project is None:
            raise RuntimeError("no project is open")
        target = path or self._project.path
        if target is None:
            raise RuntimeError("the project has no file yet: give a path")
        before = self._project.config
        # The runs, then the labels CSV and its rounds folder (engine.active), come beside the file.
        saved = save_project_with_labels(self._project, target, data_dir=self.data_dir, busy=busy)
        self._project = saved.project
        if self._project.config != before:  # the first save moved the runs (and their folder) next to the file
            self.config_changed.emit(self._project.config)
        self._set_dirty(False)
        self.changed.emit()
        return saved

    def mark_modified(self) -> None:
        """Something the project holds changed outside its settings (e.g. a run that only a save keeps with it)."""
        if self._project is not None:
            self._set_dirty(True)
            self.changed.emit()

    def _set_dirty(self, dirty: bool) -> None:
        if dirty != self._dirty:
            self._dirty = dirty
            self.dirty_changed.emit(dirty)


class DraftKeeper(QObject):
    """Keeps a draft of the unsaved project in the data folder; ``error`` carries a sentence when writing fails."""

    error = Signal(str)

    def __init__(self, model: ProjectModel, data_dir: str | os.PathLike | None, parent: QObject | None = None,
                 delay_ms: int = DRAFT_DELAY_MS) -> None:
        super().__init__(parent)
        self.model = model
        self.data_dir = data_dir
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(delay_ms)
        self.timer.timeout.connect(self.write_now)
        model.changed.connect(self._on_changed)

    def _on_changed(self) -> None:
        if self.model.is_open and self.model.is_dirty:
            self.timer.start()
        else:
            self.timer.stop()
            self.discard()

    def write_now(self) -> Path | None:
        self.timer.stop()
        project = self.model.project
        if project is None or not self.model.is_dirty:
            return None
        try:
            return save_draft(project, data_dir=self.data_dir)
        except UserError as exc:
            self.error.emit(str(exc))
            return None

    def discard(self) -> None:
        try:
            discard_draft(data_dir=self.data_dir)
        except OSError:
            pass  # nothing to lose: a stale draft is offered once more at the next start
