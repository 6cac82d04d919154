"""The Qt window of Transfer Studio."""

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 reference-count bug, see the module)
