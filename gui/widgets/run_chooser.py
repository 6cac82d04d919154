"""The run chooser of the Evaluate and Predict & Export steps: the project's runs, newest first, each with its state
and best accuracy, and a button that reads the runs folder again.

After a new listing it keeps the run chosen before (or the one asked for), else chooses the newest completed run that
has its weights. ``runChosen`` follows a choice made by the user only, never a new listing: the page decides after
``refresh`` whether the run it shows has changed.
"""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

import os
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QPushButton, QWidget

from engine.project import runs
from gui import style
from gui.widgets.pictures import percent

STATUS_WORDS = {"completed": "completed", "stopped": "stopped early", "failed": "failed",
                "running": "running or crashed", "unknown": "unknown state"}


def run_label(info: runs.RunInfo) -> str:
    best = f", best {percent(info.best_val_acc)}" if info.best_val_acc is not None else ""
    model = info.model.split(":", 1)[-1] if info.model else ""
    details = ", ".join(x for x in (model, info.strategy) if x)
    return (f"{Path(info.path).name}  -  {STATUS_WORDS.get(info.status, info.status)}{best}"
            + (f"  ({details})" if details else ""))


def has_weights(path: str) -> bool:
    return (Path(path) / runs.BEST).is_file()


class RunChooser(QWidget):
    """A list of the runs in ``folder`` and a refresh button (``combo`` and ``refresh_button``)."""

    runChosen = Signal()  # the user chose another run
    refreshRequested = Signal()  # the user asked to read the runs folder again

    def __init__(self, tooltip: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.folder: Path | None = None
        self.infos: list[runs.RunInfo] = []
        self.combo = QComboBox()
        self.combo.setToolTip(tooltip)
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(30)
        self.refresh_button = QPushButton(style.icon("refresh"), "")
        self.refresh_button.setToolTip("Read the project's runs folder again.")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo, 1)
        layout.addWidget(self.refresh_button)
        self.combo.currentIndexChanged.connect(lambda _: self.runChosen.emit())
        self.refresh_button.clicked.connect(lambda _=False: self.refreshRequested.emit())

    def set_folder(self, folder: str | os.PathLike | None) -> bool:
        """Where the runs are; True when that changed (list them again then, with ``refresh``)."""
        new = Path(folder) if folder else None
        if new == self.folder:
            return False
        self.folder = new
        return True

    def refresh(self, select: str | None = None) -> None:
        """List the runs again and choose ``select``, else the run chosen before, else the newest completed run
        that has its weights (no ``runChosen``)."""
        keep = select or self.current_run()
        self.infos = runs.list_runs(self.folder) if self.folder else []
        combo = self.combo
        combo.blockSignals(True)
        combo.clear()
        for info in self.infos:
            combo.addItem(run_label(info), info.path)
            combo.setItemData(combo.count() - 1, info.path, Qt.ItemDataRole.ToolTipRole)
        paths = [i.path for i in self.infos]
        if keep in paths:
            row = paths.index(keep)
        else:
            done = [i for i, info in enumerate(self.infos) if info.status == "completed" and has_weights(info.path)]
            row = done[0] if done else (0 if self.infos else -1)
        combo.setCurrentIndex(row)
        combo.blockSignals(False)

    def current_run(self) -> str | None:
        return self.combo.currentData()

    def select_run(self, path: str | os.PathLike) -> None:
        """Choose the run at ``path`` (as a user would: ``runChosen`` follows) when it is listed."""
        index = self.combo.findData(str(path))
        if index >= 0:
            self.combo.setCurrentIndex(index)

    def completed_runs(self) -> list[runs.RunInfo]:
        return [i for i in self.infos if i.status == "completed" and has_weights(i.path)]
