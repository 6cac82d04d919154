"""The Data step with a folder full of bad pictures: the health report lists every one with the sentence saying why it
was left out, the odd but usable pictures show in the grid, and nothing crashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bad_pictures import good_classes, make_bad_pictures, unreadable
from engine.data.scan import scan
from gui.sidebar import StepState
from tests.gui.test_dataset_browser import window  # noqa: F401  (the same main-window fixture)




def test_the_data_step_lists_every_bad_picture_with_its_reason(qtbot, window, tmp_path):
    root = good_classes(tmp_path / "pets")
    try:
        bad, odd = make_bad_pictures(root / "cats")
    except OSError:
        pytest.skip("symbolic links are not available here")
    with unreadable(root / "cats"):  # chmod 000, or (as root) a refused open
        expected = {f"cats/{Path(p.path).name}": p.reason for p in scan(root).health.unreadable}
        window.open_folder(root)
        qtbot.waitUntil(lambda: window.project.dataset is not None and not window.data_page.scanning,
                        timeout=30_000)
    assert window.errors == []
    health = window.data_page.health
    rows = {health.files.topLevelItem(i).text(0): health.files.topLevelItem(i).text(1)
            for i in range(health.files.topLevelItemCount())}
    assert set(rows) == {f"cats/{name}" for _, name in bad}
    assert rows == expected  # the very sentences of the engine's health report
    assert rows["cats/empty.jpg"] == "The file is empty."
    assert rows["cats/locked.jpg"] == "The file cannot be read (permission denied)."
    assert "too large" in rows["cats/bomb.png"] and "link" in rows["cats/moved.jpg"]
    for i in range(health.files.topLevelItemCount()):  # the whole sentence on hover, however narrow the column
        item = health.files.topLevelItem(i)
        assert item.toolTip(1) == item.text(1) and item.toolTip(0).endswith(item.text(0))
    assert health.files.isVisibleTo(window) and f"Left out ({len(bad)} files)" in health.files_title.text()
    messages = [message for kind, message in health.items if kind == "unreadable"]
    assert messages == [f"{len(bad)} files could not be used and were left out: fix or remove them (the list says "
                        "what is wrong with each)."]
    state, reason = window.steps.state("data")
    assert state is StepState.ATTENTION and "see Health" in reason

    # The odd pictures (CMYK, 16-bit, 1 x 1, animated, non-ASCII name, ...) are in the grid, ready to train.
    model = window.data_page.browser.model
    shown = {model.index(r).data() for r in range(model.rowCount())}
    assert {name for _, name in odd} <= shown
    assert model.rowCount() == 24 + len(odd)
