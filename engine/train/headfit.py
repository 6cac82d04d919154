"""Fitting the new head properly when only the head trains on stored outputs (feature extraction, a linear probe).

With the frozen layers' outputs stored (engine.train.fastpath), training a linear head is multinomial logistic
regression on fixed features: a convex problem. A few epochs of AdamW at the default rate stop well short of its
optimum (a 10-class photo set: training accuracy 0.91 after 10 epochs), so before the phase's epochs the head is
solved to convergence with L-BFGS (torch.optim.LBFGS, strong-Wolfe line search, full batch) for each L2 strength of
a small grid, each solve warm-started from the previous, stronger one. The strength whose head is best on the
validation pictures (accuracy, then log-loss, as the best epoch is chosen) is kept, and the log says which.

The training objective is the epochs' own: cross-entropy with the run's label smoothing, over every stored
augmented view of every training picture, plus the L2 penalty on the weights (not the bias). The phase's epochs then
continue from the solution (their augmented views and dropout refine it, and the run keeps its best epoch as always).

Only a head that is one ``nn.Linear`` on one feature vector per picture is solved this way; any other head (an MLP, a
convolution) trains by its epochs alone, and the log says so. ``TrainConfig.fit_head = false`` turns it off.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

L2_GRID = (1e-1, 1e-2, 1e-3, 1e-4)  # penalty strengths tried, strongest first (each warm-starts the next)
MAX_ITER = 200  # L-BFGS iterations per strength
MAX_ELEMENTS = 2e8  # stored outputs above this many numbers (views x pictures x features) are left to the epochs


@dataclass(frozen=True)
class HeadFit:
    l2: float
    val_acc: float
    val_loss: float
    train_acc: float
    tried: tuple[tuple[float, float, float], ...]  # (l2, validation accuracy, validation loss) of each strength

    def sentence(self, phase: str) -> str:
        return (f"Phase '{phase}': the new head was fitted to convergence on the stored outputs first (logistic "
                f"regression solved by L-BFGS; of the L2 strengths {', '.join(f'{t[0]:g}' for t in self.tried)}, "
                f"{self.l2:g} was best on the validation pictures: accuracy {self.val_acc:.1%}, loss "
                f"{self.val_loss:.3f}; training accuracy {self.train_acc:.1%}). The epochs continue from it.")


def linear_head(suffix: nn.Module) -> nn.Linear | None:
    """The ``nn.Linear`` a head-only suffix ends in (alone, or after a moved dropout), or None."""
    if isinstance(suffix, nn.Linear):
        return suffix
    if isinstance(suffix, nn.Sequential):
        inner = list(suffix)
        if inner and isinstance(inner[-1], nn.Linear) and all(isinstance(m, nn.Dropout) for m in inner[:-1]):
            return inner[-1]
    return None


def _solve(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, l2: float, smoothing: float
           ) -> tuple[torch.Tensor, torch.Tensor]:
    w = w.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=MAX_ITER, history_size=20, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y, label_smoothing=smoothing) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return w.detach(), b.detach()


def fit_head(head: nn.Linear, train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor,
             val_y: torch.Tensor, smoothing: float = 0.0, grid=L2_GRID) -> HeadFit | None:
    """Solve ``head`` on (train_x, train_y) for each L2 strength of ``grid``, keep the best on (val_x, val_y), and
    write it into ``head``. None (the head untouched) when the features are not one vector per picture."""
    if train_x.dim() != 2 or val_x.dim() != 2 or train_x.shape[1] != head.in_features:
        return None
    device = head.weight.device
    x, y = train_x.to(device, torch.float32), train_y.to(device).long()
    vx, vy = val_x.to(device, torch.float32), val_y.to(device).long()
    w = head.weight.detach().float()
    b = head.bias.detach().float() if head.bias is not None else torch.zeros(head.out_features, device=device)
    best, tried = None, []
    for l2 in grid:
        w, b = _solve(x, y, w, b, l2, smoothing)
        with torch.no_grad():
            logits = vx @ w.T + b
            acc = float((logits.argmax(1) == vy).float().mean())
            loss = float(F.cross_entropy(logits, vy))
        if not torch.isfinite(torch.tensor(loss)):
            continue
        tried.append((l2, acc, loss))
        if best is None or (acc, -loss) > (best[1], -best[2]):
            best = (l2, acc, loss, w.clone(), b.clone())
    if best is None:
        return None
    l2, acc, loss, w, b = best
    with torch.no_grad():
        head.weight.copy_(w.to(head.weight.dtype))
        if head.bias is not None:
            head.bias.copy_(b.to(head.bias.dtype))
        train_acc = float(((x @ w.T + b).argmax(1) == y).float().mean())
    return HeadFit(l2, acc, loss, train_acc, tuple(tried))


def fit_fast_head(fast, phase_name: str, smoothing: float, log) -> HeadFit | None:
    """Fit the head of a head-only fast path (engine.train.fastpath.FastPath) on its stored outputs; logs what was
    chosen, or why the head is left to its epochs."""
    head = linear_head(fast.split.train_suffix)
    if head is None:
        log(f"Phase '{phase_name}': the head is not a single linear layer, so it is trained by its epochs alone.")
        return None
    outputs, labels = fast.train_set.outputs, fast.train_set.labels
    val = fast.val_loader.dataset
    if outputs.numel() > MAX_ELEMENTS:
        log(f"Phase '{phase_name}': too many stored outputs to solve the head in one go; it is trained by its "
            "epochs alone.")
        return None
    result = fit_head(head, outputs.reshape(-1, *outputs.shape[2:]), labels.reshape(-1),
                      val.outputs.reshape(-1, *val.outputs.shape[2:]), val.labels.reshape(-1), smoothing)
    if result is not None:
        log(result.sentence(phase_name))
    return result
