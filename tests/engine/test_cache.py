"""The decoded-image cache: same pictures as decoding the file, reused across runs, changed files noticed, bounded."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from engine.data import cache as cache_module
from engine.data.cache import CACHE_ENV, ImageCache, cache_root, working_side
from engine.data.images import load_rgb
from engine.data.loaders import ImageDataset, build_transforms, decode_size

# MobileNetV2's preprocessing: resize the shorter side to 256, centre-crop 224.
DATA_CONFIG = {"input_size": (3, 224, 224), "interpolation": "bilinear", "mean": (0.485, 0.456, 0.406),
               "std": (0.229, 0.224, 0.225), "crop_pct": 0.875, "crop_mode": "center"}


def photo(path, size=(600, 400), seed=0, orientation=None, quality=90):
    """A JPEG with some structure (a gradient and noise), optionally with an EXIF orientation tag."""
    rng = np.random.default_rng(seed)
    w, h = size
    x = np.linspace(0, 255, w)[None, :, None]
    y = np.linspace(0, 255, h)[:, None, None]
    pixels = np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2) + rng.normal(0, 20, (h, w, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(path, quality=quality, exif=exif.tobytes())
    return path


@pytest.fixture
def cache(tmp_path):
    return ImageCache.for_data_config(DATA_CONFIG, root=tmp_path / "cache")


def test_working_size_is_the_resize_before_the_centre_crop():
    assert working_side(DATA_CONFIG) == 256
    assert working_side({"input_size": (3, 160, 160), "crop_pct": 0.95}) == 168


def test_the_evaluation_transform_sees_exactly_the_pixels_of_the_file(tmp_path, cache):
    _, eval_tf = build_transforms(DATA_CONFIG, "none")
    for i, size in enumerate([(600, 400), (333, 500), (120, 90)]):  # larger and smaller than the working size
        path = photo(tmp_path / f"p{i}.jpg", size, seed=i)
        direct = eval_tf(load_rgb(path, draft_size=decode_size(DATA_CONFIG)))
        first = eval_tf(cache.load(path))  # decoded, resized and stored
        again = eval_tf(cache.load(path))  # read back from the memory-mapped entry
        assert torch.equal(first, direct) and torch.equal(again, direct)
    stored = [np.load(e, mmap_mode="r") for e, _, _ in cache.entries()]
    assert sorted(s.shape for s in stored) == [(90, 120, 3), (256, 384, 3), (384, 256, 3)]
    assert all(s.dtype == np.uint8 for s in stored)


def test_pictures_are_stored_upright(tmp_path, cache):
    path = photo(tmp_path / "rotated.jpg", (600, 400), orientation=6)  # "rotate 90 degrees" in EXIF
    image = cache.load(path)
    assert image.size == (256, 384)  # portrait, as the camera held it
    assert cache.get(path).size == (256, 384)


def test_entries_are_reused_by_a_later_run_without_decoding(tmp_path, cache, monkeypatch):
    path = photo(tmp_path / "a.jpg")
    expected = np.asarray(cache.load(path))
    later = ImageCache.for_data_config(DATA_CONFIG, root=cache.root)

    def no_decoding(*args, **kwargs):
        raise AssertionError("the picture was decoded again")

    monkeypatch.setattr(cache_module, "load_rgb", no_decoding)
    assert np.array_equal(np.asarray(later.load(path)), expected)
    assert later.prepare([path]).cached == 1


def test_a_changed_file_is_decoded_again(tmp_path, cache):
    path = tmp_path / "changing.jpg"
    photo(path, seed=1)
    old = np.asarray(cache.load(path))
    photo(path, (500, 500), seed=2)  # same name, new picture
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 1_000_000))
    assert cache.get(path) is None  # the old entry no longer answers for this file
    new = np.asarray(cache.load(path))
    assert new.shape == (256, 256, 3) != old.shape
    assert np.array_equal(new, np.asarray(cache.resize(load_rgb(path, draft_size=(256, 256)))))


def test_a_touched_file_with_the_same_size_is_noticed(tmp_path, cache):
    path = photo(tmp_path / "same-size.jpg")
    cache.load(path)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # e.g. edited in place, same length
    assert cache.get(path) is None


def test_a_damaged_entry_is_decoded_again(tmp_path, cache):
    path = photo(tmp_path / "a.jpg")
    expected = np.asarray(cache.load(path))
    (entry, size, _), = cache.entries()
    with open(entry, "r+b") as f:
        f.truncate(size // 2)  # as after a power cut in the middle of a write
    assert cache.get(path) is None
    assert np.array_equal(np.asarray(cache.load(path)), expected)


def test_the_size_limit_removes_least_recently_used_pictures_first(tmp_path):
    paths = [photo(tmp_path / f"{i}.jpg", (400, 300), seed=i) for i in range(5)]
    each = 256 * 341 * 3 + 128
    cache = ImageCache.for_data_config(DATA_CONFIG, root=tmp_path / "cache", max_bytes=3 * each + 10)
    for i, p in enumerate(paths[:3]):
        cache.load(p)
        entry = cache.entry_path(cache.key(p))
        os.utime(entry, ns=(i * 10**9, i * 10**9))  # used at t=0, 1, 2 s
    plan = ImageCache.for_data_config(DATA_CONFIG, root=cache.root, max_bytes=cache.max_bytes) \
        .prepare([paths[2], paths[3]], expected_bytes_each=each)
    assert plan.cached == 1 and plan.to_add == 1 and plan.uncached == 0
    left = [p for p in paths[:3] if cache.get(p) is not None]
    assert left == [paths[1], paths[2]]  # the oldest (paths[0]) made room; the run's own picture stayed


def test_pictures_beyond_the_limit_are_not_cached(tmp_path):
    paths = [photo(tmp_path / f"{i}.jpg", (400, 300), seed=i) for i in range(3)]
    each = 256 * 341 * 3 + 128
    cache = ImageCache.for_data_config(DATA_CONFIG, root=tmp_path / "cache", max_bytes=2 * each)
    plan = cache.prepare(paths, expected_bytes_each=each)
    assert (plan.to_add, plan.uncached) == (2, 1)
    assert "do not fit" in plan.message()
    for p in paths:
        cache.load(p)
    assert len(cache.entries()) == 2 and cache.size_bytes() <= 2 * each


def test_an_unusable_cache_folder_only_slows_down(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    cache = ImageCache.for_data_config(DATA_CONFIG, root=blocker / "images")
    path = photo(tmp_path / "a.jpg")
    plan = cache.prepare([path])
    assert not plan.writable and "cannot be written" in plan.message()
    assert cache.load(path).size == (384, 256)


def test_the_dataset_gives_the_same_tensors_with_and_without_the_cache(tmp_path, cache):
    paths = [str(photo(tmp_path / f"{i}.jpg", (640, 480), seed=i)) for i in range(3)]
    _, eval_tf = build_transforms(DATA_CONFIG, "none")
    plain = ImageDataset(paths, [0, 1, 2], eval_tf, decode_size(DATA_CONFIG))
    cached = ImageDataset(paths, [0, 1, 2], eval_tf, decode_size(DATA_CONFIG), cache)
    for _ in range(2):  # the first pass fills the cache, the second reads it
        for i in range(3):
            (a, la), (b, lb) = plain[i], cached[i]
            assert la == lb and torch.allclose(a, b)


def test_the_cache_folder_can_be_chosen_with_an_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "elsewhere"))
    assert cache_root() == tmp_path / "elsewhere"
    assert ImageCache(256).root == tmp_path / "elsewhere"
    monkeypatch.delenv(CACHE_ENV)
    assert cache_root().name == "images" and "Transfer Studio" in str(cache_root())
