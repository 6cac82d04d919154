"""What the engine.shift tests share: a short real run with enough validation pictures for a threshold, and folders
of new pictures (the same kind of pictures, pictures altered by a shift, pictures of nothing the model knows)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from conftest import make_class_folders


def train_run(base: Path, model: str = "timm:test_resnet", per_class: int = 30, seed: int = 0) -> Path:
    """A one-epoch run of ``model`` from random weights on three colour classes, half of them for validation (45
    validation pictures); its picture cache is its own."""
    import torch

    from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from engine.train.trainer import fit

    data = make_class_folders(base / "data", per_class=per_class, seed=seed)
    config = RunConfig(data=DataConfig(source=str(data), val_fraction=0.5),
                       model=ModelConfig(model, "none"), strategy="fine-tune-deep", epochs=1, lr=0.01,
                       train=TrainConfig(batch_size=8, workers=0, warmup_epochs=0.0, augment="none"),
                       out=str(base / "runs"))
    before, cache = torch.get_num_threads(), os.environ.get("TRANSFER_STUDIO_CACHE")
    torch.set_num_threads(1)
    os.environ["TRANSFER_STUDIO_CACHE"] = str(base / "picture-cache")
    try:
        result = fit(config)
    finally:
        torch.set_num_threads(before)
        if cache is None:
            os.environ.pop("TRANSFER_STUDIO_CACHE", None)
        else:
            os.environ["TRANSFER_STUDIO_CACHE"] = cache
    assert result.status == "completed", result.error
    return Path(result.run_dir)


def val_pictures(run: Path) -> list[tuple[str, str]]:
    """(path, class) of the run's validation pictures."""
    info = json.loads((run / "dataset.json").read_text())
    return [(s["path"], info["classes"][s["label"]]) for s in info["samples"] if s["split"] == "val"]


def copy_pictures(run: Path, out: Path, change=None, by_class: bool = False, times: int = 1) -> Path:
    """The run's validation pictures (``times`` over, mirrored copies after the first), changed by ``change``,
    into ``out`` (in class sub-folders with ``by_class``)."""
    for k in range(times):
        for path, label in val_pictures(run):
            with Image.open(path) as img:
                img = img.convert("RGB")
                img = ImageOps.mirror(img) if k % 2 else img
                img = change(img) if change else img
            target = out / label if by_class else out
            target.mkdir(parents=True, exist_ok=True)
            img.save(target / f"{k}-{Path(path).stem}.png")
    return out


def invert(img: Image.Image) -> Image.Image:
    return ImageOps.invert(img)


def noise_pictures(out: Path, n: int = 12, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(out / f"noise_{i:02d}.png")
    return out
