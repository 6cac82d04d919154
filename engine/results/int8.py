"""The int8 ONNX export (engine.results.export dispatches to it; ``export RUN --format onnx-int8``), with what it costs, measured.

The run is first exported to ONNX in full precision (engine.results.export, checked against PyTorch as usual); ONNX
Runtime's static quantisation (``onnxruntime.quantization.quantize_static``: QDQ format, 8-bit weights per output
channel, 8-bit activations whose ranges are calibrated on the run's own training pictures) then writes
``model.int8.onnx`` beside it. Both files are measured on this computer:

- accuracy on the run's validation pictures, fp32 against int8, and the difference in points;
- latency per picture (ONNX Runtime, one picture at a time, the median of many passes, the two files alternated so
  that a busy machine slows both alike), and the speed-up;
- file sizes.

The figures go into ``model.json`` (``checks["onnx-int8"]``) and the model card. Operators ONNX Runtime does not
quantise stay in float (the file still runs, with conversions around them) and the result names them; a model none of
whose operators quantise is still written, with a sentence saying so.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from engine import files
from engine.errors import UserError
from engine.models.quantize import float_operators, float_sentence, quantize_file
from engine.project import runs

__all__ = ["CALIBRATION_PICTURES", "Int8ExportResult", "card_lines", "export_int8"]

CALIBRATION_PICTURES = 64  # training pictures the activation ranges are calibrated on (spread over the split)
VALIDATION_PICTURES = 2000  # at most this many validation pictures are compared (spread over the split)
LATENCY_ROUNDS = 60  # timed single-picture passes per file
@dataclass(frozen=True)
class Int8ExportResult:
    format: str
    path: str
    out_dir: str
    files: tuple[str, ...]
    pictures: int  # validation pictures the accuracy was measured on
    max_abs_diff_logits: float  # against PyTorch, on the usual check pictures
    max_abs_diff_probs: float
    accuracy_fp32: float | None
    accuracy_int8: float | None
    latency_ms_fp32: float
    latency_ms_int8: float
    bytes_fp32: int
    bytes_int8: int
    float_ops: dict  # operator type -> how many stayed in float
    quantized_ops: int
    sentence: str  # what stayed in float, in words ("" when everything quantised)

    def summary(self) -> str:
        return summary_text(self.path, _check_of(self))


def _check_of(r: Int8ExportResult) -> dict:
    return {"pictures": r.pictures, "max_abs_diff_logits": r.max_abs_diff_logits,
            "max_abs_diff_probs": r.max_abs_diff_probs, "accuracy_fp32": r.accuracy_fp32,
            "accuracy_int8": r.accuracy_int8,
            "accuracy_difference_points": _points(r.accuracy_fp32, r.accuracy_int8),
            "latency_ms_fp32": r.latency_ms_fp32, "latency_ms_int8": r.latency_ms_int8,
            "speedup": round(r.latency_ms_fp32 / max(r.latency_ms_int8, 1e-9), 2),
            "bytes_fp32": r.bytes_fp32, "bytes_int8": r.bytes_int8,
            "size_ratio": round(r.bytes_int8 / max(r.bytes_fp32, 1), 3), "float_operators": r.float_ops,
            "quantized_operators": r.quantized_ops, "note": r.sentence,
            "method": "ONNX Runtime static quantisation, QDQ, int8 weights per channel, uint8 activations "
                      f"calibrated (99.999th percentile) on {CALIBRATION_PICTURES} training pictures at most",
            "latency_measured": "ONNX Runtime on this CPU, one picture at a time, median of "
                                f"{LATENCY_ROUNDS} passes, fp32 and int8 alternated"}


def _points(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(100 * (b - a), 2)


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def summary_text(path: str, c: dict) -> str:
    """The command line's line: where it went and what it costs."""
    acc = ("" if c["accuracy_fp32"] is None else
           f"accuracy on {c['pictures']} validation pictures {100 * c['accuracy_int8']:.1f} % against "
           f"{100 * c['accuracy_fp32']:.1f} % in fp32 ({c['accuracy_difference_points']:+.1f} points), ")
    text = (f"ONNX int8 export written to {path}; {acc}{c['speedup']:.2f}x the speed per picture on this CPU "
            f"({c['latency_ms_int8']:.1f} against {c['latency_ms_fp32']:.1f} ms), {c['size_ratio']:.2f}x the size "
            f"({_mb(c['bytes_int8'])} against {_mb(c['bytes_fp32'])})")
    return text + (f". {c['note']}" if c.get("note") else "")


def card_lines(c: dict) -> list[str]:
    """The model card's section on the int8 file."""
    acc = ("not measured (no validation pictures could be read)" if c.get("accuracy_fp32") is None else
           f"{100 * c['accuracy_int8']:.1f} % against {100 * c['accuracy_fp32']:.1f} % in fp32 "
           f"({c['accuracy_difference_points']:+.1f} points) on {c['pictures']} validation pictures")
    lines = ["", "### The int8 file (`model.int8.onnx`)", "",
             f"- How: {c.get('method', 'ONNX Runtime static quantisation')}.",
             f"- Accuracy: {acc}.",
             f"- Latency per picture: {c['latency_ms_int8']:.1f} ms against {c['latency_ms_fp32']:.1f} ms in fp32 "
             f"({c['speedup']:.2f}x; {c.get('latency_measured', 'on the exporting computer')}; other computers "
             "differ, most of all those without 8-bit vector instructions).",
             f"- Size: {_mb(c['bytes_int8'])} against {_mb(c['bytes_fp32'])} ({c['size_ratio']:.2f}x)."]
    if c.get("note"):
        lines.append(f"- {c['note']}")
    return lines


# --- quantising -----------------------------------------------------------------------------------------------


def _spread(items: list, n: int) -> list:
    if len(items) <= n:
        return list(items)
    return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))]


def _pictures(bundle, paths: list[str], stop: threading.Event | None) -> tuple[np.ndarray, list[int]]:
    """The preprocessed pictures that can be read, as one float32 array, and the indices of those."""
    tensors, kept = [], []
    for i, path in enumerate(paths):
        if stop is not None and stop.is_set():
            from engine.errors import Stopped

            raise Stopped("The export was stopped.")
        try:
            tensors.append(bundle.preprocess(path).numpy())
            kept.append(i)
        except Exception:  # unreadable since training: left out
            continue
    if not tensors:
        return np.zeros((0, *bundle.data_config["input_size"]), np.float32), []
    return np.stack(tensors).astype(np.float32), kept


def _session(path: Path):
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session, pictures: np.ndarray, batch: int = 32) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: pictures[i:i + batch]})[0]
                           for i in range(0, len(pictures), batch)]) if len(pictures) else np.zeros((0, 0))


def _latency(sessions: dict, picture: np.ndarray, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in sessions}
    inputs = {k: s.get_inputs()[0].name for k, s in sessions.items()}
    for k, s in sessions.items():  # warm-up
        for _ in range(3):
            s.run(None, {inputs[k]: picture})
    for _ in range(rounds):
        for k, s in sessions.items():
            began = time.perf_counter()
            s.run(None, {inputs[k]: picture})
            times[k].append(time.perf_counter() - began)
    return {k: round(1000 * statistics.median(v), 3) for k, v in times.items()}


def export_int8(ex, run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, pictures: int = 16,
                on_progress: Callable[[int, int], None] | None = None,
                stop: threading.Event | None = None) -> Int8ExportResult:
    """``export RUN --format onnx-int8`` (``ex`` is engine.results.export, which calls this): the fp32 ONNX export,
    quantised, measured, and recorded in its model.json and model card."""
    from engine.results.predict import load_run_model

    steps = 7

    def progress(done: int, _total: int = steps) -> None:
        if stop is not None and stop.is_set():
            from engine.errors import Stopped

            raise Stopped("The export was stopped.")
        if on_progress is not None:
            on_progress(done, steps)

    fp32 = ex.export_run(run_dir, "onnx", out, pictures=pictures, on_progress=lambda d, t: progress(d), stop=stop)
    bundle = load_run_model(run_dir, device="cpu")
    out_dir, run = Path(fp32.out_dir), Path(bundle.source)
    samples = json.loads((run / runs.DATASET).read_text(encoding="utf-8")).get("samples", [])
    train = [s["path"] for s in samples if s.get("split") == "train"]
    val = [s for s in samples if s.get("split") == "val"]
    calibration, _ = _pictures(bundle, _spread(train, CALIBRATION_PICTURES), stop)
    if len(calibration) == 0:
        raise UserError(f"None of the run's training pictures can be read, and int8 quantisation is calibrated on "
                        f"them: put the pictures back (the run trained on {len(train)}) and export again.")
    int8_path = out_dir / ex.FILES["onnx-int8"]
    fp32_session = _session(Path(fp32.path))
    input_name = fp32_session.get_inputs()[0].name
    try:
        quantize_file(Path(fp32.path), int8_path, calibration, input_name)
        int8_session = _session(int8_path)
    except OSError as exc:
        raise UserError(f"The int8 export could not be written to {out_dir} ({exc.strerror or exc}): check that the "
                        "folder is writable and the disk is not full.") from None
    except Exception as exc:
        raise UserError(f"ONNX Runtime could not quantise this model ({ex._first_line(exc)}): use the fp32 ONNX "
                        f"file {fp32.path} instead.") from None
    progress(5)
    floats, quantized = float_operators(fp32.path, int8_path)
    # Against PyTorch on the usual check pictures, like every format.
    inputs, count = ex._check_inputs(bundle, run, pictures)
    import torch

    with torch.inference_mode():
        reference = bundle.model(inputs).float() / bundle.temperature
    logits_diff, probs_diff = ex._differences(reference, _run(int8_session, inputs.numpy()))
    # Accuracy on the validation split, both files.
    chosen = _spread(val, VALIDATION_PICTURES)
    val_pictures, kept = _pictures(bundle, [s["path"] for s in chosen], stop)
    labels = np.asarray([int(chosen[i]["label"]) for i in kept])
    acc32 = acc8 = None
    if len(kept):
        acc32 = float(np.mean(_run(fp32_session, val_pictures).argmax(1) == labels))
        acc8 = float(np.mean(_run(int8_session, val_pictures).argmax(1) == labels))
    progress(6)
    one = (val_pictures[:1] if len(kept) else calibration[:1]).copy()
    latency = _latency({"fp32": fp32_session, "int8": int8_session}, one, LATENCY_ROUNDS)
    result = Int8ExportResult(
        "onnx-int8", str(int8_path), str(out_dir), (), len(kept), logits_diff, probs_diff, acc32, acc8,
        latency["fp32"], latency["int8"], Path(fp32.path).stat().st_size, int8_path.stat().st_size, floats,
        quantized, float_sentence(floats, quantized))
    ex._write_metadata(bundle, out_dir, {"onnx-int8": _check_of(result)})
    checks = ex._read(out_dir / runs.MODEL, {}).get("checks", {})
    files.atomic_write_text(out_dir / ex.CARD, ex.model_card(run, checks))
    written = tuple(str(out_dir / name) for name in (ex.FILES["onnx-int8"], ex.FILES["onnx"], runs.MODEL, ex.CARD))
    for name in written:
        ex._shareable(name)
    progress(7)
    import dataclasses

    return dataclasses.replace(result, files=written)
