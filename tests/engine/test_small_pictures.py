"""Pictures far smaller than the model's input (issue #23 item 7): 32x32 pictures into a 224x224 model are enlarged
7 times, and the health advice says so with what to do; pictures near the input size get no such advice."""

from __future__ import annotations

import pytest
from PIL import Image

from engine import events as ev
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.data.scan import small_pictures_advice
from engine.train.trainer import fit


def pictures(folder, size, n=12):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"p{i}.png"
        Image.new("RGB", size, (10 * i, 80, 120)).save(path)
        paths.append(str(path))
    return paths


def test_tiny_pictures_into_a_large_input_are_advised_against(tmp_path):
    advice = small_pictures_advice(pictures(tmp_path / "small", (32, 32)), 224)
    assert advice is not None and advice.kind == "small-pictures"
    assert "32x32" in advice.message and "7 times" in advice.message and "224x224" in advice.message
    assert "smaller inputs" in advice.message and "lower accuracy" in advice.message


@pytest.mark.parametrize("size", [(224, 224), (320, 240), (100, 180)])
def test_pictures_near_the_input_size_get_no_advice(tmp_path, size):
    assert small_pictures_advice(pictures(tmp_path / "ok", size), 224) is None


def test_the_typical_picture_decides_and_unreadable_files_are_skipped(tmp_path):
    paths = pictures(tmp_path / "a", (32, 32), 3) + pictures(tmp_path / "b", (300, 300), 7)
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    assert small_pictures_advice(paths + [str(tmp_path / "broken.png")], 224) is None
    assert small_pictures_advice([str(tmp_path / "broken.png")], 224) is None


@pytest.mark.usefixtures("quick_training")
def test_training_says_it_in_its_log(tiny_dataset, tmp_path):
    events = []
    config = RunConfig(data=DataConfig(source=str(tiny_dataset), val_fraction=0.25),
                       model=ModelConfig("timm:test_resnet", "none"), strategy="feature-extraction", epochs=1,
                       out=str(tmp_path), train=TrainConfig(batch_size=8, workers=0))
    result = fit(config, events.append)
    assert result.status == "completed", result.error
    warnings = [e.message for e in events if isinstance(e, ev.Log) and e.level == "warning"]
    assert any("far smaller than the model's input" in m and "40x32" in m for m in warnings), warnings
