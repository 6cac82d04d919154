"""Calibrated confidence: temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", 2017), fitted on
the validation pictures at the end of every completed run.

A network's softmax confidences are usually too high (or, with label smoothing, too low). Temperature scaling divides
the logits by one number ``T`` chosen to minimise the negative log-likelihood (NLL) of the validation pictures: the
predicted class never changes (dividing by a positive number keeps the order of the logits), only how sure the model
says it is. ``T`` is optimised as ``log T`` with L-BFGS (torch.optim.LBFGS with a strong-Wolfe line search), starting
from ``T = 1``: NLL is convex in ``1/T``, one parameter, so the optimum is found in a few steps, and the result never
has a higher validation NLL than ``T = 1``.

Why here and not in engine.advise: every completed run must carry its temperature, however it was started (the
window, ``main.py train``, a script calling ``fit``), and the trainer alone has the model, the validation loader and
the picture cache in hand when training ends; engine.train may not import engine.advise (the layers contract), so the
fit lives beside the trainer. engine.results applies the temperature (prediction, evaluation, exports).

What a run writes: ``model.json`` gets ``temperature``; ``summary.json`` gets ``calibration`` (temperature, NLL and
expected calibration error before and after, the pictures used) and ``val_per_class`` (each class's validation
pictures, recall and mean confidence), which the training doctor (engine.advise.training_doctor) reads.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

MIN_PICTURES = 20  # fewer validation pictures than this: the temperature would fit noise, so it stays 1
# The temperature is kept within these bounds: a validation set without a single mistake pulls it towards 0 (every
# confidence towards 100 %), which a few dozen pictures cannot justify; 0.2 still sharpens a label-smoothed model's
# typical 0.9 into 0.99+.
T_RANGE = (0.2, 10.0)
ECE_BINS = 15  # as engine.results.evaluate.N_BINS


@dataclass(frozen=True)
class Calibration:
    """The outcome of a temperature fit on one set of logits."""

    temperature: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    pictures: int
    fitted: bool  # False when the temperature was left at 1 (too few pictures)

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def sentence(self) -> str:
        if not self.fitted:
            return (f"The confidences were not calibrated: {self.pictures} validation pictures are too few to fit "
                    f"a temperature (at least {MIN_PICTURES} are needed).")
        return (f"Confidences calibrated on the {self.pictures} validation pictures: temperature "
                f"{self.temperature:.2f}; expected calibration error {self.ece_before:.3f} -> {self.ece_after:.3f}, "
                f"log-loss {self.nll_before:.3f} -> {self.nll_after:.3f}.")


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under softmax(logits / temperature)."""
    return float(F.cross_entropy(logits.double() / temperature, labels))


def ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error (top-label, L1, equal-width bins) -- torchmetrics' definition."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    return float(multiclass_calibration_error(probs.float(), labels, num_classes=probs.shape[1], n_bins=n_bins,
                                              norm="l1"))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature ``T`` (> 0) that minimises the NLL of softmax(logits / T) on (logits, labels)."""
    logits = logits.detach().double().cpu()
    labels = labels.detach().long().cpu()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-10, tolerance_change=1e-12)
    low, high = math.log(T_RANGE[0]), math.log(T_RANGE[1])

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.clamp(low, high).exp(), labels)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    t = float(log_t.detach().clamp(low, high).exp())
    if not math.isfinite(t) or nll(logits, labels, t) > nll(logits, labels, 1.0):
        return 1.0  # cannot happen with a working line search; a guard that keeps the promise in the docstring
    return t


def calibrate(logits: torch.Tensor, labels: torch.Tensor) -> Calibration:
    """Fit a temperature on validation logits and measure NLL and ECE before and after."""
    logits = logits.detach().double().cpu()
    labels = labels.detach().long().cpu()
    n = int(labels.numel())
    fitted = n >= MIN_PICTURES
    t = fit_temperature(logits, labels) if fitted else 1.0
    return Calibration(temperature=t, nll_before=nll(logits, labels), nll_after=nll(logits, labels, t),
                       ece_before=ece(logits.softmax(1), labels), ece_after=ece((logits / t).softmax(1), labels),
                       pictures=n, fitted=fitted)


def per_class(logits: torch.Tensor, labels: torch.Tensor, classes, temperature: float) -> list[dict]:
    """Each class's validation pictures, recall, and mean calibrated confidence of the predictions made for it."""
    probs = (logits.double() / temperature).softmax(1)
    predicted = probs.argmax(1)
    confidence = probs.max(1).values
    rows = []
    for k, name in enumerate(classes):
        mine = labels == k
        count = int(mine.sum())
        made = predicted == k
        rows.append({"name": str(name), "pictures": count,
                     "recall": float((predicted[mine] == k).double().mean()) if count else None,
                     "confidence": float(confidence[made].mean()) if bool(made.any()) else None})
    return rows


# --- at the end of a run ---------------------------------------------------------------------------------------


def collect_logits(model, loader, runtime, stop: threading.Event | None, *, backoff=None,
                   normalize=None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(logits, labels) of every picture of ``loader``, in eval mode, in full precision on the CPU; None when
    ``stop`` was set meanwhile."""
    from engine.train.loop import to_device

    model.eval()
    outs, labs = [], []
    with torch.inference_mode():
        for images, labels in loader:
            if stop is not None and stop.is_set():
                return None
            images, _ = to_device(images, labels, runtime, normalize)
            with torch.autocast(runtime.device.type, dtype=runtime.amp_dtype or torch.float32,
                                enabled=runtime.amp_dtype is not None):
                logits = backoff.forward(model, images) if backoff is not None else model(images)
            outs.append(logits.float().cpu())
            labs.append(labels.cpu())
    if not outs:
        return None
    return torch.cat(outs), torch.cat(labs).long()


def calibrate_run(session, val_loader, folder, classes) -> Calibration | None:
    """At the end of a completed run: the best epoch's weights back into the model, its validation logits, the
    temperature fitted on them and written into the run folder (``model.json`` and the summary). None when the run
    has no best weights or was stopped meanwhile (the run then keeps no temperature, i.e. 1)."""
    from safetensors.torch import load_file

    from engine import files
    from engine.train.lora import load_plain_state
    from engine.project import runs

    best = folder.path / runs.BEST
    if not best.is_file():
        return None
    load_plain_state(session.model, load_file(str(best)))  # (LoRA: the merged weights, engine.train.lora)
    got = collect_logits(session.model, val_loader, session.runtime, session.stop, backoff=session.backoff,
                         normalize=session.normalize)
    if got is None:
        return None
    logits, labels = got
    result = calibrate(logits, labels)

    def write_model_json():
        path = folder.path / runs.MODEL
        info = json.loads(path.read_text(encoding="utf-8"))
        info["temperature"] = round(result.temperature, 6)
        files.atomic_write_json(path, info)

    folder.write("the model's description", write_model_json)
    folder.summary_extra["calibration"] = result.to_dict()
    folder.summary_extra["val_per_class"] = per_class(logits, labels, classes, result.temperature)
    return result


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated probabilities from uncalibrated ones: softmax(log(p) / T) equals softmax(logits / T), because the
    softmax ignores the constant that separates log(p) from the logits. Rows of NaN stay NaN."""
    if temperature == 1.0:
        return probs
    z = np.log(np.clip(probs.astype(np.float64), 1e-300, None)) / temperature  # NaN stays NaN
    if z.size:
        z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(probs.dtype)
