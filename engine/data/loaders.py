"""From samples to batches: the preprocessing and augmentation transforms, the dataset and its loaders."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from engine.data import formats as _formats
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

    prefetch = uint8 and not AUGMENT_PRESETS.get(augment, {}).get("re_prob")
    if all_channels(data_config):  # lab pictures with every channel into the model: arrays, not RGB pictures
        eval_tf = ArrayTransform(data_config, None, prefetch)
        return (eval_tf if augment == "none" else ArrayTransform(data_config, AUGMENT_PRESETS[augment], prefetch),
                eval_tf)
    common = {"input_size": tuple(data_config["input_size"]), "interpolation": data_config["interpolation"],
              "mean": tuple(data_config["mean"]), "std": tuple(data_config["std"])}
    eval_tf = create_transform(**common, is_training=False, crop_pct=data_config.get("crop_pct"),
                               crop_mode=data_config.get("crop_mode", "center"), use_prefetcher=prefetch)
    if prefetch:
        eval_tf = _contiguous_uint8(eval_tf)
    if augment == "none":
        return eval_tf, eval_tf
    train_tf = create_transform(**common, is_training=True, use_prefetcher=prefetch, **AUGMENT_PRESETS[augment])
    if prefetch:
        train_tf = _contiguous_uint8(train_tf)
    return train_tf, eval_tf


def _contiguous_uint8(transform):
    """timm's 8-bit transform with a cheaper ending: its last step (``MaybePILToTensor``: a channels-first *view* of
    the picture's pixels) becomes a contiguous CHW uint8 tensor, and a random resized crop followed by a horizontal
    flip becomes :class:`CropFlipUint8` (the same random draws, the same pixels, fewer copies).

    Why: batching 64 of timm's strided views (``torch.stack`` in the loader's collate) copied them byte by byte with
    a stride of 3 -- measured on 2 shared cores, 0.74 s per batch of 64 against 8 ms for contiguous pictures: most of
    a picture's loading time in the frozen pass. Any other composition (colour jitter, RandAugment, random erasing)
    keeps timm's steps and only gets the contiguous ending."""
    from timm.data.transforms import MaybePILToTensor, RandomResizedCropAndInterpolation
    from torchvision import transforms as T

    steps = list(getattr(transform, "transforms", ()))
    if not steps or not isinstance(steps[-1], MaybePILToTensor):
        return transform
    if (len(steps) == 3 and type(steps[0]) is RandomResizedCropAndInterpolation
            and type(steps[1]) is T.RandomHorizontalFlip):
        return CropFlipUint8(steps[0], steps[1].p)
    return T.Compose(steps[:-1] + [Uint8CHW()])


class Uint8CHW:
    """A PIL picture (or an HxWxC array) to a contiguous CHW uint8 tensor, not scaled (timm's ``MaybePILToTensor``,
    contiguous); tensors pass through."""

    def __call__(self, picture) -> torch.Tensor:
        if isinstance(picture, torch.Tensor):
            return picture.contiguous()
        return _chw(picture)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}()"


def _chw(picture, flip: bool = False) -> torch.Tensor:
    """A PIL picture or an HxW(xC) array as a contiguous CHW uint8 tensor, mirrored left to right with ``flip`` (the
    mirror done by the one copy into channels-first order)."""
    import numpy as np

    array = np.asarray(picture)
    if array.ndim == 2:
        array = array[..., None]
    if flip:
        array = array[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


class CropFlipUint8:
    """timm's ``RandomResizedCropAndInterpolation`` then torchvision's ``RandomHorizontalFlip`` then a contiguous CHW
    uint8 tensor, in one step and fewer copies: the crop's parameters and the flip are drawn exactly as those two
    steps draw them (Python's ``random`` for the crop and its interpolation, then ``torch.rand(1)`` for the flip),
    the crop is cut and resized by PIL as torchvision's ``resized_crop`` does it (crop, then PIL's antialiased
    resize), and the flip is done by the copy into channels-first order instead of by PIL. So for the same random
    state the picture is the one the three steps give, pixel for pixel (tests/engine/test_loaders_fast.py).

    Not torch's antialiased resize, though it is 3-4 times faster on one thread: its rounding differs from PIL's by
    1 of 255 on about 2 % of the pixels, and the frozen pass's int8 check, whose half-point tolerance is less than one
    of 153 validation pictures, changed its verdict on such a difference (ants-vs-bees, seed 1)."""

    def __init__(self, crop, flip_p: float):
        self.crop = crop  # the timm RandomResizedCropAndInterpolation (its scale, ratio, size, interpolation)
        self.flip_p = float(flip_p)

    def __call__(self, picture) -> torch.Tensor:
        import random

        from PIL import Image
        from torchvision.transforms.functional import pil_modes_mapping

        if not isinstance(picture, Image.Image):  # a tensor: the steps themselves
            from torchvision.transforms import functional as TF

            picture = self.crop(picture)
            if torch.rand(1) < self.flip_p:
                picture = TF.hflip(picture)
            return Uint8CHW()(picture)
        c = self.crop
        i, j, h, w = c.get_params(picture, c.scale, c.ratio)
        mode = random.choice(c.interpolation) if isinstance(c.interpolation, (tuple, list)) else c.interpolation
        flip = bool(torch.rand(1) < self.flip_p)
        out_h, out_w = c.size
        cut = picture.crop((j, i, j + w, i + h))
        if (h, w) != (out_h, out_w):  # torchvision's resize leaves a picture of the right size as it is
            cut = cut.resize((out_w, out_h), pil_modes_mapping[mode])
        return _chw(cut, flip)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.crop!r}, hflip={self.flip_p})"


def all_channels(data_config: dict) -> bool:
    """Whether a model takes every channel of its pictures (the data setting channels = "all"): its pictures are
    HxWxC arrays (engine.data.formats.open_array), not RGB pictures."""
    stored = data_config.get("formats") or {}
    return str(stored.get("channels", "")).strip().lower() == "all"


def load_picture(path, *, draft_size: tuple[int, int] | None = None, settings=None):
    """The picture a model's transform takes: an RGB picture (load_rgb), or with the channels setting "all" an HxWxC
    uint8 array with every channel. Raises ImageError."""
    settings = settings or _formats.active()
    if settings.all_channels:
        return _formats.open_array(path, settings, draft_size=draft_size)
    return load_rgb(path, draft_size=draft_size, settings=settings)


class ArrayTransform:
    """The model's transform for HxWxC uint8 arrays of any number of channels (channels = "all"), with torchvision's
    tensor operations: evaluation resizes the shorter side to the working size and centre-crops, as timm's transform
    does for RGB pictures; training takes a random resized crop (the preset's scale) and a horizontal flip. Colour
    jitter and RandAugment are for RGB photos and are not applied to other channels. Ends at 8-bit tensors when
    ``uint8`` (normalised by batch: BatchNormalize), else normalised with the data config's mean and std."""

    def __init__(self, data_config: dict, preset: dict | None, uint8: bool):
        from engine.data.cache import working_side

        self.crop = int(tuple(data_config["input_size"])[-1])
        self.side = working_side(data_config)
        self.interpolation = str(data_config.get("interpolation", "bilinear"))
        self.preset = preset
        self.uint8 = uint8
        self.mean = torch.tensor(tuple(data_config["mean"]), dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(tuple(data_config["std"]), dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, pixels) -> torch.Tensor:
        import numpy as np
        from timm.data.transforms import str_to_interp_mode
        from torchvision.transforms import RandomResizedCrop
        from torchvision.transforms import functional as TF

        mode = str_to_interp_mode(self.interpolation)
        array = np.asarray(pixels)
        if array.ndim == 2:
            array = array[..., None]
        if array.shape[2] != self.mean.shape[0]:
            n = array.shape[2]
            raise ImageError(f"The picture has {n} channel{'s' if n != 1 else ''}; the model takes "
                             f"{self.mean.shape[0]} (it was trained on every channel of its pictures).")
        t = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
        if self.preset is None:
            t = TF.center_crop(TF.resize(t, self.side, interpolation=mode, antialias=True), [self.crop, self.crop])
        else:
            scale = self.preset.get("scale", (0.08, 1.0))
            i, j, h, w = RandomResizedCrop.get_params(t, scale=list(scale), ratio=[3 / 4, 4 / 3])
            t = TF.resized_crop(t, i, j, h, w, [self.crop, self.crop], interpolation=mode, antialias=True)
            if torch.rand(1).item() < self.preset.get("hflip", 0.5):
                t = TF.hflip(t)
        t = t.contiguous()
        if self.uint8:
            return t
        return (t.float() / 255.0 - self.mean) / self.std


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
        return torch.sub(images, self.mean).div_(self.std)  # uint8 - float: float, in one pass (same numbers)


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
        # How lab pictures are read, fixed when the dataset is made (loader processes get this copy).
        self.formats = cache.formats if cache is not None else _formats.active()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        for offset in range(min(len(self.paths), 16)):
            i = (index + offset) % len(self.paths)
            try:
                if self.cache is not None:
                    image = self.cache.load(self.paths[i])
                else:
                    image = load_picture(self.paths[i], draft_size=self.draft, settings=self.formats)
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
