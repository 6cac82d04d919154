"""Export: the bundle round-trips to identical predictions, ONNX matches PyTorch through onnxruntime (any batch size),
TorchScript matches too, the model card tells the data, metrics, weights and limits, and the README's loading code
works on a real bundle."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from engine.errors import UserError
from engine.results.evaluate import evaluate_run
from engine.results.export import CARD, export_run, model_card
from engine.results.predict import load_run_model, predict_paths


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tiny_run_data):
    return tiny_run_data


@pytest.fixture(scope="module")
def run_dir(tiny_run) -> Path:
    """A copy of the session's tiny trained run (see conftest)."""
    evaluate_run(tiny_run, device="cpu")  # so that the model card has per-class metrics
    return tiny_run


@pytest.fixture(scope="module")
def exports(run_dir):
    """All three formats, exported into the run's default export folder."""
    return {fmt: export_run(run_dir, fmt) for fmt in ("bundle", "onnx", "torchscript")}


@pytest.fixture(scope="module")
def pictures(data):
    return sorted(str(p) for p in data.rglob("*.png"))[::4]  # 6 pictures, from every class


def test_the_bundle_round_trips_to_identical_predictions(exports, run_dir, pictures):
    result = exports["bundle"]
    out = run_dir / "export"
    assert result.path == str(out / "model.safetensors") and result.out_dir == str(out)
    assert result.pictures == 6 and result.max_abs_diff_logits == 0.0 and result.max_abs_diff_probs == 0.0
    from_run = predict_paths(load_run_model(run_dir, "cpu"), pictures)
    loaded = load_run_model(out, "cpu")
    assert loaded.kind == "bundle" and loaded.classes == ("blue", "green", "red")
    assert predict_paths(loaded, pictures) == from_run  # identical: classes, confidences, top-3


def test_onnx_output_matches_pytorch_through_onnxruntime(exports, run_dir, pictures):
    import onnxruntime

    result = exports["onnx"]
    assert result.path.endswith("model.onnx") and result.pictures == 6
    assert result.max_abs_diff_probs < 1e-5 and result.max_abs_diff_logits < 1e-4
    session = onnxruntime.InferenceSession(result.path, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "input" and isinstance(inp.shape[0], str)  # a dynamic batch dimension
    bundle = load_run_model(run_dir, "cpu")
    for batch in (pictures[:1], pictures[:3], pictures):  # batch sizes other than the exported example's
        x = torch.stack([bundle.preprocess(p) for p in batch])
        (logits,) = session.run(["logits"], {"input": x.numpy()})
        with torch.no_grad():
            reference = bundle.model(x).numpy()
        assert logits.shape == reference.shape
        assert np.abs(logits - reference).max() < 1e-4
        assert (logits.argmax(1) == reference.argmax(1)).all()


def test_torchscript_output_matches_pytorch(exports, run_dir, pictures):
    result = exports["torchscript"]
    assert result.path.endswith("model.torchscript.pt")
    assert result.max_abs_diff_logits < 1e-5
    with warnings.catch_warnings():  # torch.jit.load is deprecated, but still how TorchScript files are loaded
        warnings.simplefilter("ignore")
        module = torch.jit.load(result.path)
    bundle = load_run_model(run_dir, "cpu")
    x = torch.stack([bundle.preprocess(p) for p in pictures[:5]])
    with torch.no_grad():
        assert (module(x) - bundle.model(x)).abs().max().item() < 1e-5


def test_model_json_lists_the_files_the_classes_and_the_checks(exports, run_dir):
    meta = json.loads((run_dir / "export" / "model.json").read_text())
    assert meta["architecture"] == "timm:test_resnet" and meta["classes"] == ["blue", "green", "red"]
    assert meta["data_config"]["input_size"] == [3, 160, 160]
    assert meta["files"] == {"bundle": "model.safetensors", "onnx": "model.onnx",
                             "torchscript": "model.torchscript.pt"}
    assert set(meta["checks"]) == {"bundle", "onnx", "torchscript"}
    assert meta["checks"]["onnx"]["max_abs_diff_probs"] == exports["onnx"].max_abs_diff_probs
    assert meta["source_weights"] == "none" and meta["license"] is None


def test_the_model_card_tells_data_metrics_weights_and_limits(exports, run_dir):
    card = (run_dir / "export" / CARD).read_text()
    for heading in ("## Model", "## Source weights and licence", "## Data", "## Metrics", "## Export checks",
                    "## Known limits"):
        assert heading in card
    assert "| blue | 4 | 2 | 2 |" in card and "| **total** | 12 | 6 | 6 |" in card  # 8 per class: a quarter to val, a quarter to test
    evaluation = json.loads((run_dir / "evaluation.json").read_text())["splits"]["val"]
    assert f"Accuracy {100 * evaluation['accuracy']:.1f} %" in card
    assert "no pretrained weights were used" in card
    assert "only knows these 3 classes" in card
    assert re.search(r"\| ONNX \| `model.onnx` \| 6 \|", card)


def test_the_card_names_the_licence_of_pretrained_weights(run_dir, tmp_path):
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("model.json", "labels.json", "dataset.json", "summary.json"):
        (copy / name).write_bytes((run_dir / name).read_bytes())
    info = json.loads((copy / "model.json").read_text())
    (copy / "model.json").write_text(json.dumps({**info, "weights": "pretrained", "license": "apache-2.0"}))
    card = model_card(copy)
    assert "Licence of the starting weights: apache-2.0" in card
    assert "not measured yet" in card  # no evaluation.json in this copy


def test_the_readme_code_loads_the_bundle(exports, run_dir, data):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Evaluate, predict, export", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    picture = data / "green" / "green_02.png"
    line = 'bundle, picture = "runs/my-run/export", "my-picture.jpg"'
    assert line in blocks[0]
    namespace: dict = {}
    exec(blocks[0].replace(line, f"bundle, picture = {str(run_dir / 'export')!r}, {str(picture)!r}"), namespace)
    exec(blocks[1], namespace)  # the ONNX lines, with the first block's transform and picture
    (row,) = predict_paths(load_run_model(run_dir / "export", "cpu"), [picture], top_k=3)
    probs = namespace["probs"].numpy()
    assert [namespace["meta"]["classes"][i] for i in np.argsort(-probs)] == [c for c, _ in row.top]
    assert probs.max() == pytest.approx(row.confidence, abs=1e-6)
    logits = torch.from_numpy(namespace["logits"])
    assert logits.softmax(1)[0].numpy() == pytest.approx(probs, abs=1e-5)


def test_mistakes_get_a_sentence(exports, run_dir, tmp_path):
    with pytest.raises(UserError, match="not an export format"):
        export_run(run_dir, "pickle")
    with pytest.raises(UserError, match="already an exported model"):
        export_run(run_dir / "export", "onnx")
    with pytest.raises(UserError, match="is a run folder"):
        export_run(run_dir, "bundle", out=run_dir)
    other = tmp_path / "elsewhere" / "deep"
    result = export_run(run_dir, "bundle", out=other)  # --out: made when missing
    assert Path(result.path).parent == other and (other / CARD).is_file()


def test_the_onnx_file_says_nothing_about_the_computer_it_was_made_on(exports):
    """The exporter notes each node with the Python stack trace that made it (this computer's user name and file
    paths); a model given away must not carry them."""
    import onnx

    model = onnx.load(exports["onnx"].path)
    assert model.graph.node
    assert not any(n.metadata_props or n.doc_string for n in model.graph.node)
    raw = Path(exports["onnx"].path).read_bytes()
    assert str(Path(torch.__file__).parent).encode() not in raw and b"site-packages" not in raw
