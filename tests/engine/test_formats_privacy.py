"""Acceptance: DICOMs that carry a patient's name, ID, birth date and institution train, evaluate, predict and export
(ONNX included), and no output file -- run folder, dataset.json, evaluation, exports, model card, prediction CSV,
heat maps, the picture cache -- contains any of those values. Slides in the same data are predicted once per slide,
with a heat map of their tiles, and the model's data settings travel with it into an exported bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from engine.data import formats
from engine.data.formats import FormatSettings
from lab_pictures import PATIENT, ramp, write_dicom, write_slide

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory):
    from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from engine.train.trainer import fit

    root = tmp_path_factory.mktemp("patients") / "xrays"
    for k, name in enumerate(("clear", "shadow")):
        for i in range(6):
            pixels = ramp(top=3000 + 200 * i)
            if k:
                pixels[10:30, 20:40] = 4000  # the 'shadow'
            write_dicom(root / name / f"study{i}.dcm", pixels, RescaleSlope=1, RescaleIntercept=-1024,
                        WindowCenter=1500, WindowWidth=3000, photometric="MONOCHROME1" if i % 2 else "MONOCHROME2",
                        **PATIENT)
        write_slide(root / name / "slide.tiff", width=1024, height=768, tissue=((128, 128, 900, 640),),
                    colour=(170, 70, 150) if k else (90, 60, 170), seed=k)
    out = tmp_path_factory.mktemp("lab-runs")
    config = RunConfig(data=DataConfig(source=str(root), val_fraction=0.34, slide_tile=128, slide_tissue=0.5),
                       model=ModelConfig("timm:test_resnet", "none"), strategy="fine-tune-deep", epochs=1, lr=0.01,
                       train=TrainConfig(batch_size=8, workers=0, warmup_epochs=0.0, augment="light"),
                       out=str(out))
    formats.activate(FormatSettings())
    result = fit(config)
    assert result.status == "completed", result.error
    yield Path(result.run_dir), root, out
    formats.activate(FormatSettings())


def test_nothing_identifying_leaves_the_dicoms(lab_run, tmp_path):
    from engine.results.evaluate import evaluate_run
    from engine.results.export import export_run
    from engine.results.predict import load_run_model, predict_paths, write_csv

    run, root, out = lab_run
    evaluate_run(run, device="cpu")
    evaluate_run(run, data=root, device="cpu")
    rows = predict_paths(load_run_model(run, "cpu"), [root])
    write_csv(rows, tmp_path / "predictions.csv")
    for fmt in ("bundle", "onnx"):
        export_run(run, fmt)
    heat = tmp_path / "heat"
    done = subprocess.run([sys.executable, str(REPO / "main.py"), "predict", str(run), str(root), "--heatmaps",
                           str(heat), "--csv", str(tmp_path / "cli.csv"), "--device", "cpu"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    searched = [run, out, tmp_path, Path(os.environ["TRANSFER_STUDIO_CACHE"])]
    texts = [v.encode() for v in PATIENT.values()] + [b"Zebulon", b"Quixotic", b"Wobbleton"]
    looked = 0
    for folder in searched:
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                looked += 1
                for text in texts:
                    assert text not in data, f"{text!r} found in {path}"
    assert looked > 20 and (run / "dataset.json").is_file() and (run / "export" / "model.onnx").is_file()
    # the pictures do come from the DICOMs (the test is not vacuous): the data says DICOM, the card the settings
    dataset = json.loads((run / "dataset.json").read_text())
    assert dataset["formats"]["files"]["DICOM"] == 12
    card = (run / "export" / "MODEL_CARD.md").read_text() if (run / "export" / "MODEL_CARD.md").exists() else ""
    card = card or "".join(p.read_text() for p in (run / "export").glob("*.md"))
    assert "channels setting `rgb`" in card


def test_slides_get_one_answer_and_a_heat_map(lab_run):
    from engine.results.predict import load_run_model, predict_paths
    from engine.results.slide_maps import slide_heat_map

    run, root, _ = lab_run
    bundle = load_run_model(run, "cpu")
    assert bundle.data_config["formats"]["tile"] == 128
    formats.activate(FormatSettings())  # another dataset's settings in the window: the model keeps its own
    rows = predict_paths(bundle, [root / "shadow" / "slide.tiff", root / "clear" / "study0.dcm"])
    assert [Path(r.path).name for r in rows] == ["slide.tiff", "study0.dcm"]
    assert rows[0].error is None and abs(sum(p for _, p in rows[0].top) - 1) < 1e-4
    heat = slide_heat_map(bundle, root / "shadow" / "slide.tiff")
    assert heat.scores.shape == (6, 8) and np.isnan(heat.scores[0, 0]) and np.isfinite(heat.scores[2, 2])
    assert heat.class_name == rows[0].class_name and abs(heat.probability - rows[0].confidence) < 1e-5
    assert heat.picture().size == (8 * 16, 6 * 16)


def test_an_exported_bundle_reads_pictures_as_the_run_did(lab_run):
    from engine.results.export import export_run
    from engine.results.predict import load_run_model, predict_paths

    run, root, _ = lab_run
    export_run(run, "bundle")
    pictures = [root / "shadow" / "study1.dcm", root / "clear" / "slide.tiff"]
    from_run = predict_paths(load_run_model(run, "cpu"), pictures)
    formats.activate(FormatSettings(window="auto", tile=512))
    bundle = load_run_model(run / "export", "cpu")
    assert predict_paths(bundle, pictures) == from_run
