"""The Review view of the Data step, as a user walks it: look for mistakes, see each finding with its pictures,
decide (keep, exclude, relabel) and see the dataset follow, apply the decisions to the folders and undo that."""

from __future__ import annotations

import shutil

import pytest

from tests.engine.test_doctor import MODEL, _feature_cache, planted  # noqa: F401  (the planted pictures)
from tests.gui.test_dataset_browser import open_and_wait, window  # noqa: F401  (the same main-window fixture)


@pytest.fixture
def reviewed(qtbot, window, planted, tmp_path):  # noqa: F811
    root = tmp_path / "pictures"
    shutil.copytree(planted["root"], root)
    open_and_wait(qtbot, window, root)
    window.project.update_model(name=MODEL, weights="none")
    page = window.data_page
    assert page.review_button.isEnabled()
    page.review_button.click()
    review = page.review
    assert page.body.currentWidget() is review
    review.run_button.click()
    qtbot.waitUntil(lambda: review.report is not None, timeout=120_000)
    assert window.errors == []
    return window, review, root


def _select(review, predicate):
    for i in range(review.list.topLevelItemCount()):
        item = review.list.topLevelItem(i)
        what, finding = review.findings()[item.data(0, 0x0100)]
        if predicate(what, finding):
            review.list.setCurrentItem(item)
            return finding
    raise AssertionError("no such finding in the list")


def test_every_kind_of_finding_is_listed_with_its_pictures(reviewed):
    window, review, root = reviewed
    kinds = {review.list.topLevelItem(i).text(0) for i in range(review.list.topLevelItemCount())}
    assert kinds == {"Wrong label?", "Copies", "Suspicious"}
    assert "has a copy in training" in review.summary.text()

    issue = _select(review, lambda what, x: what == "label" and x.path.endswith("really-red.png"))
    assert "labelled <b>blue</b> but looks like <b>red</b>" in review.title.text()
    assert review.relabel_to.currentText() == "red"
    captions = [t.caption.text() for t in review.tiles]
    assert captions[0].startswith("this picture") and any(c.startswith("blue") for c in captions) \
        and any(c.startswith("red") for c in captions)
    assert review.tiles[0].path == issue.path

    copies = _select(review, lambda what, x: what == "duplicate" and x.leakage)
    assert [t.path for t in review.tiles] == copies.paths  # side by side
    assert "overstated" in review.title.text()

    _select(review, lambda what, x: what == "suspicious" and x.kind == "tiny")
    assert "Tiny" in review.title.text()
    review.filter.setCurrentIndex(review.filter.findData("suspicious"))
    assert {review.list.topLevelItem(i).text(0) for i in range(review.list.topLevelItemCount())} == {"Suspicious"}


def test_decisions_become_overrides_that_the_dataset_follows(qtbot, reviewed):
    window, review, root = reviewed
    wrong = _select(review, lambda what, x: what == "label" and x.path.endswith("really-red.png"))
    review.relabel.click()
    assert window.project.config.data.relabel == {"train/blue/really-red.png": "red"}
    dataset = window.project.dataset
    sample = next(s for s in dataset.samples if s.path == wrong.path)
    assert dataset.classes[sample.label] == "red"
    assert any(a.kind == "overrides" for a in dataset.health.advice)  # the health report says so
    assert (root / "train" / "blue" / "really-red.png").exists()  # no file moved

    copies = _select(review, lambda what, x: what == "duplicate" and x.leakage)
    training_copy = next(p for p, s in zip(copies.paths, copies.splits) if s == "train")
    review.exclude.click()
    assert window.project.config.data.exclude == ("train/red/copy-of-val.jpg",)
    assert training_copy not in {s.path for s in window.project.dataset.samples}
    assert window.project.is_dirty  # the decisions are saved with the project

    _select(review, lambda what, x: what == "duplicate" and x.leakage)
    review.keep.click()  # changing one's mind
    assert window.project.config.data.exclude == ()
    assert training_copy in {s.path for s in window.project.dataset.samples}


def test_apply_to_folders_and_undo(qtbot, reviewed):
    window, review, root = reviewed
    _select(review, lambda what, x: what == "label" and x.path.endswith("really-red.png"))
    review.relabel.click()
    _select(review, lambda what, x: what == "suspicious" and x.kind == "tiny")
    review.exclude.click()
    assert review.apply_button.isEnabled() and not review.undo_button.isEnabled()
    review.apply_to_folders(confirm=False)
    qtbot.waitUntil(lambda: not window.project.config.data.relabel and not window.data_page.scanning
                    and window.project.dataset is not None, timeout=30_000)
    assert (root / "train" / "red" / "really-red.png").is_file()
    assert (root / ".excluded-by-review" / "train" / "red" / "pixel.png").is_file()
    assert window.project.config.data.exclude == ()
    qtbot.waitUntil(lambda: window.project.dataset is not None and any(
        s.path == str(root / "train" / "red" / "really-red.png") for s in window.project.dataset.samples),
        timeout=30_000)
    assert review.undo_button.isEnabled()
    review.undo_button.click()
    qtbot.waitUntil(lambda: "Moved 2 files back" in review.summary.text(), timeout=30_000)
    assert (root / "train" / "blue" / "really-red.png").is_file()
    assert (root / "train" / "red" / "pixel.png").is_file()
    assert window.errors == []
