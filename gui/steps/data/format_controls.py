"""How lab pictures are read: DICOM frames and window, the contrast stretch of 16-bit and float pictures, which
channels show as red, green and blue, and how whole slides are cut into tiles -- with what the scan read, in words.

Every change is a data setting of the project's RunConfig (config.toml's [data]); the page scans again with it, and
the grid, the preview and the health report then show the pictures exactly as the model will see them.
"""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QSpinBox,
                               QVBoxLayout, QWidget)

from engine.config import DataConfig
from engine.data.formats.settings import settings_problem
from engine.data.scan import DatasetIndex, format_lines

_ORDINARY = frozenset({"JPEG", "PNG", "BMP", "GIF", "WebP", "TIFF"})


class FormatControls(QWidget):
    """Emits ``settings_changed(dict)`` with the DataConfig fields the user changed (valid ones only)."""

    settings_changed = Signal(dict)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._updating = False
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setToolTip("What the last scan read, and how (the same lines as python main.py scan prints).")

        self.frames = QComboBox()
        self.frames.addItem("The middle frame", "middle")
        self.frames.addItem("Every frame, each a picture", "all")
        self.frames.setToolTip("DICOM files with several frames (a cine loop, a stack of slices): use the middle "
                               "frame as the picture, or every frame as a picture of its own (all in the same split).")
        self.window = QComboBox()
        self.window.addItem("The window stored in the file", "file")
        self.window.addItem("Automatic (percentiles)", "auto")
        self.window.setToolTip("Which brightness range of a DICOM becomes black to white: the window the modality "
                               "stored (automatic when there is none), or always the automatic stretch below.")
        self.scope = QComboBox()
        self.scope.addItem("Each picture on its own", "picture")
        self.scope.addItem("The whole dataset", "dataset")
        self.scope.setToolTip("16-bit and float pictures are stretched so that their dark and bright percentiles "
                              "become black and white. 'Each picture' makes every picture use the full range; 'the "
                              "whole dataset' keeps real differences in brightness between pictures.")
        self.low = QDoubleSpinBox()
        self.high = QDoubleSpinBox()
        for box, tip in ((self.low, "The percentile that becomes black (0.5 % is usual)."),
                         (self.high, "The percentile that becomes white (99.5 % is usual).")):
            box.setRange(0.0, 100.0)
            box.setDecimals(1)
            box.setSingleStep(0.5)
            box.setSuffix(" %")
            box.setToolTip(tip)
        stretch = QHBoxLayout()
        stretch.setContentsMargins(0, 0, 0, 0)
        stretch.addWidget(self.scope, 1)
        stretch.addWidget(QLabel("from"))
        stretch.addWidget(self.low)
        stretch.addWidget(QLabel("to"))
        stretch.addWidget(self.high)
        self.channels = QLineEdit()
        self.channels.setPlaceholderText("rgb")
        self.channels.setToolTip("Pictures with more than three channels (fluorescence, multispectral): 'rgb' shows "
                                 "the first three as red, green and blue; three channel numbers such as 3,2,1 choose "
                                 "them (counted from 1); one number shows that channel in grey; 'all' gives every "
                                 "channel to the model (its first layer is adapted to take them; the grid then "
                                 "shows the first three).")
        self.tile = QSpinBox()
        self.tile.setRange(32, 4096)
        self.tile.setSingleStep(64)
        self.tile.setSuffix(" px")
        self.tile.setToolTip("Whole-slide pictures are cut into square tiles of this size; each tile is a picture "
                             "with its slide's class.")
        self.magnification = QDoubleSpinBox()
        self.magnification.setRange(0.0, 100.0)
        self.magnification.setDecimals(1)
        self.magnification.setSpecialValueText("full resolution")
        self.magnification.setSuffix(" x")
        self.magnification.setToolTip("The objective magnification the tiles are cut at (20 x, 10 x ...): lower "
                                      "shows more tissue per tile. 'full resolution' uses the slide as scanned.")
        self.tissue = QSpinBox()
        self.tissue.setRange(0, 100)
        self.tissue.setSuffix(" % tissue")
        self.tissue.setToolTip("Tiles with less tissue than this (glass, background) are left out.")
        slides = QHBoxLayout()
        slides.setContentsMargins(0, 0, 0, 0)
        for widget in (self.tile, self.magnification, self.tissue):
            slides.addWidget(widget)
        self.problem = QLabel()
        self.problem.setWordWrap(True)
        self.problem.hide()

        form = self.form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("DICOM frames", self.frames)
        form.addRow("DICOM window", self.window)
        form.addRow("Contrast stretch", stretch)
        form.addRow("Channels", self.channels)
        form.addRow("Slide tiles", slides)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.summary)
        layout.addLayout(form)
        layout.addWidget(self.problem)

        for combo in (self.frames, self.window, self.scope):
            combo.activated.connect(self._changed)
        for box in (self.low, self.high, self.tile, self.magnification, self.tissue):
            box.editingFinished.connect(self._changed)
        self.channels.editingFinished.connect(self._changed)

    def values(self) -> dict:
        """The settings as DataConfig fields."""
        return {"dicom_frames": self.frames.currentData(), "dicom_window": self.window.currentData(),
                "stretch": self.scope.currentData(), "stretch_low": round(self.low.value(), 3),
                "stretch_high": round(self.high.value(), 3), "channels": self.channels.text().strip() or "rgb",
                "slide_tile": self.tile.value(), "slide_magnification": round(self.magnification.value(), 3),
                "slide_tissue": round(self.tissue.value() / 100.0, 4)}

    def set_state(self, index: DatasetIndex | None, data: DataConfig) -> None:
        """Show ``data``'s settings and what the scan of ``index`` read."""
        self._updating = True
        try:
            for combo, value in ((self.frames, data.dicom_frames), (self.window, data.dicom_window),
                                 (self.scope, data.stretch)):
                combo.setCurrentIndex(max(0, combo.findData(value)))
            self.low.setValue(data.stretch_low)
            self.high.setValue(data.stretch_high)
            self.channels.setText(data.channels)
            self.tile.setValue(data.slide_tile)
            self.magnification.setValue(data.slide_magnification)
            self.tissue.setValue(round(data.slide_tissue * 100))
        finally:
            self._updating = False
        lines = [line for line in (format_lines(index) if index is not None else [])
                 if not line.startswith("Settings: ")]  # the controls below show the settings
        self.summary.setText("\n".join(lines) if lines else "No pictures read yet.")
        self.problem.hide()
        # Only the settings that matter for the formats read (all of them before a scan).
        files = " ".join(((index.formats or {}).get("files") or {}) if index is not None else {})
        every = not files
        shown = {0: "DICOM" in files, 1: "DICOM" in files, 2: "DICOM" in files or "bit" in files or "float" in files,
                 3: "channels" in files, 4: "slide" in files}
        for row, visible in shown.items():
            self.form.setRowVisible(row, every or visible)

    @staticmethod
    def relevant(index: DatasetIndex | None, data: DataConfig) -> bool:
        """Whether the data holds lab pictures (or the settings are not the defaults): else the box stays hidden."""
        files = ((index.formats or {}).get("files") or {}) if index is not None else {}
        defaults = DataConfig()
        changed = any(getattr(data, name) != getattr(defaults, name) for name in (
            "dicom_frames", "dicom_window", "stretch", "stretch_low", "stretch_high", "channels", "slide_tile",
            "slide_magnification", "slide_tissue"))
        return changed or any(label not in _ORDINARY for label in files)

    def _changed(self, *_args) -> None:
        if self._updating:
            return
        values = self.values()
        from types import SimpleNamespace

        problem = settings_problem(SimpleNamespace(**values))
        if problem:
            self.problem.setText(problem)
            self.problem.show()
            return
        self.problem.hide()
        self.settings_changed.emit(values)
