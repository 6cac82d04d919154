"""The built-in guide: what each step is for and how to choose, in plain words, offline.

The text is ``resources/guide.md`` (found the way ``gui.style`` finds the app's resources), shown by a
``GuideWindow``: a non-modal window with a list of its sections beside the text. Each step of the sidebar has its
section, titled "<number>. <step title>" (``section_of(key)``); ``show_guide(parent, key)`` opens the one window of a
parent at that step's section, or raises it when it is already open.
"""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

import re
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut, QTextCharFormat, QTextCursor, QTextDocument
from PySide6.QtWidgets import QListWidget, QListWidgetItem, QSplitter, QTextBrowser, QVBoxLayout, QWidget

from gui import style
from gui.sidebar import STEPS

GUIDE_FILE = "guide.md"
TITLE = "Transfer Studio guide"
SECTION_LEVEL = 2  # '## 3. Layers': the sections listed beside the text, one per step and a few more


def guide_path() -> Path:
    return style.RESOURCES / GUIDE_FILE


def section_of(key: str) -> str:
    """The heading of a step's section: '3. Layers' for 'layers'."""
    for number, info in enumerate(STEPS, start=1):
        if info.key == key:
            return f"{number}. {info.title}"
    raise KeyError(f"unknown step {key!r}")


def anchor_of(heading: str) -> str:
    """The anchor of a section: 'layers' for '3. Layers', 'working-offline' for 'Working offline'."""
    return re.sub(r"[^a-z0-9]+", "-", re.sub(r"^\d+\.\s*", "", heading.lower())).strip("-")


def read_guide(path: Path | None = None) -> str:
    """The guide's Markdown, or a short text saying it is missing (never an exception)."""
    path = path or guide_path()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "it cannot be read"
        return (f"# {TITLE}\n\nThe guide could not be opened ({path}: {reason}). Installing Transfer Studio again "
                "puts it back. Every button and setting still explains itself when you rest the mouse on it.\n")


class GuideWindow(QWidget):
    """The guide in a window of its own, beside the main window (not modal): the sections on the left, the text
    on the right; ``show_section(heading)`` scrolls the text to a section."""

    def __init__(self, parent: QWidget | None = None, path: Path | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setWindowTitle(TITLE)
        self.setWindowIcon(style.app_icon())
        self.browser = QTextBrowser()
        self.browser.setOpenExternalLinks(True)
        self.browser.setAccessibleName("Guide text")
        self.browser.document().setDocumentMargin(16)
        self.browser.setMarkdown(read_guide(path))
        self.contents = QListWidget()
        self.contents.setAccessibleName("Guide sections")
        self.contents.setToolTip("Click a section to read it.")
        self.contents.setSpacing(2)
        self._anchors: list[str] = []
        for heading in self._mark_sections():
            item = QListWidgetItem(heading)
            item.setData(Qt.ItemDataRole.UserRole, anchor_of(heading))
            self.contents.addItem(item)
            self._anchors.append(anchor_of(heading))
        self.contents.setCurrentRow(-1)
        self.contents.itemClicked.connect(lambda item: self.show_section(item.text()))
        self.contents.currentItemChanged.connect(
            lambda item, _previous: self._scroll_to(item.data(Qt.ItemDataRole.UserRole)) if item else None)
        self.browser.verticalScrollBar().valueChanged.connect(self._follow_scroll)
        self._following = False

        splitter = QSplitter()
        splitter.addWidget(self.contents)
        splitter.addWidget(self.browser)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([200, 700])
        splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(splitter)
        QShortcut(QKeySequence(QKeySequence.StandardKey.Close), self, self.close)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self.close)
        self.resize(940, 680)

    # -- sections

    def _mark_sections(self) -> list[str]:
        """Give each section heading an anchor (Markdown headings have none) and return the headings in order."""
        headings = []
        document: QTextDocument = self.browser.document()
        block = document.begin()
        while block.isValid():
            if block.blockFormat().headingLevel() == SECTION_LEVEL and block.text().strip():
                heading = block.text().strip()
                cursor = QTextCursor(block)
                cursor.movePosition(QTextCursor.MoveOperation.EndOfBlock, QTextCursor.MoveMode.KeepAnchor)
                mark = QTextCharFormat()
                mark.setAnchor(True)
                mark.setAnchorNames([anchor_of(heading)])
                cursor.mergeCharFormat(mark)
                headings.append(heading)
            block = block.next()
        return headings

    def sections(self) -> list[str]:
        """The section headings, in order."""
        return [self.contents.item(i).text() for i in range(self.contents.count())]

    def show_section(self, heading: str) -> None:
        """Scroll the text so that this section's heading is at the top, and mark it in the contents."""
        anchor = anchor_of(heading)
        if anchor not in self._anchors:
            return
        row = self._anchors.index(anchor)
        if self.contents.currentRow() != row:
            self.contents.setCurrentRow(row)  # scrolls through currentItemChanged
        else:
            self._scroll_to(anchor)

    def show_step(self, key: str) -> None:
        self.show_section(section_of(key))

    def current_section(self) -> str | None:
        """The section whose text is at the top of the view."""
        top = self.browser.cursorForPosition(self.browser.viewport().rect().topLeft()).block()
        heading = None
        block = self.browser.document().begin()
        while block.isValid() and block.position() <= top.position():
            if block.blockFormat().headingLevel() == SECTION_LEVEL:
                heading = block.text().strip()
            block = block.next()
        return heading

    def _scroll_to(self, anchor: str) -> None:
        self._following = True
        try:
            self.browser.scrollToAnchor(anchor)  # waits until the window is shown when it is not yet
        finally:
            self._following = False

    def _follow_scroll(self) -> None:
        """Mark the section being read in the contents, as the reader scrolls."""
        if self._following:
            return
        heading = self.current_section()
        if heading is None:
            return
        row = self._anchors.index(anchor_of(heading)) if anchor_of(heading) in self._anchors else -1
        if row >= 0 and row != self.contents.currentRow():
            self.contents.blockSignals(True)
            self.contents.setCurrentRow(row)
            self.contents.blockSignals(False)


def show_guide(parent: QWidget, key: str | None = None) -> GuideWindow:
    """Open (or raise) ``parent``'s guide window, at step ``key``'s section when one is given."""
    window = parent.findChild(GuideWindow)
    if window is None:
        window = GuideWindow(parent)  # a window of its own, closed with its parent
    if key is not None:
        window.show_step(key)
    window.show()
    window.raise_()
    window.activateWindow()
    return window
