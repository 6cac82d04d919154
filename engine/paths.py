"""Where Transfer Studio keeps its own files on this computer: one place for the app's folders.

- ``user_data_dir()``: the demo, drafts, runs of unsaved projects, the model library, logs
  (``~/.local/share/Transfer Studio`` on Linux, ``~/Library/Application Support/Transfer Studio`` on macOS,
  ``%LOCALAPPDATA%\\Transfer Studio`` on Windows);
- ``user_cache_dir()``: what can be made again (decoded pictures, parameter counts), which the system may clear.
"""

from __future__ import annotations

from pathlib import Path

APP_NAME = "Transfer Studio"


def user_data_dir() -> Path:
    """The folder where Transfer Studio keeps its own files, e.g. ~/.local/share/Transfer Studio."""
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def user_cache_dir() -> Path:
    """The folder for files that can be made again, e.g. ~/.cache/Transfer Studio."""
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


RESOURCES_PACKAGE = "transfer_studio_resources"  # the repository's resources/ folder, as the wheel installs it


def resources_dir() -> Path:
    """The folder of the app's own files (icon, guide, parameter counts, desktop entry ...): the installed package
    ``transfer_studio_resources`` (the repository's ``resources/`` folder, mapped in ``setup.py``), or, when that
    is not installed (an older editable install, a plain checkout on ``sys.path``), ``resources/`` beside
    ``engine/``."""
    import importlib.resources

    try:
        folder = Path(str(importlib.resources.files(RESOURCES_PACKAGE)))
    except ModuleNotFoundError:
        folder = None
    if folder is not None and folder.is_dir():
        return folder
    return Path(__file__).resolve().parent.parent / "resources"


def resource(name: str) -> Path:
    """The path of one of the app's own files, e.g. ``resource("icon.svg")``."""
    return resources_dir() / name
