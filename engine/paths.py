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
