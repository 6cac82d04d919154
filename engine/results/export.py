"""Taking a trained model away: a bundle, ONNX or TorchScript, each checked against the PyTorch model.

Every export goes into one folder (default ``RUN/export/``), written file by file atomically:

    model.safetensors     the bundle's weights (``--format bundle``)
    model.onnx            ONNX with a dynamic batch dimension: input ``input`` (N, 3, H, W), output ``logits``
    model.torchscript.pt  TorchScript (traced)
    model.json            architecture, classes, preprocessing (``data_config``), source weights and licence, and the
                          result of each check; the engine loads the folder for prediction, and plain timm or
                          torchvision code can too (see the README)
    MODEL_CARD.md         the data, the metrics, the source weights and their licence, and known limits

Each exported model is run on sample pictures from the run's validation split (random inputs when they cannot be
read) and compared with the PyTorch model: the largest absolute difference of the logits and of the class
probabilities is reported, and recorded in ``model.json`` and the model card.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from engine import files
from engine.project import runs
from engine.errors import UserError
from engine.results.checks import differences
from engine.results.predict import BUNDLE_WEIGHTS, ModelBundle, Stopped, load_run_model

__all__ = ["CARD", "EXPORT_DIR", "FILES", "FORMATS", "ExportResult", "export_run", "model_card"]

FORMATS = ("bundle", "onnx", "torchscript", "onnx-int8")
FILES = {"bundle": BUNDLE_WEIGHTS, "onnx": "model.onnx", "torchscript": "model.torchscript.pt",
         "onnx-int8": "model.int8.onnx"}
EXPORT_DIR = "export"
CARD = "MODEL_CARD.md"
CHECK_PICTURES = 16
ONNX_INPUT, ONNX_OUTPUT = "input", "logits"
FORMAT_NAMES = {"bundle": "bundle", "onnx": "ONNX", "torchscript": "TorchScript", "onnx-int8": "ONNX int8"}


@dataclass(frozen=True)
class ExportResult:
    format: str
    path: str  # the exported model file
    out_dir: str
    files: tuple[str, ...]  # every file written
    pictures: int  # validation pictures the check ran on (0: random inputs)
    max_abs_diff_logits: float
    max_abs_diff_probs: float

    def summary(self) -> str:
        on = f"{self.pictures} validation pictures" if self.pictures else "random inputs"
        return (f"{FORMAT_NAMES[self.format]} export written to {self.path}; largest difference to PyTorch on {on}: "
                f"{self.max_abs_diff_probs:.2g} in probability ({self.max_abs_diff_logits:.2g} in logits)")


# --- check inputs ---------------------------------------------------------------------------------------------


def _check_inputs(bundle: ModelBundle, run_dir: Path, n: int) -> tuple[torch.Tensor, int]:
    """Up to ``n`` preprocessed validation pictures spread over the split (so that every class tends to appear),
    or, when none can be read, ``n`` seeded random inputs; and how many were pictures."""
    try:
        samples = json.loads((run_dir / runs.DATASET).read_text(encoding="utf-8")).get("samples", [])
    except (OSError, ValueError):
        samples = []
    paths = [s["path"] for s in samples if s.get("split") == "val"] or [s["path"] for s in samples]
    tensors = []
    if paths:
        for i in np.unique(np.linspace(0, len(paths) - 1, min(len(paths), n * 2)).round().astype(int)):
            try:
                tensors.append(bundle.preprocess(paths[i]))
            except Exception:  # a picture that moved or broke since training: take the next one
                continue
            if len(tensors) == n:
                break
    if len(tensors) >= 2:
        return torch.stack(tensors), len(tensors)
    generator = torch.Generator().manual_seed(0)
    return torch.randn((n, *bundle.data_config["input_size"]), generator=generator), 0


# --- formats --------------------------------------------------------------------------------------------------


def _export_bundle(bundle: ModelBundle, out: Path, inputs: torch.Tensor, reference: torch.Tensor):
    from engine.train import save_weights

    save_weights(bundle.model, out / BUNDLE_WEIGHTS)
    _write_metadata(bundle, out, {})  # the loader needs model.json to open the folder
    again = load_run_model(out, device="cpu")
    with torch.inference_mode():
        return differences(reference, again.model(inputs).float() / again.temperature)


def _export_onnx(bundle: ModelBundle, out: Path, inputs: torch.Tensor, reference: torch.Tensor):
    import onnxruntime as ort

    path = out / FILES["onnx"]
    example = inputs[:2]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:  # torch's current exporter (torch.export + onnxscript)
                program = torch.onnx.export(
                    _calibrated(bundle), (example,), None, dynamo=True, input_names=[ONNX_INPUT],
                    output_names=[ONNX_OUTPUT], dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                    verbose=False)
                files.atomic_write(path, lambda tmp: program.save(str(tmp), external_data=False))
            except Exception:  # models torch.export cannot capture: the older TorchScript-based exporter
                files.atomic_write(path, lambda tmp: torch.onnx.export(
                    _calibrated(bundle), (example,), str(tmp), dynamo=False, input_names=[ONNX_INPUT],
                    output_names=[ONNX_OUTPUT], dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
                    opset_version=18))
    except Exception as exc:
        raise UserError(f"The model could not be exported to ONNX ({_first_line(exc)}); the bundle and "
                        "TorchScript formats may still work.") from None
    _without_notes(path)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: onnxruntime's notes are not for the user
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        (logits,) = session.run([ONNX_OUTPUT], {ONNX_INPUT: inputs.numpy()})
    except Exception as exc:
        raise UserError(f"The ONNX file was written but onnxruntime cannot run it ({_first_line(exc)}): use the "
                        "bundle or TorchScript format instead.") from None
    return differences(reference, logits)


def _without_notes(path: Path) -> None:
    """The exported file without the exporter's notes on each node (the Python stack trace, with this computer's
    user name and file paths): a model given away says nothing about the machine it was made on."""
    import onnx

    from engine.models.quantize import strip_notes

    try:
        model = onnx.load(str(path))
        strip_notes(model)
        files.atomic_write(path, lambda tmp: onnx.save(model, str(tmp)))
    except OSError as exc:
        raise UserError(f"The ONNX file {path} could not be written ({exc.strerror or exc}).") from None


class _Temperature(torch.nn.Module):
    """The model with its temperature folded in: logits divided by T, so that softmax gives calibrated
    probabilities in any runtime."""

    def __init__(self, model: torch.nn.Module, temperature: float):
        super().__init__()
        self.model = model
        self.register_buffer("temperature", torch.tensor(float(temperature)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) / self.temperature


def _calibrated(bundle: ModelBundle) -> torch.nn.Module:
    """What the ONNX and TorchScript files hold: the model itself when its temperature is 1, else the model with the
    division folded in."""
    return bundle.model if bundle.temperature == 1.0 else _Temperature(bundle.model, bundle.temperature).eval()


def _export_torchscript(bundle: ModelBundle, out: Path, inputs: torch.Tensor, reference: torch.Tensor):
    path = out / FILES["torchscript"]
    try:
        with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export, but still the format
            warnings.simplefilter("ignore")  # most C++ and mobile runtimes load
            traced = torch.jit.trace(_calibrated(bundle), inputs[:2], check_trace=False)
            files.atomic_write(path, lambda tmp: torch.jit.save(traced, str(tmp)))
            loaded = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise UserError(f"The model could not be exported to TorchScript ({_first_line(exc)}); the bundle and "
                        "ONNX formats may still work.") from None
    with torch.inference_mode():
        return differences(reference, loaded(inputs).float())


def _shareable(path: str | os.PathLike) -> None:
    """Atomic writes go through a temporary file that only its owner may read; an export is made to be handed on,
    so it gets the usual permissions (read for everyone, write for the owner)."""
    try:
        os.chmod(path, 0o644)
    except OSError:
        pass


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0][:200]}" if text else exc.__class__.__name__


# --- metadata and card ----------------------------------------------------------------------------------------


def _read(path: Path, default):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def _write_metadata(bundle: ModelBundle, out: Path, checks: dict) -> None:
    previous = _read(out / runs.MODEL, {})
    if previous.get("run") != bundle.source:
        previous = {}
    all_checks = {f: c for f, c in previous.get("checks", {}).items() if (out / FILES.get(f, "?")).is_file()}
    all_checks.update(checks)
    summary = runs.read_summary(bundle.source)
    info = bundle.info
    meta = {
        "format": "transfer-studio-export", "format_version": 1,
        "architecture": bundle.architecture, "classes": list(bundle.classes), "num_classes": len(bundle.classes),
        "head": bundle.head, "data_config": _plain_config(bundle.data_config),
        # Temperature scaling (engine.train.calibrate): the bundle's loader divides the logits by it; the ONNX and
        # TorchScript graphs have it folded in already (their outputs are the divided logits).
        "temperature": bundle.temperature,
        "source_weights": info.get("weights"), "weights_note": info.get("weights_note"),
        "license": _license(info),
        "run": bundle.source, "best_val_acc": summary.get("best_val_acc"), "best_epoch": summary.get("best_epoch"),
        "files": {f: name for f, name in FILES.items() if (out / name).is_file()},
        "onnx": {"input": ONNX_INPUT, "output": ONNX_OUTPUT, "layout": "NCHW float32, dynamic batch",
                 "temperature_folded": True},
        "checks": all_checks, "exported": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if info.get("tasks"):  # several tasks: their classes and ONNX outputs (engine.results.multitask)
        from engine.results.multitask import export_metadata

        meta.update(export_metadata(info))
    _carry_ood(bundle, out, meta)
    files.atomic_write_json(out / runs.MODEL, meta)


def _carry_ood(bundle: ModelBundle, out: Path, meta: dict) -> None:
    """The run's statistics for pictures unlike the training ones (engine.shift.ood, fitted before an export by
    main.py and the window) travel with every export: ``ood.safetensors`` beside the model and ``model.json``'s
    ``ood`` entry (method, threshold); docs/shift.md says how to compute the score from them."""
    source = Path(bundle.source)
    entry = _read(source / runs.MODEL, {}).get("ood")
    stats = source / "ood.safetensors"
    if not isinstance(entry, dict) or entry.get("file") != stats.name or not stats.is_file():
        return
    st = (source / runs.BEST).stat()
    if entry.get("weights") != f"{st.st_size}:{st.st_mtime_ns}":  # fitted for other weights
        return
    data = stats.read_bytes()
    files.atomic_write(out / stats.name, lambda tmp: tmp.write_bytes(data))
    meta["ood"] = {**entry, "how": "docs/shift.md: the score of a picture from ood.safetensors and the logits or "
                   "the penultimate features; flagged when above threshold"}


def _license(info: dict) -> str | None:
    """The licence of the starting weights; none for a random start (timm records its architecture's licence even
    then)."""
    return None if info.get("weights") == "none" else info.get("license")


def _plain_config(data_config: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()}


def _confidence_line(info: dict, summary: dict) -> str:
    """The model card's sentence on how the confidences were calibrated."""
    t = float(info.get("temperature", 1.0))
    calibration = summary.get("calibration") or {}
    if t == 1.0:
        return ("- Confidence: the softmax of the logits, not calibrated (the run was too short of validation "
                "pictures, or trained before calibration existed).")
    measured = (f" (on the {calibration['pictures']} validation pictures, expected calibration error "
                f"{calibration['ece_before']:.3f} before, {calibration['ece_after']:.3f} after)"
                if {"pictures", "ece_before", "ece_after"} <= calibration.keys() else "")
    return (f"- Confidence: calibrated by temperature scaling{measured}: the logits are divided by {t:.4g} before the "
            "softmax. The ONNX and TorchScript files include the division; `model.json` gives the temperature for "
            "the safetensors weights.")


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _formats_card_lines(data_config: dict) -> list[str]:
    from engine.data.formats.settings import card_lines  # lab pictures: how new ones must be read

    return card_lines(data_config)


def model_card(run_dir: str | os.PathLike, checks: dict | None = None) -> str:
    """The model card (Markdown) of a run: model, data, metrics, source weights and licence, known limits."""
    from engine.results.evaluate import SPLIT_NAMES, load_evaluation

    run = Path(run_dir)
    info = _read(run / runs.MODEL, {})
    classes = _read(run / runs.LABELS, [])
    dataset = _read(run / runs.DATASET, {})
    summary = runs.read_summary(run)
    config_text = (run / runs.CONFIG).read_text(encoding="utf-8") if (run / runs.CONFIG).is_file() else ""
    evaluation = load_evaluation(run)
    counts = dataset.get("counts", {})
    splits = [s for s in ("train", "val", "test") if sum(counts.get(s, {}).values())]
    dc = info.get("data_config", {})
    size = dc.get("input_size", [3, 0, 0])
    lines = [f"# Model card: {info.get('model', 'model')} for {len(classes)} classes", "",
             f"Made with Transfer Studio from the run `{run.name}` on {time.strftime('%Y-%m-%d')}.", "",
             "## Model", "",
             f"- Architecture: `{info.get('model')}`, with a new classification head (`{info.get('head')}`) for "
             f"{len(classes)} classes: {', '.join(classes)} (in the order of the model's outputs).",
             f"- Training: strategy `{summary.get('strategy', '?')}`, {summary.get('epochs_completed', '?')} epochs; "
             f"the weights are those of epoch {summary.get('best_epoch')}, the best on the validation pictures.",
             f"- Input: RGB pictures resized to {int(size[2] / dc.get('crop_pct', 1) if dc else 0)} pixels on the "
             f"shorter side ({dc.get('interpolation')}), centre-cropped to {size[2]} x {size[1]}, scaled to [0, 1] "
             f"and normalised with mean {tuple(dc.get('mean', ()))} and standard deviation {tuple(dc.get('std', ()))}.",
             _confidence_line(info, summary),
             *_formats_card_lines(dc),
             "",
             "## Source weights and licence", "",
             f"- Starting weights: `{info.get('weights')}`. {info.get('weights_note', '')}".rstrip()]
    license = _license(info)
    if info.get("weights") == "none":
        lines.append("- Licence: no pretrained weights were used (random start).")
    elif license:
        lines.append(f"- Licence of the starting weights: {license}. The fine-tuned model is derived from them, so "
                     "their terms apply to it too.")
    else:
        lines.append("- Licence of the starting weights: not recorded (a local file): check the terms of the place "
                     "the file came from before sharing this model; they apply to it too.")
    lines += ["", "## Data", ""]
    if dataset:
        lines.append(f"From `{dataset.get('root')}` ({dataset.get('layout')}; split: "
                     f"{'given by the data' if dataset.get('split_source') == 'folders' else 'random, stratified'}).")
        lines += ["", "| class | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
        for c in classes:
            lines.append(f"| {c} | " + " | ".join(str(counts.get(s, {}).get(c, 0)) for s in splits) + " |")
        lines.append("| **total** | " + " | ".join(str(sum(counts.get(s, {}).values())) for s in splits) + " |")
        health = dataset.get("health", {})
        if health.get("unreadable"):
            lines += ["", f"{len(health['unreadable'])} files could not be read and were left out."]
    else:
        lines.append("The run's dataset description (dataset.json) is missing.")
    if info.get("tasks"):  # several tasks: each one's classes, accuracy and ECE (engine.results.multitask)
        from engine.results.multitask import card_lines, card_title

        lines[0] = card_title(info)
        lines += card_lines(info, evaluation, dataset)
    lines += ["", "## Metrics", "",
              f"- Best validation accuracy during training: {_percent(summary.get('best_val_acc'))} "
              f"(epoch {summary.get('best_epoch')})."]
    if evaluation is not None:
        for split in evaluation.splits.values():
            where = SPLIT_NAMES.get(split.name, split.name)
            if split.name == "data":
                where = f"the folder {evaluation.data}"
            lines += ["", f"### On the {where} pictures ({split.count})", "",
                      f"Accuracy {_percent(split.accuracy)}, macro F1 {split.macro_f1:.3f}, expected calibration "
                      f"error {split.ece:.3f}"
                      + (f" (before temperature scaling: {split.ece_before:.3f})"
                         if split.ece_before is not None and split.temperature != 1.0 else "") + ".", "",
                      "| class | precision | recall | F1 | pictures |", "|---|---:|---:|---:|---:|"]
            lines += [f"| {c.name} | {c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} | {c.support} |"
                      for c in split.per_class]
    else:
        lines.append("- Per-class metrics and calibration: not measured yet (`python main.py evaluate RUN`, then "
                     "export again, adds them here).")
    if checks:
        lines += ["", "## Export checks", "",
                  "Largest absolute difference between the exported model and the PyTorch model:", "",
                  "| format | file | pictures | probability | logits |", "|---|---|---:|---:|---:|"]
        for fmt, c in checks.items():
            lines.append(f"| {FORMAT_NAMES.get(fmt, fmt)} | `{FILES.get(fmt, '')}` | "
                         f"{c['pictures'] or 'random inputs'} | {c['max_abs_diff_probs']:.2g} | "
                         f"{c['max_abs_diff_logits']:.2g} |")
        if "onnx-int8" in checks:  # the int8 file's measured cost (engine.results.int8)
            from engine.results.int8 import card_lines

            lines += card_lines(checks["onnx-int8"])
    lines += ["", "## Known limits", "",
              f"- The model only knows these {len(classes)} classes: every picture gets one of them, even a picture "
              "of something else entirely. A low confidence is a hint, not a guarantee.",
              "- It learnt from the pictures above only; pictures from other cameras, places, lighting or "
              "preparations may be recognised less well. Check it on such pictures before relying on it."]
    train_counts = counts.get("train", {})
    if train_counts:
        smallest = min(train_counts, key=train_counts.get)
        lines.append(f"- The smallest class in training, '{smallest}', had {train_counts[smallest]} pictures; "
                     "classes with few pictures are usually recognised less reliably.")
    lines.append("- The best epoch was chosen on the validation pictures, so the validation accuracy is slightly "
                 "optimistic" + ("; the test pictures give the fairer figure." if "test" in splits else
                                 "; a separate test set gives a fairer figure."))
    if evaluation is not None:
        ece = max(s.ece for s in evaluation.splits.values())
        if ece > 0.05:
            lines.append(f"- Its confidences are not well calibrated (expected calibration error {ece:.2f}): read "
                         "them as a ranking rather than as probabilities.")
    lines.append("- The preprocessing above must be applied exactly (resize, crop, mean and standard deviation); "
                 "other preprocessing changes the predictions.")
    if config_text:
        lines.append("- The full training configuration is in the run folder's `config.toml`.")
    return "\n".join(lines) + "\n"


# --- the entry point ------------------------------------------------------------------------------------------


def export_run(run_dir: str | os.PathLike, format: str, out: str | os.PathLike | None = None, *,
               pictures: int = CHECK_PICTURES, on_progress: Callable[[int, int], None] | None = None,
               stop: threading.Event | None = None) -> ExportResult:
    """Export a run's model as ``format`` (bundle, onnx or torchscript) into ``out`` (default ``RUN/export``),
    check it against the PyTorch model, and write ``model.json`` and ``MODEL_CARD.md`` beside it."""
    if format not in FORMATS:
        raise UserError(f"'{format}' is not an export format: choose {', '.join(FORMATS)}.")
    if format == "onnx-int8":  # the ONNX export, then quantised and measured by engine.results.int8 (7 steps)
        import dataclasses

        from engine.results.int8 import check_of, export_int8

        def step(done: int, _total: int = 7) -> None:
            if stop is not None and stop.is_set():
                raise Stopped("The export was stopped.")
            if on_progress is not None:
                on_progress(done, 7)

        fp32 = export_run(run_dir, "onnx", out, pictures=pictures, on_progress=step, stop=stop)
        bundle, out_dir = load_run_model(run_dir, device="cpu"), Path(fp32.out_dir)
        result = export_int8(bundle, fp32.path, out_dir / FILES[format], pictures=pictures, progress=step, stop=stop)
        _write_metadata(bundle, out_dir, {format: check_of(result)})
        checks = _read(out_dir / runs.MODEL, {}).get("checks", {})
        files.atomic_write_text(out_dir / CARD, model_card(bundle.source, checks))
        written = tuple(str(out_dir / name) for name in (FILES[format], FILES["onnx"], runs.MODEL, CARD))
        for name in written:
            _shareable(name)
        step(7)
        return dataclasses.replace(result, files=written)
    steps = 4

    def progress(done: int) -> None:
        if stop is not None and stop.is_set():
            raise Stopped("The export was stopped.")
        if on_progress is not None:
            on_progress(done, steps)

    bundle = load_run_model(run_dir, device="cpu")
    if bundle.kind != "run":
        raise UserError(f"{bundle.source} is already an exported model: export from the run folder it came from.")
    run = Path(bundle.source)
    out_dir = Path(out).expanduser() if out is not None else run / EXPORT_DIR
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"The export folder {out_dir} cannot be created ({exc.strerror or exc}): choose another "
                        "folder with --out.") from None
    if (out_dir / runs.MODEL).is_file() and "classes" not in _read(out_dir / runs.MODEL, {"classes": 1}):
        raise UserError(f"{out_dir} is a run folder: choose an empty or export folder with --out.")
    progress(1)
    inputs, count = _check_inputs(bundle, run, pictures)
    with torch.inference_mode():
        reference = bundle.model(inputs).float() / bundle.temperature  # calibrated logits, as every format gives
    progress(2)
    export = {"bundle": _export_bundle, "onnx": _export_onnx, "torchscript": _export_torchscript}[format]
    if format == "onnx" and bundle.info.get("tasks"):  # one output per task (engine.results.multitask)
        from engine.results.multitask import onnx_tasks_exporter

        export = onnx_tasks_exporter(FILES["onnx"], ONNX_INPUT, _first_line)
    try:
        logits_diff, probs_diff = export(bundle, out_dir, inputs, reference)
    except OSError as exc:
        raise UserError(f"The export could not be written to {out_dir} ({exc.strerror or exc}): check that the "
                        "folder is writable and the disk is not full.") from None
    progress(3)
    check = {"pictures": count, "max_abs_diff_logits": logits_diff, "max_abs_diff_probs": probs_diff}
    _write_metadata(bundle, out_dir, {format: check})
    checks = _read(out_dir / runs.MODEL, {}).get("checks", {})
    files.atomic_write_text(out_dir / CARD, model_card(run, checks))
    progress(4)
    path = out_dir / FILES[format]
    written = tuple(str(out_dir / name) for name in (FILES[format], runs.MODEL, CARD))
    for name in written:
        _shareable(name)
    return ExportResult(format, str(path), str(out_dir), written, count, logits_diff, probs_diff)
