"""The Data step as a user meets it: open a folder, see counts per class and split, filter, search, read the health
report, change the split, preview a picture; scanning runs in the background and can be cancelled; the grid decodes
only the pictures on screen."""

from __future__ import annotations

import shutil
from pathlib import Path
import threading

import pytest
from PySide6.QtCore import QPoint, Qt

from engine.data.scan import scan
from engine.errors import UserError
from gui.steps.data.picture_model import ClassRole, SplitRole
from gui.main_window import MainWindow
from gui.settings import file_settings
from engine.data.split import resplit
from gui.sidebar import StepState
from tests.conftest import make_class_folders


@pytest.fixture
def window(qtbot, tmp_path):
    w = MainWindow(settings=file_settings(tmp_path / "settings.ini"), data_dir=tmp_path / "data")
    w.ask_unsaved = lambda: "discard"
    w.errors = []
    w.show_error = lambda title, message, warning=True: w.errors.append(message)
    qtbot.addWidget(w)
    w.resize(1100, 700)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.shutdown()


def open_and_wait(qtbot, window, folder):
    window.open_folder(folder)
    qtbot.waitUntil(lambda: window.project.dataset is not None and not window.data_page.scanning, timeout=20_000)
    return window.project.dataset


def test_opening_a_folder_shows_its_pictures_counts_and_split(qtbot, window, tiny_dataset):
    index = open_and_wait(qtbot, window, tiny_dataset)
    page = window.data_page
    assert window.steps.current_key() == "data"
    assert page.browser.model.rowCount() == 24
    assert page.browser.count.text() == "24 pictures"
    assert [page.browser.class_filter.itemText(i) for i in range(4)] == ["All classes", "blue (8)", "green (8)",
                                                                        "red (8)"]
    assert page.chart.totals() == {"blue": 8, "green": 8, "red": 8}
    assert set(page.chart.bars) == {"train", "val"}  # no test pictures, so no test bars
    counts = index.counts()
    assert counts["train"] == {"blue": 6, "green": 6, "red": 6} and counts["val"] == {"blue": 2, "green": 2, "red": 2}
    assert "training (18)" in page.chart.legend.text() and "validation (6)" in page.chart.legend.text()
    state, reason = window.steps.state("data")  # six training pictures per class are few: the step says so
    assert state is StepState.ATTENTION and "has only 6 training pictures" in reason
    assert "18 train / 6 val pictures" in window.summary.text()
    assert window.windowTitle().replace("[*]", "") == "Transfer Studio - colours"


def test_filters_by_class_and_split(qtbot, window, tiny_dataset):
    open_and_wait(qtbot, window, tiny_dataset)
    browser = window.data_page.browser
    model = browser.model
    browser.class_filter.setCurrentIndex(browser.class_filter.findData("red"))
    assert model.rowCount() == 8
    assert {model.index(r).data(ClassRole) for r in range(model.rowCount())} == {"red"}
    browser.split_filter.setCurrentIndex(browser.split_filter.findData("val"))
    assert model.rowCount() == 2
    assert {model.index(r).data(SplitRole) for r in range(2)} == {"val"}
    assert browser.count.text() == "2 of 24 pictures"
    browser.clear_filters()
    assert model.rowCount() == 24


def test_search_by_file_name(qtbot, window, tiny_dataset):
    open_and_wait(qtbot, window, tiny_dataset)
    browser = window.data_page.browser
    qtbot.keyClicks(browser.search, "GREEN_0")
    qtbot.waitUntil(lambda: browser.model.rowCount() == 8)  # green_00 ... green_07, whatever the case
    names = {browser.model.index(r).data() for r in range(8)}
    assert names == {f"green_{i:02d}.png" for i in range(8)}
    browser.search.setText("nothing-like-this")
    qtbot.waitUntil(lambda: browser.model.rowCount() == 0)
    assert browser.stack.currentWidget() is browser.empty  # "No pictures match these filters."


def test_health_panel_lists_unreadable_files_few_images_and_imbalance_with_advice(qtbot, window, tmp_path):
    folder = make_class_folders(tmp_path / "uneven", per_class=30, classes=("red", "green"))
    make_class_folders(tmp_path / "small", per_class=4, classes=("blue",))
    shutil.copytree(tmp_path / "small" / "blue", folder / "blue")
    (folder / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "green" / "empty.png").write_bytes(b"")

    open_and_wait(qtbot, window, folder)
    health = window.data_page.health
    kinds = {kind for kind, _ in health.items}
    assert {"few-images", "imbalance", "unreadable"} <= kinds
    messages = " ".join(message for _, message in health.items)
    assert "Class 'blue' has only 3 training pictures: add more" in messages
    assert "Add pictures to the small classes" in messages
    rows = {health.files.topLevelItem(i).text(0): health.files.topLevelItem(i).text(1)
            for i in range(health.files.topLevelItemCount())}
    assert rows == {"green/empty.png": "The file is empty.",
                    "red/broken.jpg": rows["red/broken.jpg"]}
    assert "damaged" in rows["red/broken.jpg"] or "not a picture" in rows["red/broken.jpg"]
    assert health.files.isVisibleTo(window) and "Left out (2 files)" in health.files_title.text()
    assert "to look at before training" in health.summary.text()
    state, reason = window.steps.state("data")
    assert state is StepState.ATTENTION and "see Health" in reason


def test_changing_the_split_re_splits_without_scanning_again(qtbot, window, tiny_dataset):
    open_and_wait(qtbot, window, tiny_dataset)
    page = window.data_page
    started = []
    page.scanner.started.connect(started.append)
    page.split.val.setValue(50)
    index = window.project.dataset
    assert index.counts()["val"] == {"blue": 4, "green": 4, "red": 4}
    assert window.project.config.data.val_fraction == 0.5
    assert window.project.is_dirty and window.isWindowModified()
    page.split.test.setValue(25)
    assert index is not window.project.dataset
    assert window.project.dataset.counts()["test"] == {"blue": 2, "green": 2, "red": 2}
    assert "test" in page.chart.bars
    assert started == []  # nothing was scanned (or decoded) again


@pytest.mark.parametrize("layout", ["class-folders", "split-folders", "csv"])
def test_a_re_split_is_exactly_what_a_new_scan_gives(tmp_path, layout):
    root = make_class_folders(tmp_path / "d", per_class=12)
    if layout == "split-folders":
        (root / "train").mkdir()
        for name in ("red", "green", "blue"):
            shutil.move(str(root / name), str(root / "train" / name))
        make_class_folders(root / "test", per_class=3)
    elif layout == "csv":
        pictures = sorted(root.rglob("*.png"))
        lines = ["path,label"] + [f"{p.relative_to(root).as_posix()},{p.parent.name}" for p in pictures]
        (root / "labels.csv").write_text("\n".join(lines) + "\n")
        root = root / "labels.csv"
    first = scan(root, val_fraction=0.2, seed=0)
    for split in ("auto", "random"):
        again = resplit(first, 0.4, 0.2, 5, split)
        fresh = scan(root, val_fraction=0.4, test_fraction=0.2, seed=5, split=split)
        assert again.samples == fresh.samples and again.split_source == fresh.split_source
        assert [a.kind for a in again.health.advice] == [a.kind for a in fresh.health.advice]


def click_radio(qtbot, button) -> None:
    """Click a radio button on its indicator (its centre may lie beyond its label in a wide layout)."""
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton, pos=QPoint(8, button.height() // 2))


def test_folders_with_their_own_split_keep_it(qtbot, window, tmp_path):
    root = tmp_path / "given"
    make_class_folders(root / "train", per_class=6)
    make_class_folders(root / "val", per_class=2)
    open_and_wait(qtbot, window, root)
    split = window.data_page.split
    assert split.use_folders.isChecked() and split.use_random.isEnabled()
    assert not split.random_box.isEnabled()
    assert "train and val folders" in split.note.text()
    assert window.project.dataset.counts()["val"] == {"blue": 2, "green": 2, "red": 2}

    # Split at random instead: all 24 pictures pooled, a quarter of each class drawn for validation.
    click_radio(qtbot, split.use_random)
    assert split.random_box.isEnabled()
    split.val.setValue(25)
    assert window.project.config.data.split == "random" and window.project.config.data.val_fraction == 0.25
    index = window.project.dataset
    assert index.split_source == "random"
    assert index.counts()["val"] == {"blue": 2, "green": 2, "red": 2}  # 25 % of 8 per class, drawn from both folders
    drawn = {Path(s.path).parent.parent.name for s in index.samples if s.split == "val"}
    assert index.samples == scan(root, val_fraction=0.25, split="random").samples  # what training will use
    assert drawn <= {"train", "val"} and "pooled" in split.note.text()

    # And back to the folders' own split.
    click_radio(qtbot, split.use_folders)
    assert window.project.config.data.split == "auto" and window.project.dataset.split_source == "folders"
    assert {Path(s.path).parent.parent.name for s in window.project.dataset.samples if s.split == "val"} == {"val"}


def test_double_click_shows_a_larger_preview_with_the_file_facts(qtbot, window, tiny_dataset):
    open_and_wait(qtbot, window, tiny_dataset)
    grid = window.data_page.browser.grid
    rect = grid.visualRect(grid.model().index(0, 0))
    # A double-click is a press and release followed by a double-click event (QTest sends only the last one).
    qtbot.mouseClick(grid.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.mouseDClick(grid.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    preview = window.data_page.browser.preview
    assert preview is not None and preview.isVisible()
    qtbot.waitUntil(lambda: preview.fields["dimensions"].text() != "...")
    assert preview.fields["name"].text() == grid.model().index(0, 0).data()  # the picture clicked
    assert preview.fields["dimensions"].text() == "40 x 32 pixels"
    assert preview.fields["mode"].text() == "RGB colour (RGB)"
    assert preview.fields["format"].text() == "PNG"
    assert preview.fields["size"].text().endswith("bytes")
    assert preview.fields["path"].text() == str(tiny_dataset / "blue" / grid.model().index(0, 0).data())
    assert preview.fields["class"].text() == "blue"


def test_the_grid_decodes_only_the_pictures_on_screen(qtbot, window, tmp_path):
    folder = make_class_folders(tmp_path / "many", per_class=200, size=(24, 24))
    open_and_wait(qtbot, window, folder)
    browser = window.data_page.browser
    grid, loader = browser.grid, browser.loader
    qtbot.waitUntil(lambda: bool(grid.visible_rows())
                    and all(browser.model.has_thumbnail(r) for r in grid.visible_rows()), timeout=10_000)
    qtbot.waitUntil(loader.is_idle)
    visible = grid.visible_rows()
    assert 0 < len(visible) < 100
    assert loader.decodes <= len(visible) + 8  # what is on screen (and a partly painted row), not 600
    assert browser.model.rowCount() == 600

    # Scrolling to the end decodes the pictures shown there, and the cache stays within its bounds.
    browser.model.cache.capacity = 40
    before = loader.decodes
    grid.scrollToBottom()
    qtbot.waitUntil(lambda: all(browser.model.has_thumbnail(r) for r in grid.visible_rows()), timeout=10_000)
    qtbot.waitUntil(loader.is_idle)
    assert loader.decodes - before <= len(grid.visible_rows()) + 8
    assert len(browser.model.cache) <= 40


def _blocking_prepare(release: threading.Event):
    """A scan that waits until it is stopped (or released), so that a test can cancel it reliably."""

    def prepare(on_progress, stop):
        on_progress(0, 0)
        while not stop.wait(0.01):
            if release.is_set():
                break
        if stop.is_set():
            raise UserError("The scan was cancelled.")
        raise AssertionError("not reached in these tests")

    return prepare


def test_a_scan_can_be_cancelled_and_the_window_stays_usable(qtbot, window, tiny_dataset):
    open_and_wait(qtbot, window, tiny_dataset)
    page = window.data_page
    release = threading.Event()
    page.start_scan(_blocking_prepare(release))
    assert page.scan_bar.isVisible() and page.scanning
    qtbot.mouseClick(page.scan_bar.cancel, Qt.MouseButton.LeftButton)
    assert not page.scanning and not page.scan_bar.isVisible()
    qtbot.waitUntil(page.scanner.jobs.idle)  # the scan's job ended
    assert "cancelled" in window.statusBar().currentMessage().lower()
    release.set()


def test_closing_the_window_during_a_scan_stops_it_cleanly(qtbot, tmp_path, tiny_dataset):
    w = MainWindow(settings=file_settings(tmp_path / "s.ini"), data_dir=tmp_path / "data")
    w.show()
    w.open_folder(tiny_dataset)
    release = threading.Event()
    w.data_page.start_scan(_blocking_prepare(release))
    scan = w.data_page.scanner.jobs.current("scan")
    assert scan is not None and not scan.ended.is_set()
    assert w.close()
    assert scan.ended.is_set()
    assert w.data_page.scanner.jobs.idle() and w.data_page.scanner.jobs.closed
    release.set()


def test_a_folder_that_cannot_be_used_says_what_to_do(qtbot, window, tmp_path):
    folder = tmp_path / "flat"
    make_class_folders(folder, per_class=3, classes=("red",))
    window.open_folder(folder)
    qtbot.waitUntil(lambda: not window.data_page.scanning and bool(window.data_page.error), timeout=20_000)
    page = window.data_page
    assert "Only one class ('red')" in page.error
    assert page.body.currentWidget() is page.empty and "Only one class" in page.message.text()
    assert page.message_button.isVisible()
    assert window.steps.state("data")[0] is StepState.ATTENTION
