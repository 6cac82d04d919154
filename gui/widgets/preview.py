"""A larger view of one picture with its facts (file size, mode, dimensions, path), opened by a double-click.

The picture is decoded by a job of the window's job service (``gui.support.jobs``), so that a huge file never freezes
the window; showing another picture cancels the decode of the previous one.
"""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

import os
from dataclasses import dataclass

from PySide6.QtCore import QSize, Qt, QUrl
from PySide6.QtGui import QDesktopServices, QImage, QPixmap
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFormLayout, QHBoxLayout, QLabel, QPushButton, QSizePolicy,
                               QVBoxLayout, QWidget)

from engine.data.images import ImageError, load_rgb
from gui.support.jobs import Jobs

PREVIEW_SIZE = 560
PREVIEW = "preview"  # the kind of the dialog's jobs


@dataclass(frozen=True)
class PictureFacts:
    path: str
    file_size: int
    format: str
    mode: str
    width: int  # as stored in the file (before turning it upright)
    height: int


def read_facts(path: str) -> PictureFacts:
    """The file's size and its picture header (format, mode, dimensions); reading the header decodes no pixels."""
    from PIL import Image

    from engine.data.formats import lab_facts  # DICOM, 16-bit and many-channel TIFF, a slide's tile

    found = lab_facts(path)
    if found is not None:
        return PictureFacts(path, *found)
    size = os.path.getsize(path)
    with Image.open(path) as img:
        return PictureFacts(path, size, img.format or "?", img.mode, img.width, img.height)


def human_size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


MODE_WORDS = {"RGB": "RGB colour", "RGBA": "RGB colour with transparency", "L": "greyscale",
              "LA": "greyscale with transparency", "P": "palette colours", "CMYK": "CMYK (print) colour",
              "1": "black and white", "I;16": "16-bit greyscale", "I": "32-bit greyscale",
              "F": "floating-point greyscale"}
SPLIT_WORDS = {"train": "training", "val": "validation", "test": "test"}


def decode_picture(path: str) -> tuple[str, QImage | None, PictureFacts | None, str]:
    """(path, the picture at most twice PREVIEW_SIZE on its longer side or None, its facts or None, why it cannot be
    shown or ""). Runs on a pool thread."""
    facts, image, error = None, None, ""
    try:
        facts = read_facts(path)
    except Exception:  # the decode below says what is wrong, in a sentence
        facts = None
    try:
        picture = load_rgb(path, draft_size=(PREVIEW_SIZE, PREVIEW_SIZE))
        picture.thumbnail((PREVIEW_SIZE * 2, PREVIEW_SIZE * 2))
        data = picture.tobytes("raw", "RGB")
        image = QImage(data, picture.width, picture.height, 3 * picture.width, QImage.Format.Format_RGB888).copy()
    except ImageError as exc:
        error = str(exc)
    return path, image, facts, error


class PreviewDialog(QDialog):
    """Shows one picture; ``show_picture`` can be called again to show another one in the same dialog."""

    def __init__(self, parent: QWidget | None = None, jobs: Jobs | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Picture")
        self.setModal(False)
        self._path = ""
        self._pixmap: QPixmap | None = None
        self.jobs = Jobs(self, service=jobs)

        self.image = QLabel("Loading ...")
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image.setMinimumSize(QSize(PREVIEW_SIZE // 2, PREVIEW_SIZE // 2))
        self.image.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)  # no growth loop

        self.facts = QFormLayout()
        self.facts.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self.fields: dict[str, QLabel] = {}
        for key, label in (("name", "File"), ("class", "Class"), ("split", "Used for"), ("dimensions", "Dimensions"),
                           ("mode", "Colours"), ("format", "Format"), ("size", "File size"), ("path", "Path")):
            value = QLabel()
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setWordWrap(True)
            self.fields[key] = value
            self.facts.addRow(label + ":", value)
        self.problem = QLabel()
        self.problem.setWordWrap(True)
        self.problem.hide()

        reveal = QPushButton("Show in folder")
        reveal.setToolTip("Open the folder that holds this picture in your file manager.")
        reveal.clicked.connect(self._reveal)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        buttons.button(QDialogButtonBox.StandardButton.Close).setToolTip("Close this view.")
        bottom = QHBoxLayout()
        bottom.addWidget(reveal)
        bottom.addStretch(1)
        bottom.addWidget(buttons)

        side = QVBoxLayout()
        side.addLayout(self.facts)
        side.addWidget(self.problem)
        side.addStretch(1)
        top = QHBoxLayout()
        top.addWidget(self.image, 3)
        top.addLayout(side, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(bottom)
        self.resize(PREVIEW_SIZE + 360, PREVIEW_SIZE + 60)

    @property
    def path(self) -> str:
        return self._path

    def show_picture(self, path: str, class_name: str = "", split: str = "") -> None:
        self._path = path
        self._pixmap = None
        from engine.data.formats import display_name  # a slide's tile, a DICOM's frame: said in words

        self.setWindowTitle(display_name(path))
        self.image.setPixmap(QPixmap())
        self.image.setText("Loading ...")
        self.problem.hide()
        self.fields["name"].setText(display_name(path))
        self.fields["class"].setText(class_name or "-")
        self.fields["split"].setText(SPLIT_WORDS.get(split, split or "-"))
        self.fields["path"].setText(path)
        for key in ("dimensions", "mode", "format", "size"):
            self.fields[key].setText("...")
        self.jobs.start(PREVIEW, lambda progress, stop: decode_picture(path), lambda result: self._on_decoded(*result),
                        on_error=lambda message: self._on_decoded(path, None, None, message),
                        what="Showing the picture")

    def _on_decoded(self, path: str, image: QImage | None, facts: PictureFacts | None, error: str) -> None:
        if path != self._path:
            return  # an older request
        if facts is not None:
            self.fields["dimensions"].setText(f"{facts.width} x {facts.height} pixels")
            self.fields["mode"].setText(f"{MODE_WORDS.get(facts.mode, facts.mode)} ({facts.mode})")
            self.fields["format"].setText(facts.format)
            self.fields["size"].setText(human_size(facts.file_size))
        else:
            for key in ("dimensions", "mode", "format", "size"):
                self.fields[key].setText("-")
        if image is None:
            self.image.setText("This picture cannot be shown.")
            self.problem.setText(error)
            self.problem.show()
            return
        self._pixmap = QPixmap.fromImage(image)
        self._fit()

    def _fit(self) -> None:
        pixmap = self._pixmap
        if pixmap is not None and not pixmap.isNull():
            self.image.setPixmap(pixmap.scaled(self.image.size(), Qt.AspectRatioMode.KeepAspectRatio,
                                               Qt.TransformationMode.SmoothTransformation))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit()

    def _reveal(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(os.path.dirname(self._path)))
