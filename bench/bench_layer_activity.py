"""What LayerActivity costs a training step: the trainer's own step (``engine.train.loop.TrainStep``) with and
without the per-stage gradient norms (every step), the update/weight ratios and the event (every LAYER_ACTIVITY_EVERY
steps).

    python bench/bench_layer_activity.py [--device cpu|cuda] [--models timm:resnet18,...] [--steps 30]

Every parameter trains (fine-tune-deep), the worst case. Blocks of steps with and without alternate, so that a busy
machine's drift affects both alike; the medians of single steps are compared, and the measurements are also timed by
themselves (a gradient norm every step, the update ratio and the event every LAYER_ACTIVITY_EVERY steps), which is
the figure to trust on a machine shared with other work. Random weights and pictures: the cost does not depend on
them.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from engine.train import activity as A  # noqa: E402
from engine.config import Phase  # noqa: E402
from engine.train.loop import Backoff, TrainStep  # noqa: E402
from engine.train.optim import make_optimizer  # noqa: E402
from engine.train.runtime import Runtime, cpu_allocator_for_training  # noqa: E402
from engine.train.strategies import apply_phase, decayed, param_groups  # noqa: E402
from engine.models.layers import build_layer_tree  # noqa: E402
from engine.models.build import build_model  # noqa: E402


class _Config:  # what make_optimizer reads
    class train:
        optimizer, weight_decay, momentum = "adamw", 0.01, 0.9


def bench(name: str, device: torch.device, batch: int, size: int, steps: int, blocks: int) -> None:
    built = build_model(name, "none", 10)
    model = built.model.to(device, memory_format=torch.channels_last)
    tree = build_layer_tree(model, built.head)
    phase = Phase("deep", 1, 1e-3, decayed(tree.names, 0.75), bn="train")
    apply_phase(model, tree, phase)
    optimizer = make_optimizer(param_groups(model, tree, phase, 0.01), _Config(), phase)
    amp = torch.bfloat16 if device.type == "cuda" else None
    runtime = Runtime(device, device.type, amp, True)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    criterion = nn.CrossEntropyLoss()
    train_step = TrainStep(model, criterion, optimizer, scaler, runtime, Backoff())
    images = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,), device=device)
    model.train()

    def block(with_activity: bool) -> list[float]:
        """Seconds of each step of a block of ``steps`` steps (the event on every LAYER_ACTIVITY_EVERY-th)."""
        activity = A.Activity(model, tree, device) if with_activity else None
        times = []
        for step in range(1, steps + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            began = time.perf_counter()
            report = with_activity and step % A.LAYER_ACTIVITY_EVERY == 0
            train_step(images, labels, 1, activity, report)
            if with_activity:
                activity.step_ended()
            if report:
                activity.event(1, step)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - began)
        return times

    def alone(repeats: int = 20) -> float:
        """The measurements by themselves, per step: a gradient norm each step, the rest every K steps."""
        activity = A.Activity(model, tree, device)
        k = A.LAYER_ACTIVITY_EVERY
        if device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        for _ in range(repeats):
            for _ in range(k):
                activity.add_gradients()
            activity.add_update(activity.snapshot())
            activity.event(1, 1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - began) / (repeats * k)

    block(True), block(False)  # warm-up (cuDNN, allocator); leaves gradients for alone()
    plain, measured, isolated = [], [], []
    for i in range(blocks):  # alternating which goes first; other work on the machine hits both alike
        for with_activity in ((False, True) if i % 2 == 0 else (True, False)):
            (measured if with_activity else plain).extend(block(with_activity))
        isolated.append(alone())
    # Medians of single steps: robust to the bursts of other processes that a shared machine has.
    p, m, a = statistics.median(plain), statistics.median(measured), statistics.median(isolated)
    mean_p, mean_m = statistics.mean(plain), statistics.mean(measured)
    print(f"{name:28s} {device.type:4s} batch {batch:3d} at {size}px, {len(tree.names):2d} stages, "
          f"{sum(1 for q in model.parameters()):3d} tensors: median step {p * 1000:7.1f} ms plain, "
          f"{m * 1000:7.1f} ms with LayerActivity ({100 * (m / p - 1):+.2f} %; "
          f"means {100 * (mean_m / mean_p - 1):+.2f} %); the measurements alone {a * 1000:.3f} ms a step = {100 * a / p:.2f} % of a step", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="")
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--blocks", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        cases = [("timm:resnet50", 64, 224), ("timm:vit_base_patch16_224", 64, 224),
                 ("torchvision:mobilenet_v2", 128, 224), ("timm:convnext_tiny", 64, 224)]
        steps = args.steps or 50
    else:
        cases = [("torchvision:mobilenet_v2", 16, 160), ("timm:resnet18", 16, 160)]
        steps = args.steps or 10
    if args.models:
        cases = [c for c in cases if c[0] in args.models.split(",")] or [(m, 16, 160) for m in args.models.split(",")]
    # On the CPU, with the allocator settings the trainer uses there.
    with cpu_allocator_for_training() if device.type == "cpu" else contextlib.nullcontext():
        for name, batch, size in cases:
            bench(name, device, batch, size, steps, args.blocks)


if __name__ == "__main__":
    main()
