"""Icons and the few style choices of the window, in one place.

Icons come from qtawesome (Material Design Icons), coloured with the Okabe-Ito palette so that states stay
distinguishable for colour-blind users; everything else follows the operating system's own palette (light or dark).
"""

from __future__ import annotations

from functools import lru_cache

from PySide6.QtGui import QIcon, QPalette
from PySide6.QtWidgets import QApplication

from engine.paths import resources_dir

RESOURCES = resources_dir()  # the installed package, or resources/ in a checkout

# Okabe-Ito colours
BLUE = "#0072B2"
SKY = "#56B4E9"
GREEN = "#009E73"
ORANGE = "#E69F00"
VERMILLION = "#D55E00"
GREY = "#8A8A8A"

_ICONS = {
    # states
    "ok": ("mdi6.check-circle", GREEN),
    "warning": ("mdi6.alert", ORANGE),
    "error": ("mdi6.close-circle", VERMILLION),
    "info": ("mdi6.information-outline", BLUE),
    "locked": ("mdi6.lock-outline", GREY),
    "todo": ("mdi6.circle-outline", GREY),
    # actions
    "open-folder": ("mdi6.folder-image", None),
    "open-project": ("mdi6.folder-open-outline", None),
    "demo": ("mdi6.shape-outline", None),
    "save": ("mdi6.content-save-outline", None),
    "refresh": ("mdi6.refresh", None),
    "cancel": ("mdi6.close", None),
    "recent": ("mdi6.file-document-outline", None),
    "help": ("mdi6.help-circle-outline", None),
    "review": ("mdi6.stethoscope", None),
    # steps
    "step-data": ("mdi6.image-multiple-outline", None),
    "step-model": ("mdi6.cube-outline", None),
    "step-layers": ("mdi6.layers-outline", None),
    "step-train": ("mdi6.play-circle-outline", None),
    "step-evaluate": ("mdi6.chart-box-outline", None),
    "step-export": ("mdi6.export", None),
    "step-label": ("mdi6.tag-multiple-outline", None),
}


@lru_cache(maxsize=None)
def _icon(name: str, colour: str) -> QIcon:
    import qtawesome as qta

    spec, fixed = _ICONS[name]
    return qta.icon(spec, color=fixed or colour)


def icon(name: str) -> QIcon:
    """A named icon: state icons in their own colour, action icons in the palette's text colour."""
    app = QApplication.instance()
    text = app.palette().color(QPalette.ColorRole.WindowText).name() if app else "#333333"
    return _icon(name, text)


def app_icon() -> QIcon:
    return QIcon(str(RESOURCES / "icon.svg"))


def is_dark(palette: QPalette) -> bool:
    return palette.color(QPalette.ColorRole.Window).lightness() < 128
