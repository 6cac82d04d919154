"""The int8 ONNX export (engine.edge.quantize): it records what it costs -- the accuracy difference on the validation
split, the latency and the size against fp32 -- in model.json and the model card, runs in ONNX Runtime with 8-bit
operators, and a model whose operators cannot be quantised still exports, with a sentence saying so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.models import quantize
from engine.results.export import CARD, export_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def int8(tiny_run):
    return export_run(tiny_run, "onnx-int8")


def test_the_int8_export_records_its_measured_difference(int8, tiny_run):
    out = tiny_run / "export"
    assert Path(int8.path) == out / "model.int8.onnx" and (out / "model.onnx").is_file()
    check = json.loads((out / "model.json").read_text(encoding="utf-8"))["checks"]["onnx-int8"]
    validation = [s for s in json.loads((tiny_run / "dataset.json").read_text())["samples"] if s["split"] == "val"]
    assert check["pictures"] == len(validation) == int8.pictures
    assert check["accuracy_difference_points"] == pytest.approx(100 * (check["accuracy_int8"] - check["accuracy_fp32"]),
                                                                abs=0.01)
    assert check["latency_ms_fp32"] > 0 and check["latency_ms_int8"] > 0
    assert check["speedup"] == pytest.approx(check["latency_ms_fp32"] / check["latency_ms_int8"], rel=0.01)
    assert check["bytes_int8"] == Path(int8.path).stat().st_size
    assert check["bytes_fp32"] == (out / "model.onnx").stat().st_size
    assert check["size_ratio"] < 0.6  # 8-bit weights (a tiny model keeps some fixed overhead)
    assert check["quantized_operators"] > 0
    card = (out / CARD).read_text(encoding="utf-8")
    assert "### The int8 file (`model.int8.onnx`)" in card and "points) on" in card and "ms in fp32" in card
    assert "points)" in int8.summary() and "x the size" in int8.summary()


def test_the_int8_file_runs_with_8_bit_operators_and_agrees_with_fp32(int8, tiny_run):
    import onnx
    import onnxruntime as ort

    graph = onnx.load(int8.path).graph
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)
    assert any(i.data_type == onnx.TensorProto.INT8 for i in graph.initializer)
    shape = json.loads((tiny_run / "export" / "model.json").read_text())["data_config"]["input_size"]
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    run = lambda p: ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]  # noqa: E731
    assert run(int8.path).shape == run(str(tiny_run / "export" / "model.onnx")).shape == (2, 3)


def test_the_int8_file_keeps_only_what_it_runs_on(int8, tiny_run):
    """No notes of the exporter (the Python stack trace with this computer's file paths) and no second copy of the
    biases with their scales: the file is the 8-bit weights and the graph."""
    import onnx

    import engine

    assert str(Path(engine.__file__).parent).encode() not in Path(int8.path).read_bytes()
    model = onnx.load(int8.path)
    assert all(len(node.metadata_props) == 0 for node in model.graph.node)
    names = [i.name for i in model.graph.initializer]
    assert not [n for n in names if n.endswith("_quantized_scale")]
    fp32 = onnx.load(str(tiny_run / "export" / "model.onnx"))
    weights = {i.name for i in fp32.graph.initializer if len(i.dims) == 4}  # the convolutions' weights
    assert weights and all(f"{n}_quantized" in names and n not in names for n in weights)  # 8-bit copies only


def test_a_model_whose_operators_cannot_be_quantised_exports_with_a_sentence(tiny_run, tmp_path, monkeypatch):
    # As if ONNX Runtime could quantise none of this model's operators (its list of quantisable ones held none).
    monkeypatch.setattr(quantize, "OPS_TO_QUANTIZE", ["NoSuchOperator"])
    result = export_run(tiny_run, "onnx-int8", tmp_path / "export")
    assert Path(result.path).is_file() and result.quantized_ops == 0
    assert result.sentence.startswith("None of this model's operators can be quantised")
    assert "Conv" in result.sentence and "use model.onnx" in result.sentence
    check = json.loads((tmp_path / "export" / "model.json").read_text())["checks"]["onnx-int8"]
    assert check["note"] == result.sentence and check["float_operators"]["Conv"] > 0
    assert result.sentence in (tmp_path / "export" / CARD).read_text(encoding="utf-8")
    assert result.sentence in result.summary()


def test_the_command_prints_the_measured_differences(tiny_run, tmp_path, capsys):
    import main

    assert main.main(["export", str(tiny_run), "--format", "onnx-int8", "--out", str(tmp_path / "e")]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("ONNX int8 export written to") and "points)" in line and "x the speed" in line
