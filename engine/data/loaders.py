"""From samples to batches: the preprocessing and augmentation transforms, the dataset and its loaders."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from engine.data.images import ImageError, load_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ImageNet's usual evaluation recipe (resize 256, centre-crop 224), for weights that bring no config of their own.
IMAGENET_DEFAULTS = {"input_size": (3, 224, 224), "interpolation": "bilinear", "mean": IMAGENET_MEAN,
                     "std": IMAGENET_STD, "crop_pct": 0.875, "crop_mode": "center"}

if TYPE_CHECKING:
    from engine.data.cache import ImageCache

# Augmentation presets, as arguments to timm's create_transform (RandomResizedCrop scale, flips, colour, RandAugment).
AUGMENT_PRESETS = {
    "light": {"scale": (0.6, 1.0), "hflip": 0.5, "color_jitter": None},
    "strong": {"scale": (0.25, 1.0), "hflip": 0.5, "vflip": 0.0, "color_jitter": 0.3,
               "auto_augment": "rand-m7-mstd0.5", "re_prob": 0.1},
}


def build_transforms(data_config: dict, augment: str, *, uint8: bool = False):
    """(train transform, eval transform) for the model's preprocessing; ``none`` trains on the eval transform.

    With ``uint8`` (and an augmentation that needs no random erasing of normalised pixels), both transforms stop at
    an 8-bit tensor and :class:`BatchNormalize` finishes the job on whole batches, on the training device: the
    loader processes do less and send a quarter of the bytes (timm's "prefetcher" arrangement). Check which one
    you got with :func:`outputs_uint8`."""
    from timm.data import create_transform

    common = {"input_size": tuple(data_config["input_size"]), "interpolation": data_config["interpolation"],
              "mean": tuple(data_config["mean"]), "std": tuple(data_config["std"])}
    prefetch = uint8 and not AUGMENT_PRESETS.get(augment, {}).get("re_prob")
    eval_tf = create_transform(**common, is_training=False, crop_pct=data_config.get("crop_pct"),
                               crop_mode=data_config.get("crop_mode", "center"), use_prefetcher=prefetch)
    if augment == "none":
        return eval_tf, eval_tf
    train_tf = create_transform(**common, is_training=True, use_prefetcher=prefetch, **AUGMENT_PRESETS[augment])
    return train_tf, eval_tf


def outputs_uint8(augment: str, uint8: bool = True) -> bool:
    """Whether ``build_transforms(..., augment, uint8=uint8)`` gives 8-bit tensors to normalise by batch."""
    return uint8 and not AUGMENT_PRESETS.get(augment, {}).get("re_prob")


class BatchNormalize:
    """8-bit image batches to the model's input: ``(x / 255 - mean) / std``, on whatever device the batch is on."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor([255.0 * m for m in mean]).view(1, -1, 1, 1)
        self.std = torch.tensor([255.0 * s for s in std]).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            return images
        if self.mean.device != images.device:
            self.mean, self.std = self.mean.to(images.device), self.std.to(images.device)
        return images.float().sub_(self.mean).div_(self.std)


def decode_size(data_config: dict) -> tuple[int, int]:
    """The smallest size a picture must keep before resizing: lets JPEGs decode at a reduced scale. The same
    size the decoded-image cache resizes to, so that both paths decode alike."""
    from engine.data.cache import working_side

    side = working_side(data_config)
    return side, side


class ImageDataset(Dataset):
    """Pictures and labels; a picture that became unreadable since the scan is replaced by the next good one.

    With an :class:`engine.data.cache.ImageCache`, pictures come decoded and resized from the cache (and are added to it
    the first time): the transforms see the same picture, without decoding the file again."""

    def __init__(self, paths: Sequence[str], labels: Sequence[int], transform, draft: tuple[int, int] | None = None,
                 cache: "ImageCache | None" = None):
        self.paths = list(paths)
        self.labels = list(labels)
        self.transform = transform
        self.draft = draft
        self.cache = cache

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        for offset in range(min(len(self.paths), 16)):
            i = (index + offset) % len(self.paths)
            try:
                if self.cache is not None:
                    image = self.cache.load(self.paths[i])
                else:
                    image = load_rgb(self.paths[i], draft_size=self.draft)
            except ImageError:
                continue
            return self.transform(image), self.labels[i]
        raise RuntimeError("No readable picture left near this one in the dataset.")


def available_cores() -> int:
    """The cores this process may use (a container or `taskset` may allow fewer than the machine has)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def auto_workers(requested: int, n_items: int, cached: bool = False, device: str = "cpu") -> int:
    """Loader processes: the requested number, or (auto) chosen from the cores.

    Decoding files every epoch: up to 4 processes on the spare cores (the training process keeps one core's worth of
    threads busy at least). With the picture cache (``cached``: each picture decoded once, then read and cropped in
    about a millisecond): up to 2 when a GPU trains; none when the CPU does, because there a loader process takes a
    core from the training's threads, which all wait for the slowest (measured on 2 cores, MobileNetV2 fine-tuning at
    batch 16: 39 pictures/s loading in the training process, 34 with one loader process). None for tiny datasets
    either, where starting processes costs more than it saves.

    The number does not depend on how much of the cache is filled: the loaders draw the augmentation's random
    numbers, so a later run with the same settings must get the same number to repeat the first."""
    if requested >= 0:
        return requested
    if n_items < 64 or (cached and device == "cpu"):
        return 0
    return min(2 if cached else 4, available_cores() - 1)


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
