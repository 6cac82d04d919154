"""Where file dialogs start: beside the user's own files, never in the folder the app was started from.

Every ``QFileDialog`` of the window passes ``start_folder(self)`` (or ``start_path(self, "name.csv")`` to suggest a
file name) as its directory. The start is the first of these that exists:

1. the project's folder (a project not yet saved: the folder that holds its pictures' folder, where *Save* suggests
   putting it), or with ``pictures=True`` the pictures' folder first;
2. the other one of the two;
3. the folder the user last chose for this kind of file (the window's QSettings, ``last_key``);
4. the home folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtWidgets import QApplication, QWidget

from gui.settings import LAST_FOLDER_KEY, read_str

__all__ = ["start_folder", "start_path"]


def start_folder(widget: QWidget | None = None, *, pictures: bool = False, last_key: str = LAST_FOLDER_KEY) -> str:
    """The folder a file dialog opened from ``widget`` starts in (see the module)."""
    window = _main_window(widget)
    model = getattr(window, "project", None)
    project = getattr(model, "project", None)
    candidates: list[Path | None] = []
    if project is not None:
        pictures_folder, beside = _pictures_folder(project.config.data.source)
        project_folder = project.folder if project.folder is not None else beside
        candidates += [pictures_folder, project_folder] if pictures else [project_folder, pictures_folder]
    settings = getattr(window, "settings", None)
    if settings is not None:
        last = read_str(settings, last_key, "")
        candidates.append(Path(last) if last else None)
    candidates.append(Path.home())
    for folder in candidates:
        if folder is not None and folder.is_dir():
            return str(folder)
    return str(Path.home())


def start_path(widget: QWidget | None, file_name: str, **kwargs) -> str:
    """A suggested file in the start folder, for a save dialog."""
    return os.path.join(start_folder(widget, **kwargs), file_name)


def _pictures_folder(source: str) -> tuple[Path | None, Path | None]:
    """The pictures' folder, and the folder a project of them is saved in by default (beside a folder of pictures;
    beside a CSV file)."""
    if not source:
        return None, None
    path = Path(source)
    return (path.parent, path.parent) if path.suffix.lower() == ".csv" else (path, path.parent)


def _main_window(widget: QWidget | None):
    """The window that holds the project: the one ``widget`` lies in, else the active one."""
    for candidate in ((widget.window() if widget is not None else None), QApplication.activeWindow()):
        if candidate is not None and hasattr(candidate, "project"):
            return candidate
    return None
