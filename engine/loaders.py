"""From samples to batches: the preprocessing and augmentation transforms, the dataset and its loaders."""

from __future__ import annotations

import os
from typing import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from engine.images import ImageError, load_rgb

# Augmentation presets, as arguments to timm's create_transform (RandomResizedCrop scale, flips, colour, RandAugment).
AUGMENT_PRESETS = {
    "light": {"scale": (0.6, 1.0), "hflip": 0.5, "color_jitter": None},
    "strong": {"scale": (0.25, 1.0), "hflip": 0.5, "vflip": 0.0, "color_jitter": 0.3,
               "auto_augment": "rand-m7-mstd0.5", "re_prob": 0.1},
}


def build_transforms(data_config: dict, augment: str):
    """(train transform, eval transform) for the model's preprocessing; ``none`` trains on the eval transform."""
    from timm.data import create_transform

    common = {"input_size": tuple(data_config["input_size"]), "interpolation": data_config["interpolation"],
              "mean": tuple(data_config["mean"]), "std": tuple(data_config["std"])}
    eval_tf = create_transform(**common, is_training=False, crop_pct=data_config.get("crop_pct"),
                               crop_mode=data_config.get("crop_mode", "center"))
    if augment == "none":
        return eval_tf, eval_tf
    train_tf = create_transform(**common, is_training=True, **AUGMENT_PRESETS[augment])
    return train_tf, eval_tf


def decode_size(data_config: dict) -> tuple[int, int]:
    """The smallest size a picture must keep before resizing: lets JPEGs decode at a reduced scale."""
    side = int(round(data_config["input_size"][-1] / data_config.get("crop_pct", 0.875)))
    return side, side


class ImageDataset(Dataset):
    """Pictures and labels; a picture that became unreadable since the scan is replaced by the next good one."""

    def __init__(self, paths: Sequence[str], labels: Sequence[int], transform, draft: tuple[int, int] | None = None):
        self.paths = list(paths)
        self.labels = list(labels)
        self.transform = transform
        self.draft = draft

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        for offset in range(min(len(self.paths), 16)):
            i = (index + offset) % len(self.paths)
            try:
                image = load_rgb(self.paths[i], draft_size=self.draft)
            except ImageError:
                continue
            return self.transform(image), self.labels[i]
        raise RuntimeError("No readable picture left near this one in the dataset.")


def auto_workers(requested: int, n_items: int) -> int:
    """Loader processes: the requested number, or (auto) one per spare core up to 4, none for tiny datasets."""
    if requested >= 0:
        return requested
    if n_items < 64:
        return 0
    return min(4, max(0, (os.cpu_count() or 1) - 1))


def _one_thread(_worker_id: int) -> None:
    # A loader process decodes and resizes one picture at a time; torch's own threads there would only compete
    # with the training process for the same cores.
    torch.set_num_threads(1)


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, workers: int, seed: int = 0,
                pin_memory: bool = False, drop_last: bool = False) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, generator=generator,
                      pin_memory=pin_memory, drop_last=drop_last, persistent_workers=workers > 0,
                      worker_init_fn=_one_thread if workers > 0 else None)
