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

from engine.errors import UserError
from engine.models.quantize import float_operators, float_sentence, quantize_file
from engine.project import runs

__all__ = ["CALIBRATION_PICTURES", "Int8ExportResult", "card_lines", "check_of", "export_int8"]

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
    task_accuracy: dict | None = None  # several tasks: {task: {"fp32", "int8", "pictures"}}; the above their mean

    def summary(self) -> str:
        return summary_text(self.path, check_of(self))

    def measured(self) -> str:
        """What the int8 file costs and gains, in one plain sentence (the window shows it after an export)."""
        return measured_sentence(check_of(self))


def check_of(r: Int8ExportResult) -> dict:
    """What model.json's ``checks["onnx-int8"]`` records of an int8 export."""
    return {"pictures": r.pictures, "max_abs_diff_logits": r.max_abs_diff_logits,
            "max_abs_diff_probs": r.max_abs_diff_probs, "accuracy_fp32": r.accuracy_fp32,
            "accuracy_int8": r.accuracy_int8,
            "accuracy_difference_points": _points(r.accuracy_fp32, r.accuracy_int8),
            "latency_ms_fp32": r.latency_ms_fp32, "latency_ms_int8": r.latency_ms_int8,
            "speedup": round(r.latency_ms_fp32 / max(r.latency_ms_int8, 1e-9), 2),
            "bytes_fp32": r.bytes_fp32, "bytes_int8": r.bytes_int8,
            "size_ratio": round(r.bytes_int8 / max(r.bytes_fp32, 1), 3), "float_operators": r.float_ops,
            "quantized_operators": r.quantized_ops, "note": r.sentence,
            **({"task_accuracy": r.task_accuracy} if r.task_accuracy else {}),
            "method": "ONNX Runtime static quantisation, QDQ, int8 weights per channel, float biases (made 32-bit "
                      "integers when the file is loaded), uint8 activations calibrated (99.999th percentile) on "
                      f"{CALIBRATION_PICTURES} training pictures at most",
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


def measured_sentence(c: dict) -> str:
    """The int8 file against the fp32 one, in words: accuracy, speed and size, then what stayed in float."""
    acc = ("its accuracy could not be compared (no validation picture could be read)" if c["accuracy_fp32"] is None
           else f"it classifies the {c['pictures']} validation pictures at {100 * c['accuracy_int8']:.1f} % against "
                f"{100 * c['accuracy_fp32']:.1f} % in full precision ({c['accuracy_difference_points']:+.1f} points)")
    text = (f"In 8 bits {acc}; it answers {c['speedup']:.1f}x as fast per picture on this computer "
            f"({c['latency_ms_int8']:.1f} ms against {c['latency_ms_fp32']:.1f} ms) and its file is "
            f"{c['size_ratio']:.2f}x the size ({_mb(c['bytes_int8'])} against {_mb(c['bytes_fp32'])}).")
    return text + (f" {c['note']}" if c.get("note") else "")


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
    if c.get("task_accuracy"):  # several tasks: each one's, over its labelled pictures (the line above: their mean)
        lines.insert(5, "- Accuracy per task (the line above is their mean): " + "; ".join(
            f"{task} {100 * a['int8']:.1f} % against {100 * a['fp32']:.1f} % in fp32 on {a['pictures']} pictures"
            for task, a in c["task_accuracy"].items()) + ".")
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
    # (every output side by side: a multi-task file has one per task)
    return np.concatenate([np.concatenate(session.run(None, {name: pictures[i:i + batch]}), axis=1)
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


def export_int8(bundle, fp32_path: str | os.PathLike, int8_path: str | os.PathLike, *, pictures: int = 16,
                progress: Callable[[int], None] | None = None,
                stop: threading.Event | None = None) -> Int8ExportResult:
    """Quantise the run's fp32 ONNX file ``fp32_path`` (``bundle`` is its run's model, engine.results.predict's
    ModelBundle) into ``int8_path`` and measure it: against PyTorch on up to ``pictures`` validation pictures, then
    accuracy, latency and size against fp32. engine.results.export.export_run (``--format onnx-int8``) writes the
    fp32 file before and records the result (``check_of``) in model.json and the model card after; ``progress(k)``
    is called at k = 5 and 6 of its 7 steps."""
    import torch

    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    step = progress or (lambda done: None)
    run = Path(bundle.source)
    samples = json.loads((run / runs.DATASET).read_text(encoding="utf-8")).get("samples", [])
    train = [s["path"] for s in samples if s.get("split") == "train"]
    val = [s for s in samples if s.get("split") == "val"]
    calibration, _ = _pictures(bundle, _spread(train, CALIBRATION_PICTURES), stop)
    if len(calibration) == 0:
        raise UserError(f"None of the run's training pictures can be read, and int8 quantisation is calibrated on "
                        f"them: put the pictures back (the run trained on {len(train)}) and export again.")
    fp32_session = _session(fp32_path)
    input_name = fp32_session.get_inputs()[0].name
    try:
        quantize_file(fp32_path, int8_path, calibration, input_name)
        int8_session = _session(int8_path)
    except OSError as exc:
        raise UserError(f"The int8 export could not be written to {int8_path.parent} ({exc.strerror or exc}): check "
                        "that the folder is writable and the disk is not full.") from None
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise UserError(f"ONNX Runtime could not quantise this model ({type(exc).__name__}: {first}): use the fp32 "
                        f"ONNX file {fp32_path} instead.") from None
    step(5)
    floats, quantized = float_operators(fp32_path, int8_path)
    # Accuracy on the validation split, both files.
    chosen = _spread(val, VALIDATION_PICTURES)
    val_pictures, kept = _pictures(bundle, [s["path"] for s in chosen], stop)
    labels = np.asarray([int(chosen[i]["label"]) for i in kept])
    acc32 = acc8 = per_task = None
    from engine.results.multitask import TaskOutputs, bundle_temperatures, tasks_of_bundle
    from engine.train.multitask import task_accuracies

    tasks = tasks_of_bundle(bundle)  # several tasks: each measured on its own outputs, its labelled pictures
    if len(kept) and tasks:
        per_task = task_accuracies({"fp32": _run(fp32_session, val_pictures),
                                    "int8": _run(int8_session, val_pictures)}, labels.tolist(), tasks)
        acc32, acc8 = (float(np.mean([a[k] for a in per_task.values()])) for k in ("fp32", "int8"))
    elif len(kept):
        acc32 = float(np.mean(_run(fp32_session, val_pictures).argmax(1) == labels))
        int8_logits = _run(int8_session, val_pictures)
        acc8 = float(np.mean(int8_logits.argmax(1) == labels))
    # Against PyTorch, like every format (on validation pictures; random inputs when none can be read).
    check = (val_pictures[_spread(list(range(len(kept))), pictures)] if len(kept) else
             np.random.default_rng(0).standard_normal((pictures, *bundle.data_config["input_size"])).astype(np.float32))
    from engine.results.checks import differences  # every export's check

    with torch.inference_mode():
        reference = (torch.cat(TaskOutputs(bundle.model, tasks, bundle_temperatures(bundle))(torch.from_numpy(
            check)), 1) if tasks else bundle.model(torch.from_numpy(check)).float() / bundle.temperature)
    logits_diff, probs_diff = differences(reference, _run(int8_session, check))
    step(6)
    one = (val_pictures[:1] if len(kept) else calibration[:1]).copy()
    latency = _latency({"fp32": fp32_session, "int8": int8_session}, one, LATENCY_ROUNDS)
    return Int8ExportResult(
        "onnx-int8", str(int8_path), str(int8_path.parent), (), len(kept), logits_diff, probs_diff, acc32, acc8,
        latency["fp32"], latency["int8"], fp32_path.stat().st_size, int8_path.stat().st_size, floats,
        quantized, float_sentence(floats, quantized), per_task)


