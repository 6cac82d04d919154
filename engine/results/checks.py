"""How far an exported model's answers are from the app's own model's: every export's check (engine.results.export)
and the int8 file's (engine.results.int8) measure it the same way, with this one function."""

from __future__ import annotations

import numpy as np
import torch

from engine.errors import UserError

__all__ = ["differences"]


def differences(reference: torch.Tensor, other: np.ndarray | torch.Tensor) -> tuple[float, float]:
    """The largest absolute difference of the raw scores and of the class probabilities between ``reference`` (the
    app's model) and ``other`` (the exported file's outputs for the same pictures); UserError when the shapes differ."""
    other = torch.as_tensor(np.asarray(other, dtype=np.float32) if not isinstance(other, torch.Tensor) else other)
    other = other.float().cpu()
    if other.shape != reference.shape:
        raise UserError(f"The exported model gives outputs of shape {tuple(other.shape)} instead of "
                        f"{tuple(reference.shape)}: the export is not usable; try another format.")
    logits = (reference - other).abs().max().item()
    probs = (reference.softmax(1) - other.softmax(1)).abs().max().item()
    return float(logits), float(probs)
