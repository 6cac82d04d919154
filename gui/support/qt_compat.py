"""A guard against a reference-counting bug in PySide6 6.12.0 on Python 3.11.

In that version every ``SignalInstance.emit(...)`` returns ``True`` without taking a reference to it, and a Python
``QRunnable.run`` does the same with ``None``: each call drops one reference the caller never had. Python 3.12 and
later make ``True``, ``False`` and ``None`` immortal, so nothing happens there; on Python 3.11 the interpreter aborts
("Fatal Python error: bool_dealloc") after a few thousand signals, for example while thumbnails load or a training
run reports its batches.

Importing this module checks for the bug once (ten emits of a private signal) and, only when it is present, gives
those three singletons a reference count so large that it cannot reach zero: what Python 3.12 does for them. It is
imported by every ``gui`` module that emits signals; it does nothing on a PySide6 without the bug.
"""

from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject, Signal

_HEADROOM = 1 << 40  # references added to each singleton: ~10^12 emits before it could matter
PATCHED = False


class _Probe(QObject):
    probe = Signal()


def emit_drops_a_reference() -> bool:
    """True when ``emit()`` loses a reference to ``True`` (the PySide6 6.12.0 bug)."""
    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(10):
        probe.probe.emit()
    return sys.getrefcount(True) < before


def _add_references(obj: object, count: int) -> None:
    # CPython < 3.12: ob_refcnt is the object's first field, a Py_ssize_t.
    ctypes.c_ssize_t.from_address(id(obj)).value += count


def _patch() -> bool:
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    if not emit_drops_a_reference():
        return False
    for singleton in (True, False, None):
        _add_references(singleton, _HEADROOM)
    return True


PATCHED = _patch()
