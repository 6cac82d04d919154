"""The workflow as navigation: a sidebar of steps (Data, Model, Layers, Train, Evaluate, Predict & Export), each
showing its state, and the page of the chosen step.

Steps built elsewhere plug in with ``steps.set_page(key, widget)`` and report how they stand with
``steps.set_state(key, StepState.DONE | ATTENTION | BLOCKED | READY, reason)``; the reason shows on hover in the
sidebar and, for a step that needs attention or cannot be used yet, in a banner above its page. Until a step is
plugged in, its page says what it will do and that it is not available yet.

Above each page, a header names the step and says what it is for; its "?" button emits ``help_requested(key)``
(the main window opens the guide at that step's section, ``gui.help``).
"""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

import html
from dataclasses import dataclass
from enum import Enum

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QSizePolicy,
                               QStackedWidget, QToolButton, QVBoxLayout, QWidget)

from gui import style


class StepState(str, Enum):
    READY = "ready"  # can be used, nothing to report
    DONE = "done"
    ATTENTION = "attention"  # usable, but something should be looked at (the reason says what)
    BLOCKED = "blocked"  # not yet possible (the reason says why and what to do first)


STATE_ICONS = {StepState.READY: "todo", StepState.DONE: "ok", StepState.ATTENTION: "warning",
               StepState.BLOCKED: "locked"}
STATE_WORDS = {StepState.READY: "ready", StepState.DONE: "done", StepState.ATTENTION: "needs attention",
               StepState.BLOCKED: "not yet possible"}


@dataclass(frozen=True)
class StepInfo:
    key: str
    title: str
    icon: str
    purpose: str  # what the step is for, in one sentence


STEPS = (
    StepInfo("data", "Data", "step-data",
             "Choose a folder of pictures sorted into one sub-folder per class, check them, and decide which "
             "pictures train the model and which measure it."),
    StepInfo("model", "Model", "step-model",
             "Pick a pretrained model (ResNet, EfficientNet, MobileNet, ViT, ...) and where its weights come from: "
             "downloaded, a file on this computer, or a model you trained before."),
    StepInfo("layers", "Layers", "step-layers",
             "Choose which layers of the model to keep as they are (frozen) and which to retrain on your pictures, "
             "from a preset or layer by layer."),
    StepInfo("train", "Train", "step-train",
             "Train the model on your pictures and watch its accuracy grow; stop at any time and keep the best "
             "result."),
    StepInfo("evaluate", "Evaluate", "step-evaluate",
             "See how well the trained model recognises each class, which classes it confuses, and the pictures it "
             "gets wrong."),
    StepInfo("export", "Predict & Export", "step-export",
             "Use the trained model on new pictures, and save it in formats other programs can use (ONNX, "
             "TorchScript, safetensors)."),
    StepInfo("label", "Label", "step-label",
             "Let the model pick which unlabelled pictures are most worth labelling, label them with a key press, "
             "and retrain in seconds."),
)


class _Banner(QFrame):
    """A line above a page: why the step cannot be used yet, or what needs attention."""

    def __init__(self) -> None:
        super().__init__()
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAutoFillBackground(True)
        palette = self.palette()
        palette.setColor(QPalette.ColorRole.Window, palette.color(QPalette.ColorRole.AlternateBase))
        self.setPalette(palette)
        self.icon = QLabel()
        self.text = QLabel()
        self.text.setWordWrap(True)
        row = QHBoxLayout(self)
        row.setContentsMargins(10, 6, 10, 6)
        row.addWidget(self.icon)
        row.addWidget(self.text, 1)
        self.hide()

    def show_state(self, state: StepState, reason: str) -> None:
        if state in (StepState.BLOCKED, StepState.ATTENTION) and reason:
            self.icon.setPixmap(style.icon(STATE_ICONS[state]).pixmap(18, 18))
            prefix = "Not yet possible: " if state is StepState.BLOCKED else ""
            self.text.setText(prefix + reason)
            self.show()
        else:
            self.hide()


class _StepFrame(QWidget):
    """A step's page with its header (the step's name, what it is for, and a "?" that opens the guide at the step)
    and its banner on top."""

    def __init__(self, content: QWidget) -> None:
        super().__init__()
        self.header = QWidget()
        self.title = QLabel()
        self.purpose = QLabel()
        self.purpose.setWordWrap(True)
        self.purpose.setTextFormat(Qt.TextFormat.RichText)  # escaped text: shown as written, quotes included
        self.purpose.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.help_button = QToolButton()
        self.help_button.setText("?")
        self.help_button.setIcon(style.icon("help"))  # a question mark in a circle
        self.help_button.setIconSize(QSize(20, 20))
        self.help_button.setAutoRaise(True)
        row = QHBoxLayout(self.header)
        row.setContentsMargins(10, 4, 6, 0)
        row.setSpacing(10)
        row.addWidget(self.title, 0, Qt.AlignmentFlag.AlignTop)
        row.addWidget(self.purpose, 1, Qt.AlignmentFlag.AlignTop)
        row.addWidget(self.help_button, 0, Qt.AlignmentFlag.AlignTop)
        self.banner = _Banner()
        self.content = content
        self.layout_ = QVBoxLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.layout_.setSpacing(6)
        self.layout_.addWidget(self.header)
        self.layout_.addWidget(self.banner)
        self.layout_.addWidget(content, 1)

    def set_step(self, info: StepInfo, number: int) -> None:
        self.title.setText(f"<b>{number}. {html.escape(info.title)}</b>")
        self.purpose.setText(html.escape(info.purpose))
        self.help_button.setToolTip(f"Help on this step: opens the guide at \u201c{info.title}\u201d (F1 opens the "
                                    "whole guide).")
        self.help_button.setAccessibleName(f"Help on the {info.title} step")

    def replace(self, content: QWidget) -> None:
        self.layout_.replaceWidget(self.content, content)
        self.content.hide()
        self.content.deleteLater()
        self.content = content
        content.show()


class Steps(QWidget):
    """The sidebar and the step pages."""

    current_changed = Signal(str)  # the key of the step now shown
    help_requested = Signal(str)  # the key of the step whose "?" was pressed

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.infos = {info.key: info for info in STEPS}
        self.sidebar = QListWidget()
        self.sidebar.setObjectName("stepSidebar")
        self.sidebar.setIconSize(QSize(20, 20))
        self.sidebar.setFrameShape(QFrame.Shape.NoFrame)
        self.sidebar.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Expanding)
        self.sidebar.setFixedWidth(190)
        self.sidebar.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.sidebar.setAccessibleName("Steps")
        # The chosen step reads clearly even when it is greyed (not yet possible).
        self.sidebar.setStyleSheet("QListWidget#stepSidebar::item:selected { color: palette(highlighted-text); }"
                                   "QListWidget#stepSidebar::item { padding-left: 6px; }")
        self.pages = QStackedWidget()
        self._frames: dict[str, _StepFrame] = {}
        self._items: dict[str, QListWidgetItem] = {}
        self._states: dict[str, tuple[StepState, str]] = {}
        self._plugged: set[str] = set()
        for number, info in enumerate(STEPS, start=1):
            item = QListWidgetItem(f"{number}  {info.title}")
            item.setData(Qt.ItemDataRole.UserRole, info.key)
            item.setSizeHint(QSize(180, 40))
            self.sidebar.addItem(item)
            self._items[info.key] = item
            frame = _StepFrame(QWidget())  # the main window plugs every step's page in
            self._frames[info.key] = frame
            frame.set_step(info, number)
            frame.help_button.clicked.connect(lambda _=False, key=info.key: self.help_requested.emit(key))
            self.pages.addWidget(frame)
            self.set_state(info.key, StepState.BLOCKED, "Open pictures first.")  # until the window says otherwise
        self.sidebar.currentRowChanged.connect(self._on_row)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.sidebar)
        line = QFrame()
        line.setFrameShape(QFrame.Shape.VLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)
        layout.addWidget(line)
        layout.addWidget(self.pages, 1)
        self.sidebar.setCurrentRow(0)

    # -- the plug-in API -------------------------------------------------------------------------------------

    @property
    def keys(self) -> list[str]:
        return [info.key for info in STEPS]

    def set_page(self, key: str, widget: QWidget) -> None:
        """Show ``widget`` as the page of step ``key`` (replacing its placeholder or an earlier page)."""
        self._frames[self._check(key)].replace(widget)
        self._plugged.add(key)
        self.set_state(key, *self._states[key])  # its banner may show now

    def page(self, key: str) -> QWidget:
        return self._frames[self._check(key)].content

    def is_plugged(self, key: str) -> bool:
        return key in self._plugged

    def set_state(self, key: str, state: StepState, reason: str = "") -> None:
        """Show how step ``key`` stands; ``reason`` (a sentence) appears on hover, and above the page when the step
        needs attention or is not yet possible."""
        state = StepState(state)
        self._states[self._check(key)] = (state, reason)
        item = self._items[key]
        info = self.infos[key]
        item.setIcon(style.icon(STATE_ICONS[state]))
        palette = self.sidebar.palette()
        group = QPalette.ColorGroup.Disabled if state is StepState.BLOCKED else QPalette.ColorGroup.Active
        item.setForeground(palette.color(group, QPalette.ColorRole.Text))
        tip = f"{info.title}: {STATE_WORDS[state]}."
        if reason:
            tip += f"\n{reason}"
        tip += f"\n\n{info.purpose}"
        item.setToolTip(tip)
        # A step not built yet says so on its own page; the banner is for steps that are there.
        self._frames[key].banner.show_state(state, reason if key in self._plugged else "")

    def state(self, key: str) -> tuple[StepState, str]:
        return self._states[self._check(key)]

    def go_to(self, key: str) -> None:
        self.sidebar.setCurrentRow(self.keys.index(self._check(key)))

    def current_key(self) -> str:
        return self.keys[max(0, self.sidebar.currentRow())]

    # -- internals -------------------------------------------------------------------------------------------

    def _check(self, key: str) -> str:
        if key not in self.infos:
            raise KeyError(f"unknown step {key!r}; the steps are {', '.join(self.infos)}")
        return key

    def _on_row(self, row: int) -> None:
        if row < 0:
            return
        self.pages.setCurrentIndex(row)
        self.current_changed.emit(self.keys[row])
