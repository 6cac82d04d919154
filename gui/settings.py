"""What the window remembers between sessions (QSettings): size, splitters, last folders, recent projects.

Everything goes through one QSettings object handed to the window, so tests give it a throw-away file and never touch
the user's own settings.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

ORGANIZATION = "Transfer Studio"
APPLICATION = "Transfer Studio"
MAX_RECENT = 8

RECENT_KEY = "projects/recent"
LAST_FOLDER_KEY = "folders/last_images"
LAST_PROJECT_FOLDER_KEY = "folders/last_project"


def default_settings() -> QSettings:
    """The user's settings (native format: the registry on Windows, a .conf file on Linux, a plist on macOS)."""
    return QSettings(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, ORGANIZATION, APPLICATION)


def file_settings(path: str | Path) -> QSettings:
    """Settings kept in one INI file (for tests and benchmarks)."""
    return QSettings(str(path), QSettings.Format.IniFormat)


def read_list(settings: QSettings, key: str) -> list[str]:
    value = settings.value(key, [])
    if value is None:
        return []
    if isinstance(value, str):  # an INI file gives back a one-item list as a plain string
        return [value] if value else []
    return [str(v) for v in value]


def read_bytes(settings: QSettings, key: str) -> QByteArray | None:
    value = settings.value(key)
    return value if isinstance(value, QByteArray) and not value.isEmpty() else None


def read_str(settings: QSettings, key: str, default: str = "") -> str:
    value = settings.value(key, default)
    return str(value) if value is not None else default


class RecentProjects:
    """The most recently opened or saved project files, newest first; files that no longer exist are left out."""

    def __init__(self, settings: QSettings) -> None:
        self.settings = settings

    def paths(self) -> list[str]:
        return [p for p in read_list(self.settings, RECENT_KEY) if Path(p).is_file()]

    def add(self, path: str | Path) -> None:
        path = str(Path(path).resolve())
        paths = [path] + [p for p in read_list(self.settings, RECENT_KEY) if p != path]
        self.settings.setValue(RECENT_KEY, paths[:MAX_RECENT])

    def remove(self, path: str | Path) -> None:
        path = str(Path(path).resolve())
        self.settings.setValue(RECENT_KEY, [p for p in read_list(self.settings, RECENT_KEY) if p != path])

    def clear(self) -> None:
        self.settings.setValue(RECENT_KEY, [])
