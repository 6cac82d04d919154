"""One picture at a time, large, with the model's guess pre-selected and a key for each answer.

Keys (also on the buttons): 1-9 give the class of that number, 0 (or N) "none of these", Space (or S) skips to the next
picture, Enter accepts the guess, Backspace goes back to the picture before. The view only emits the answer; the page
stores it and shows the next picture.
"""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

import html
import os

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont, QImage
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from engine.active import NONE_OF_THESE
from gui.widgets.pictures import ImageView

KEY_HINT = ("Keys: 1\u20139 give that class \u00b7 Enter accepts the model's guess \u00b7 0 or N: none of these "
            "\u00b7 Space: skip \u00b7 Backspace: back")
MAX_NUMBERED = 9


class LabelView(QWidget):
    """The picture being labelled, its guess and the answer buttons (``class_buttons``, ``none_button``,
    ``skip_button``)."""

    answered = Signal(str, str)  # picture path, class name or NONE_OF_THESE
    skipped = Signal(str)  # picture path
    back_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.path: str | None = None
        self.guess: str | None = None
        self.classes: list[str] = []
        self.image = ImageView("Press Suggest: the pictures most worth labelling appear here, one at a time.")
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        self.caption.setTextFormat(Qt.TextFormat.RichText)
        self.buttons_box = QWidget()
        self.buttons = QGridLayout(self.buttons_box)
        self.buttons.setContentsMargins(0, 0, 0, 0)
        self.class_buttons: list[QPushButton] = []
        self.none_button = QPushButton("0  None of these")
        self.none_button.setToolTip("The picture shows none of the classes (key 0 or N): it is kept out of training "
                                    "and not suggested again.")
        self.skip_button = QPushButton("Skip  (Space)")
        self.skip_button.setToolTip("Not sure: leave this picture for later (key Space or S).")
        self.none_button.clicked.connect(lambda: self._answer(NONE_OF_THESE))
        self.skip_button.clicked.connect(self._skip)
        for b in (self.none_button, self.skip_button):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # the keys keep going to the view
        hint = QLabel(KEY_HINT)
        hint.setWordWrap(True)
        hint.setForegroundRole(hint.foregroundRole().PlaceholderText)
        row = QHBoxLayout()
        row.addWidget(self.none_button)
        row.addWidget(self.skip_button)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.image, 1)
        layout.addWidget(self.caption)
        layout.addWidget(self.buttons_box)
        layout.addLayout(row)
        layout.addWidget(hint)
        self.set_picture(None)

    def set_classes(self, classes: list[str]) -> None:
        if list(classes) == self.classes:
            return
        self.classes = list(classes)
        for b in self.class_buttons:
            self.buttons.removeWidget(b)
            b.deleteLater()
        self.class_buttons = []
        columns = 4 if len(classes) > 4 else max(1, len(classes))
        for i, name in enumerate(self.classes):
            key = f"{i + 1}  " if i < MAX_NUMBERED else ""
            b = QPushButton(f"{key}{name}")
            b.setCheckable(True)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            b.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            b.setToolTip(f"This picture shows '{name}'" + (f" (key {i + 1})." if i < MAX_NUMBERED else "."))
            b.clicked.connect(lambda _=False, n=name: self._answer(n))
            self.buttons.addWidget(b, i // columns, i % columns)
            self.class_buttons.append(b)
        self._show_guess()

    def set_picture(self, path: str | None, guess: str | None = None, confidence: float | None = None,
                    position: str = "", answer: str | None = None) -> None:
        """Show ``path`` with the model's ``guess`` pre-selected (or the answer already given)."""
        self.path, self.guess = path, (answer if answer and answer != NONE_OF_THESE else guess)
        enabled = path is not None
        for b in self.class_buttons + [self.none_button, self.skip_button]:
            b.setEnabled(enabled)
        if path is None:
            self.image.set_image(None)
            self.caption.setText("")
        else:
            name = html.escape(os.path.basename(path))
            words = f"<b>{name}</b>"
            if position:
                words += f" &nbsp; <span>({html.escape(position)})</span>"
            if guess is not None:
                sure = f" ({confidence:.0%} sure)" if confidence is not None else ""
                words += f"<br>The model's guess: <b>{html.escape(guess)}</b>{sure} \u2014 press Enter to accept it."
            if answer:
                shown = "none of these" if answer == NONE_OF_THESE else answer
                words += f"<br>Your answer so far: <b>{html.escape(shown)}</b>."
            self.caption.setText(words)
        self._show_guess()

    def set_image(self, path: str, image: QImage | None) -> None:
        if path == self.path:
            self.image.set_image(image)

    def _show_guess(self) -> None:
        for b, name in zip(self.class_buttons, self.classes):
            b.setChecked(name == self.guess)
            font = QFont(b.font())
            font.setBold(name == self.guess)
            b.setFont(font)

    # -- answering -----------------------------------------------------------------------------------------------

    def _answer(self, label: str) -> None:
        if self.path is not None:
            self.answered.emit(self.path, label)

    def _skip(self) -> None:
        if self.path is not None:
            self.skipped.emit(self.path)

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        key = event.key()
        if Qt.Key.Key_1 <= key <= Qt.Key.Key_9:
            i = key - Qt.Key.Key_1
            if i < len(self.classes):
                self._answer(self.classes[i])
            return
        if key in (Qt.Key.Key_0, Qt.Key.Key_N):
            self._answer(NONE_OF_THESE)
        elif key in (Qt.Key.Key_Space, Qt.Key.Key_S):
            self._skip()
        elif key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            if self.guess is not None:
                self._answer(self.guess)
        elif key == Qt.Key.Key_Backspace:
            self.back_requested.emit()
        else:
            super().keyPressEvent(event)
