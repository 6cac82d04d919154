"""Prediction: a run's model loads by itself, pictures and folders are predicted in order, unreadable pictures give a
row with a sentence, the CSV holds what the user saw, and heat maps come at the picture's size."""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import UserError
from engine.data.images import load_rgb
from engine.results.predict import Stopped, expand_paths, heat_map, load_run_model, predict_paths, write_csv


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tiny_run_data):
    return tiny_run_data


@pytest.fixture(scope="module")
def run_dir(tiny_run) -> Path:
    """A copy of the session's tiny trained run (see conftest)."""
    return tiny_run


@pytest.fixture(scope="module")
def bundle(run_dir):
    return load_run_model(run_dir, device="cpu")


def test_the_run_model_loads_with_its_classes_and_preprocessing(bundle, run_dir):
    assert bundle.classes == ("blue", "green", "red")
    assert bundle.architecture == "timm:test_resnet" and bundle.kind == "run"
    assert not bundle.model.training
    assert bundle.data_config == {**json.loads((run_dir / "model.json").read_text())["data_config"],
                                  "input_size": (3, 160, 160), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    # Its weights are the run's best epoch, bit for bit.
    from safetensors.torch import load_file

    saved = load_file(run_dir / "best.safetensors")
    assert all(torch.equal(v, saved[k]) for k, v in bundle.model.state_dict().items())


def test_pictures_and_folders_are_predicted_in_order(bundle, data, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    empty = tmp_path / "empty"
    empty.mkdir()
    single = data / "red" / "red_03.png"
    rows = predict_paths(bundle, [single, data / "green", broken, tmp_path / "missing.png", empty], top_k=2)
    greens = sorted(str(p) for p in (data / "green").glob("*.png"))
    assert [r.path for r in rows] == [str(single), *greens, str(broken), str(tmp_path / "missing.png"), str(empty)]
    good, bad = rows[:9], rows[9:]
    assert [r.error for r in bad] == [
        "The file is not a picture (it could not be recognised as a JPEG, PNG, BMP, GIF, TIFF or WebP image).",
        "The file does not exist.",
        "The folder holds no pictures (JPEG, PNG, BMP, GIF, TIFF or WebP).",
    ]
    assert all(r.class_name is None and r.confidence is None and r.top == () for r in bad)
    # Each prediction is what the model says for that picture alone.
    for r in good:
        assert r.error is None and len(r.top) == 2
        with torch.no_grad():
            probs = bundle.model(bundle.preprocess(r.path)[None]).softmax(1)[0].numpy()
        assert r.class_index == int(probs.argmax()) and r.class_name == bundle.classes[r.class_index]
        assert r.confidence == pytest.approx(float(probs.max()), abs=1e-5)
        assert r.top[0] == (r.class_name, r.confidence) and r.top[0][1] >= r.top[1][1]


def test_top_k_is_at_most_the_number_of_classes(bundle, data):
    (row,) = predict_paths(bundle, [data / "blue" / "blue_00.png"], top_k=10)
    assert [c for c, _ in row.top] and sorted(c for c, _ in row.top) == ["blue", "green", "red"]
    assert sum(p for _, p in row.top) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(UserError, match="at least 1"):
        predict_paths(bundle, [data], top_k=0)


def test_hidden_files_and_other_files_in_a_folder_are_skipped(tmp_path, data):
    folder = tmp_path / "mixed"
    (folder / ".thumbs").mkdir(parents=True)
    (folder / ".thumbs" / "a.png").write_bytes((data / "red" / "red_00.png").read_bytes())
    (folder / "notes.txt").write_text("not a picture")
    (folder / "sub").mkdir()
    (folder / "sub" / "b.png").write_bytes((data / "red" / "red_01.png").read_bytes())
    assert expand_paths([folder]) == [(str(folder / "sub" / "b.png"), None)]


def test_the_csv_holds_the_predictions(bundle, data, tmp_path):
    missing = tmp_path / "missing.png"
    rows = predict_paths(bundle, [data / "blue", missing], top_k=3)
    out = write_csv(rows, tmp_path / "predictions.csv")
    with open(out, newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["path", "prediction", "confidence", "top2", "top2_confidence", "top3",
                              "top3_confidence", "error"]
    assert len(table) == 9
    for row, prediction in zip(table, rows):
        assert row["path"] == prediction.path
        if prediction.error is None:
            assert row["prediction"] == prediction.class_name and row["error"] == ""
            assert float(row["confidence"]) == pytest.approx(prediction.confidence, abs=1e-6)
            assert row["top3"] == prediction.top[2][0]
    assert table[-1]["error"] == "The file does not exist." and table[-1]["prediction"] == ""
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]  # no temporary file left behind
    with pytest.raises(UserError, match="does not exist"):
        write_csv(rows, tmp_path / "no" / "such" / "folder.csv")


def test_a_heat_map_comes_at_the_picture_size(bundle, data):
    path = data / "red" / "red_05.png"
    result = heat_map(bundle, path)
    (row,) = predict_paths(bundle, [path])
    assert result.class_name == row.class_name and result.probability == pytest.approx(row.confidence, abs=1e-5)
    assert result.cam.shape == (32, 40) and result.cam.dtype == np.float32  # the pictures are 40 x 32
    other = heat_map(bundle, load_rgb(path), target_class=(row.class_index + 1) % 3)
    assert other.class_index == (row.class_index + 1) % 3


def test_stopping_ends_prediction(bundle, data):
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        predict_paths(bundle, [data], stop=stop)


def test_folders_that_hold_no_model_get_a_sentence(tmp_path, run_dir):
    with pytest.raises(UserError, match="it has no model.json"):
        load_run_model(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        load_run_model(tmp_path / "nothing")
    broken = tmp_path / "run"
    broken.mkdir()
    for name in ("model.json", "labels.json"):
        (broken / name).write_bytes((run_dir / name).read_bytes())
    with pytest.raises(UserError, match="no saved weights"):
        load_run_model(broken)
    (broken / "best.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="damaged"):
        load_run_model(broken)
