"""Layer activity: which stages learn, measured during training and reported as ``LayerActivity`` events.

``for_phase`` gives a phase its ``Activity``, or None when the events are turned off (LAYER_ACTIVITY_EVERY = 0).
The settings below are read when they are used, so tests and benchmarks may change them on this module.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn as nn

from engine.events import LayerActivity
from engine.models.layers import LayerTree

LAYER_ACTIVITY_EVERY = 10  # a LayerActivity event every this many steps (and at each epoch's end); 0: none
# Measuring the gradient norms may take at most this share of the training time: when steps are so quick that
# measuring each would cost more (a head trained on cached outputs), only every n-th step is measured.
LAYER_ACTIVITY_SHARE = 0.01
LAYER_ACTIVITY_MIN_S = 0.1  # ... and at most this often within an epoch: a heat map needs no more than 10 a second


class Activity:
    """Per-stage gradient norms, averaged over the steps between two LayerActivity events, and the last step's
    update/weight ratio, for the phase's trained parameters (a frozen stage reports 0).

    Cheap by construction: one fused norm over all gradients per measured step (``torch._foreach_norm``, as in
    ``clip_grad_norm_``) summed into the stages on the device, no synchronisation until an event is made (one
    ``tolist()`` for all stages); the update ratio needs one copy of the trained weights, on the reporting steps only.
    Each step is measured unless measuring would take more than LAYER_ACTIVITY_SHARE of a step's time (tiny steps);
    then every n-th step is, and always the reporting step. Reports come every LAYER_ACTIVITY_EVERY steps but no more
    often than every LAYER_ACTIVITY_MIN_S seconds, and at the end of each epoch."""

    def __init__(self, model: nn.Module, tree: LayerTree, device: torch.device):
        self.stages = tuple(tree.names)
        where = {name: i for i, name in enumerate(self.stages)}
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        self.index = torch.tensor([where[tree.stage_of_param(n)] for n, _ in named], dtype=torch.long,
                                  device=device)
        self.total = torch.zeros(len(self.stages), device=device)
        self.count = 0
        self.ratios: torch.Tensor | None = None
        self.measure_updates = True
        self.step_seconds: float | None = None  # a training step's duration (moving average)
        self.cost_seconds: float | None = None  # a measurement's duration (moving average)
        self.skipped = 0
        self._last = time.perf_counter()
        self._reported = -math.inf

    def due(self, step: int) -> bool:
        """Whether global step ``step`` (1-based) reports: every LAYER_ACTIVITY_EVERY steps, LAYER_ACTIVITY_MIN_S
        apart at least."""
        return step % LAYER_ACTIVITY_EVERY == 0 and time.perf_counter() - self._reported >= LAYER_ACTIVITY_MIN_S

    def step_ended(self) -> None:
        now = time.perf_counter()
        took, self._last = now - self._last, now
        self.step_seconds = took if self.step_seconds is None else 0.9 * self.step_seconds + 0.1 * took

    def wants(self, report: bool) -> bool:
        """Whether to measure this step: always when it reports, else as often as the time share allows."""
        if report or self.step_seconds is None or self.cost_seconds is None:
            self.skipped = 0
            return True
        stride = math.ceil(self.cost_seconds / (LAYER_ACTIVITY_SHARE * max(self.step_seconds, 1e-9)))
        if self.skipped + 1 >= min(stride, LAYER_ACTIVITY_EVERY):
            self.skipped = 0
            return True
        self.skipped += 1
        return False

    def _per_stage(self, tensors: list[torch.Tensor], index: torch.Tensor) -> torch.Tensor:
        norms = torch._foreach_norm(tensors)
        squares = torch.stack([x.float() for x in norms]).square()
        return torch.zeros(len(self.stages), device=squares.device).index_add_(0, index, squares).sqrt()

    def add_gradients(self) -> None:
        """After the backward pass (gradients unscaled): add this step's norm of each stage's gradients."""
        began = time.perf_counter()
        self._add_gradients()
        took = time.perf_counter() - began
        self.cost_seconds = took if self.cost_seconds is None else 0.9 * self.cost_seconds + 0.1 * took

    def _add_gradients(self) -> None:
        self.count += 1
        grads = [p.grad for p in self.params]
        index = self.index
        if any(g is None for g in grads):  # parameters the step did not reach
            keep = [i for i, g in enumerate(grads) if g is not None]
            grads = [grads[i] for i in keep]
            index = self.index[torch.tensor(keep, dtype=torch.long, device=self.index.device)]
        if grads:
            self.total += torch.nan_to_num(self._per_stage(grads, index), nan=0.0, posinf=0.0)

    def snapshot(self) -> list[torch.Tensor] | None:
        """The trained weights before the optimizer step (None when there is no memory to spare for them)."""
        if not self.measure_updates or not self.params:
            return None
        try:
            return [p.detach().clone() for p in self.params]
        except torch.OutOfMemoryError:
            self.measure_updates = False  # the gradient norms go on; the ratios are left out from now on
            return None

    def add_update(self, before: list[torch.Tensor]) -> None:
        """After the optimizer step: |w_before - w_after| / |w_before| for each stage."""
        weights = self._per_stage(before, self.index)
        torch._foreach_sub_(before, [p.detach() for p in self.params])
        self.ratios = self._per_stage(before, self.index) / weights.clamp_min(1e-12)

    def event(self, epoch: int, step: int) -> LayerActivity:
        n = len(self.stages)
        values = self.total / max(self.count, 1)
        if self.ratios is not None:
            values = torch.cat([values, self.ratios])
        out = values.tolist()  # the one synchronisation with the device
        self._reported = time.perf_counter()
        self.total.zero_()
        self.count = 0
        self.ratios = None
        return LayerActivity(epoch, step, self.stages, tuple(out[:n]), tuple(out[n:]))


def for_phase(model: nn.Module, tree: LayerTree, device: torch.device) -> Activity | None:
    """The measurements of a phase's trained parameters (call once ``apply_phase`` has set them); None when the
    events are turned off."""
    return Activity(model, tree, device) if LAYER_ACTIVITY_EVERY > 0 else None
