"""The confusion matrix fits its pane in a 1280x800 window up to 30 classes: no scroll bars, every cell on screen,
every class name reachable by hovering its header or a cell, and a click on a cell still lists its pictures."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QRect, Qt
from PySide6.QtGui import QFont, QFontMetrics
from PySide6.QtWidgets import QApplication

from engine.results.evaluate import Evaluation, compute_split
from gui.main_window import MainWindow
from gui.settings import file_settings
from gui.steps.evaluate import MATRIX_MIN_CELL, abbreviate

LEFT = Qt.MouseButton.LeftButton
TIP = Qt.ItemDataRole.ToolTipRole
NAMES = ["golden retriever", "loggerhead turtle", "outdoor swimming pool", "lemon", "olive tree", "ants", "bees",
         "red fox", "white stork", "hermit crab", "garden spider", "monarch butterfly", "sea anemone", "king penguin",
         "great grey owl", "tree frog", "snow leopard", "espresso maker", "grand piano", "mountain bike", "lighthouse",
         "paper towel", "pomegranate", "bell pepper", "cauliflower", "strawberry", "volcano", "coral reef", "daisy",
         "hay"]


def evaluation(n: int) -> Evaluation:
    """A made-up evaluation of ``n`` classes, 12 pictures each, with a few confusions."""
    rng = np.random.default_rng(n)
    classes = NAMES[:n]
    labels = np.repeat(np.arange(n), 12)
    logits = rng.normal(size=(len(labels), n))
    logits[np.arange(len(labels)), labels] += 2.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    paths = [f"/nowhere/{classes[label]}/{i}.png" for i, label in enumerate(labels)]
    return Evaluation("/nowhere", "timm:test", tuple(classes), "run",
                      {"val": compute_split("val", classes, labels, probs, paths)})


@pytest.fixture
def page(qtbot, tmp_path):
    """The Evaluate page inside the real main window at 1280x800."""
    window = MainWindow(settings=file_settings(tmp_path / "settings.ini"), data_dir=tmp_path / "data")
    qtbot.addWidget(window)
    window.resize(1280, 800)
    window.show()
    qtbot.waitExposed(window)
    window.stack.setCurrentWidget(window.steps)
    window.steps.sidebar.setCurrentRow(window.steps.keys.index("evaluate"))
    page = window.results.evaluate
    qtbot.waitUntil(page.isVisible)
    yield page
    window.shutdown()


def centre(rect: QRect) -> QPoint:
    return rect.center()


@pytest.mark.parametrize("n", [10, 30])
def test_the_matrix_fits_without_scrolling_and_names_every_class(qtbot, page, n):
    ev = evaluation(n)
    page.show_evaluation(ev)
    table = page.matrix.table
    QApplication.processEvents()  # the pending layout requests: the matrix takes its place
    assert page.window().size().width() == 1280 and page.window().size().height() == 800
    assert not table.horizontalScrollBar().isVisible() and not table.verticalScrollBar().isVisible()
    viewport = table.viewport().rect()
    for t in range(n):
        for p in range(n):
            rect = page.matrix.cell_rect(t, p)
            assert viewport.contains(rect.adjusted(0, 0, -1, -1)), (t, p, rect, viewport)
            assert rect.width() >= MATRIX_MIN_CELL and rect.height() >= MATRIX_MIN_CELL
    # Every class's full name is on hover: its column header, its row header, and the cells it is in.
    columns, rows = table.horizontalHeader(), table.verticalHeader()
    model = page.matrix.model
    for i, name in enumerate(NAMES[:n]):
        x = columns.sectionViewportPosition(i) + columns.sectionSize(i) // 2
        y = rows.sectionViewportPosition(i) + rows.sectionSize(i) // 2
        assert 0 <= x < columns.viewport().width() and 0 <= y < rows.viewport().height()
        col = columns.logicalIndexAt(QPoint(x, columns.height() // 2))
        row = rows.logicalIndexAt(QPoint(rows.width() // 2, y))
        assert name in model.headerData(col, Qt.Orientation.Horizontal, TIP)
        assert name in model.headerData(row, Qt.Orientation.Vertical, TIP)
        cell = table.indexAt(centre(page.matrix.cell_rect(i, (i + 1) % n)))
        other = NAMES[(i + 1) % n]
        count = ev.splits["val"].confusion[i][(i + 1) % n]
        assert cell.data(TIP).startswith(f"True {name}, predicted {other}: {count} picture")
    # A click on a cell still lists its pictures.
    split = ev.splits["val"]
    t, p = next((t, p) for t in range(n - 1, -1, -1) for p in range(n) if t != p and split.confusion[t][p])
    qtbot.mouseClick(table.viewport(), LEFT, pos=centre(page.matrix.cell_rect(t, p)))
    assert page.current_cell == (t, p) and page.shown_samples() == split.cell(t, p)
    assert NAMES[t] in page.cell_title.text() and NAMES[p] in page.cell_title.text()


def test_long_names_are_abbreviated_word_by_word_then_cut():
    metrics = QFontMetrics(QFont())
    name = "outdoor swimming pool"
    assert abbreviate(name, metrics, 1000) == name
    short = abbreviate(name, metrics, metrics.horizontalAdvance(name) - 10)
    assert short != name and short.split()[-1] == "pool" and short.startswith("outd")
    for width in (10, 30, 60, 90):
        assert metrics.horizontalAdvance(abbreviate(name, metrics, width)) <= width
    assert abbreviate("loggerheadturtle", metrics, 50).endswith("\u2026")
