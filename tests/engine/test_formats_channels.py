"""Every channel into the model (channels = "all"): 4-channel fluorescence TIFFs train a model whose first convolution
takes 4 channels (timm's adapt_input_conv on the pretrained filters), and evaluation, prediction and the ONNX export
(an N-channel input) honour it; pictures with another number of channels are left out with a sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from engine.data import formats
from engine.data.formats import FormatSettings
from lab_pictures import cells, write_tiff

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def four_channel_folder(root: Path) -> Path:
    for k, name in enumerate(("healthy", "infected")):
        for i in range(6):
            write_tiff(root / name / f"well{i}.tif", cells(i + 20 * k, bool(k), size=64, channels=4))
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from engine.train.trainer import fit

    root = four_channel_folder(tmp_path_factory.mktemp("wells") / "wells")
    Image.new("RGB", (64, 64), (10, 20, 30)).save(root / "healthy" / "photo.png")  # 3 channels: left out
    config = RunConfig(data=DataConfig(source=str(root), val_fraction=0.34, channels="all"),
                       model=ModelConfig("timm:test_resnet", "none"), strategy="fine-tune-deep", epochs=1, lr=0.01,
                       train=TrainConfig(batch_size=4, workers=0, warmup_epochs=0.0, augment="light"),
                       out=str(tmp_path_factory.mktemp("runs")))
    formats.activate(FormatSettings())
    result = fit(config)
    assert result.status == "completed", result.error
    yield Path(result.run_dir), root
    formats.activate(FormatSettings())


def test_the_model_takes_four_channels(run):
    run_dir, root = run
    info = json.loads((run_dir / "model.json").read_text())
    assert info["data_config"]["input_size"][0] == 4 and len(info["data_config"]["mean"]) == 4
    dataset = json.loads((run_dir / "dataset.json").read_text())
    assert dataset["formats"]["channels"] == 4
    left_out = {Path(p["path"]).name: p["reason"] for p in dataset["health"]["unreadable"]}
    assert left_out == {"photo.png": "The picture has 3 channels, but most pictures have 4: with every channel going "
                                     "into the model (channels = all), all pictures need the same channels."}
    from engine.results.predict import load_run_model

    bundle = load_run_model(run_dir, "cpu")
    first = next(m for m in bundle.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 4
    assert bundle.preprocess(root / "infected" / "well0.tif").shape == (4, *info["data_config"]["input_size"][1:])


def test_every_channel_is_read_as_an_array(run):
    from engine.data.loaders import load_picture

    run_dir, root = run
    settings = FormatSettings(channels="all")
    pixels = load_picture(root / "infected" / "well0.tif", settings=settings)
    assert pixels.shape == (64, 64, 4) and pixels[..., 3].max() > 0
    formats.activate(FormatSettings())


def test_evaluate_predict_and_onnx_honour_the_channels(run):
    import onnxruntime as ort

    from engine.results.evaluate import evaluate_run
    from engine.results.export import export_run
    from engine.results.predict import load_run_model, predict_paths

    run_dir, root = run
    evaluation = evaluate_run(run_dir, device="cpu")
    assert evaluation is not None
    rows = predict_paths(load_run_model(run_dir, "cpu"), [root])
    assert len([r for r in rows if r.error is None]) == 12
    assert [r.error for r in rows if r.error] == ["The picture has 3 channels; the model takes 4 (it was trained on "
                                                  "every channel of its pictures)."]
    export_run(run_dir, "onnx")
    session = ort.InferenceSession(str(run_dir / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1] == 4
    card = "".join(p.read_text() for p in (run_dir / "export").glob("*.md"))
    assert "channels setting `all`" in card
