"""One pass of a model over pictures that keeps, for each picture, its logits and its penultimate features (the input
of the classifier's last linear layer), as the OOD score, the drift report and adaptation need them.

The pass is prediction's own (engine.results.predict.infer_outputs): the picture cache, pictures prepared on a few
threads while the model computes, and on a CPU the model with its features as a second part of its output through
ONNX Runtime, checked against the model. (It used to run the PyTorch model with a hook, about 7 pictures/s against
prediction's 40 on a 10,000-picture run: docs/long.md.)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch.nn as nn

from engine.results.predict import infer_outputs

BATCH = 32
ProgressCallback = Callable[[int, int], None]


@dataclass
class Pass:
    """What one pass gives: rows follow the paths; pictures that could not be read have NaN rows and a sentence."""

    logits: np.ndarray  # float32 (n, classes), the model's raw logits (before the temperature)
    features: np.ndarray | None  # float32 (n, dim), None when the model has no linear classifier to hook
    errors: list[str | None]

    @property
    def good(self) -> np.ndarray:
        return np.array([e is None for e in self.errors], dtype=bool)


def run_pass(bundle, paths: Sequence[str], *, model: nn.Module | None = None, batch_size: int = BATCH,
             on_progress: ProgressCallback | None = None, stop: threading.Event | None = None,
             stop_message: str = "The work was stopped.") -> Pass:
    """Logits and penultimate features of ``paths`` through ``model`` (default: the bundle's), in eval mode."""
    logits, features, errors = infer_outputs(bundle, paths, features=True, model=model, batch_size=batch_size,
                                             on_progress=on_progress, stop=stop, stop_message=stop_message,
                                             use_cache=True)
    return Pass(logits, features, errors)
