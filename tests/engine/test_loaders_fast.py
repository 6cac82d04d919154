"""The pictures' loading made cheaper (engine.data.loaders, engine.data.cache): the 8-bit transforms give contiguous
pictures (batched without a strided copy), the training crop and flip are drawn as timm's steps draw them and keep the
configured scale range and flip, evaluation pixels are exactly those of timm's steps, and the frozen pass's linear
probe gives the same verdict on one thread."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform

from engine.data.cache import ImageCache
from engine.data.loaders import AUGMENT_PRESETS, BatchNormalize, ImageDataset, build_transforms, decode_size

CONFIG = {"input_size": (3, 224, 224), "interpolation": "bilinear", "mean": (0.485, 0.456, 0.406),
          "std": (0.229, 0.224, 0.225), "crop_pct": 0.875, "crop_mode": "center"}
COMMON = {"input_size": (3, 224, 224), "mean": CONFIG["mean"], "std": CONFIG["std"]}


def timm_steps(config: dict, augment: str):
    """timm's own 8-bit transforms, as build_transforms made them before (the reference)."""
    common = dict(COMMON, interpolation=config["interpolation"])
    if augment == "none":
        return create_transform(**common, is_training=False, crop_pct=config["crop_pct"], crop_mode="center",
                                use_prefetcher=True)
    return create_transform(**common, is_training=True, use_prefetcher=True, **AUGMENT_PRESETS[augment])


def photo(height=256, width=341, seed=0) -> Image.Image:
    """A photo-like picture: smooth shapes plus noise (resizing rounds differently on noise alone)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(x / 17 + c) * np.cos(y / 23 - c) for c in range(3)], axis=2)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def same_draws(transform, picture, seed):
    random.seed(seed)
    torch.manual_seed(seed)
    return transform(picture)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_the_training_crops_are_timms_crops_and_batch_without_a_strided_copy(interpolation):
    config = dict(CONFIG, interpolation=interpolation)
    train_tf, _ = build_transforms(config, "light", uint8=True)
    reference = timm_steps(config, "light")
    differences = []
    for seed in range(24):
        picture = photo(seed=seed)
        ours, theirs = same_draws(train_tf, picture, seed), same_draws(reference, picture, seed)
        assert ours.dtype == torch.uint8 and ours.shape == theirs.shape == (3, 224, 224)
        assert ours.is_contiguous()  # timm's ends in a channels-first view, which batching copies byte by byte
        differences.append((ours.int() - theirs.int()).abs())
    assert torch.stack(differences).max() == 0  # the same pixels (the stored outputs and the int8 check rely on it)


def coordinates(height=256, width=341) -> Image.Image:
    """Each pixel says where it is: red = column / 4, green = row / 4 (a crop's corners tell its place and size)."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x // 2 % 256, y // 2 % 256, np.full_like(x, 128)], axis=2).astype(np.uint8)
    return Image.fromarray(pixels[:, :, :3])


def crop_of(out: torch.Tensor) -> tuple[float, bool]:
    """The fraction of the coordinates picture a training crop covers, and whether it was flipped."""
    red, green = out[0].float(), out[1].float()
    flipped = bool(red[:, 5].mean() > red[:, -6].mean())  # columns grow to the right, unless flipped
    width = 2 * abs(float(red[:, -3].mean() - red[:, 2].mean())) * 224 / 219
    height = 2 * float(green[-3].mean() - green[2].mean()) * 224 / 219
    return width * height / (256 * 341), flipped


def test_the_training_crops_keep_the_configured_scale_and_flip():
    train_tf, _ = build_transforms(CONFIG, "light", uint8=True)
    reference = timm_steps(CONFIG, "light")
    low, high = AUGMENT_PRESETS["light"]["scale"]
    picture = coordinates(256, 341)
    fractions, flips = [], 0
    for seed in range(200):
        out = same_draws(train_tf, picture, seed)
        assert out.is_contiguous()
        fraction, flipped = crop_of(out)
        theirs, their_flip = crop_of(same_draws(reference, picture, seed))
        assert flipped == their_flip and math.isclose(fraction, theirs, rel_tol=0.02)  # timm's crop and flip
        fractions.append(fraction)
        flips += flipped
    fractions = np.array(fractions)
    assert fractions.min() > low * 0.95 and fractions.max() < high * 1.03  # the preset's range, up to rounding
    assert fractions.max() - fractions.min() > 0.3  # and spread over it
    assert 70 <= flips <= 130  # half of 200, give or take 3 standard deviations


def test_evaluation_pixels_are_exactly_those_of_timms_steps(tmp_path):
    path = tmp_path / "generated.png"
    photo(300, 411, seed=3).save(path)
    _, eval_tf = build_transforms(CONFIG, "light", uint8=True)
    reference = timm_steps(CONFIG, "none")
    cache = ImageCache.for_data_config(CONFIG, root=tmp_path / "cache")
    first = cache.load(str(path))  # decoded, resized and stored
    again = cache.load(str(path))  # read back from the stored entry
    for picture in (first, again, Image.open(path).convert("RGB")):
        ours, theirs = eval_tf(picture), reference(picture)
        assert ours.is_contiguous()
        assert torch.equal(ours, theirs)
    dataset = ImageDataset([str(path)], [0], eval_tf, decode_size(CONFIG), cache)
    assert torch.equal(dataset[0][0], reference(first))


def test_a_batch_of_pictures_is_normalised_to_the_same_numbers():
    normalize = BatchNormalize(CONFIG["mean"], CONFIG["std"])
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    reference = (images.float() / 255 - torch.tensor(CONFIG["mean"]).view(1, 3, 1, 1)) / torch.tensor(
        CONFIG["std"]).view(1, 3, 1, 1)
    assert torch.allclose(normalize(images), reference, atol=1e-5)


def test_the_probe_runs_on_one_thread_and_keeps_its_verdict(monkeypatch):
    import engine.train.prefix as prefix

    g = torch.Generator().manual_seed(0)
    train_y, val_y = torch.randint(0, 3, (300,), generator=g), torch.randint(0, 3, (90,), generator=g)
    centres = torch.randn(3, 64, generator=g)
    train_x = torch.randn(300, 64, generator=g) + 0.3 * centres[train_y]
    val_x = torch.randn(90, 64, generator=g) + 0.3 * centres[val_y]
    noisy = val_x + 1.5 * torch.randn(90, 64, generator=g)
    seen = []
    step = torch.optim.LBFGS.step

    def counting(self, closure):
        seen.append(torch.get_num_threads())
        return step(self, closure)

    monkeypatch.setattr(torch.optim.LBFGS, "step", counting)
    before = torch.get_num_threads()
    full, worse = prefix.probe_accuracies(train_x, train_y, [val_x, noisy], val_y)
    assert seen == [1] and torch.get_num_threads() == before  # one thread, then the process's setting again
    assert full > 0.6 and full - worse > prefix.INT8_TOLERANCE  # noisier outputs are refused, as before
    again = prefix.probe_accuracies(train_x, train_y, [val_x, val_x], val_y)
    assert again == [full, full]  # the same outputs, the same verdict
