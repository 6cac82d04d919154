"""Augmented samples as the trainer would see them, for the window's augmentation preview."""

from __future__ import annotations

import numpy as np
import torch

from engine.data.images import load_rgb
from engine.data.loaders import IMAGENET_DEFAULTS, build_transforms


def augmented_views(path: str, augment: str, n: int = 8, seed: int = 0,
                    data_config: dict | None = None) -> list[np.ndarray]:
    """``n`` random training views of one picture (HxWx3 uint8), made by the run's own training transform and
    un-normalised for display. Raises engine.data.images.ImageError for an unreadable picture."""
    data_config = data_config or IMAGENET_DEFAULTS
    train_tf, _ = build_transforms(data_config, augment)
    image = load_rgb(path)
    mean = torch.tensor(data_config["mean"]).view(3, 1, 1)
    std = torch.tensor(data_config["std"]).view(3, 1, 1)
    views = []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        import random

        state = random.getstate()
        random.seed(seed)
        try:
            for _ in range(n):
                tensor = train_tf(image) * std + mean
                views.append((tensor.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
        finally:
            random.setstate(state)
    return views
