"""The Data step's health report says when the pictures are far smaller than the project's model's input (issue #23
item 7: 32x32 pictures into a 224x224 model), with what to do, and follows the model the user picks."""

from __future__ import annotations

from PIL import Image

from tests.gui.test_dataset_browser import open_and_wait, window  # noqa: F401  (the same main-window fixture)


def _folder(root, size, per_class=20):
    for c, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", size, tuple(min(255, v + 3 * i) for v in colour)).save(root / c / f"{c}_{i:02d}.png")
    return root


def _small_rows(health):
    rows = [health.advice_layout.itemAt(i).widget() for i in range(health.advice_layout.count())]
    return [r for r in rows if r is not None and r.kind == "small-pictures"]


def test_tiny_pictures_are_reported_with_what_to_do(qtbot, window, tmp_path):
    open_and_wait(qtbot, window, _folder(tmp_path / "thumbs", (32, 32)))
    health = window.data_page.health
    assert window.project.config.model.name == "timm:resnet18"  # the project's model: a 224x224 input
    rows = _small_rows(health)
    assert len(rows) == 1 and rows[0].isVisibleTo(window)
    message = rows[0].message
    assert "32x32" in message and "224x224" in message and "7 times" in message
    assert "smaller inputs" in message and "lower accuracy" in message  # what to do about it
    assert "No problems found" not in health.summary.text()  # it counts as something to look at before training
    assert "to look at before training" in health.summary.text()


def test_the_advice_follows_the_chosen_model(qtbot, window, tmp_path):
    open_and_wait(qtbot, window, _folder(tmp_path / "mid", (96, 96)))
    health = window.data_page.health
    assert _small_rows(health) == []  # 96 pixels into 224: enlarged 2.3 times, fine
    assert "No problems found" in health.summary.text()
    window.project.update_model(name="timm:vit_base_patch16_384")  # the Model step's choice: a 384x384 input
    rows = _small_rows(health)
    assert len(rows) == 1 and "384x384" in rows[0].message
    window.project.update_model(name="timm:resnet18")
    assert _small_rows(health) == [] and "No problems found" in health.summary.text()
