"""16-bit and float TIFFs contrast-stretched by percentiles (never clipped at 255), more than three channels mapped to
red, green and blue, and the picture cache, loaders and augmentation preview seeing exactly the same picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data import formats
from engine.data.formats import FormatSettings, inspect
from engine.data.images import check_image, load_rgb
from lab_pictures import narrow_uint16, write_tiff


@pytest.fixture(autouse=True)
def _default_settings():
    formats.activate(FormatSettings())
    yield
    formats.activate(FormatSettings())


def test_a_narrow_16_bit_tiff_is_stretched(tmp_path: Path):
    path = write_tiff(tmp_path / "narrow16.tif", narrow_uint16())  # 1000..1200 of 65535
    pixels = np.asarray(load_rgb(path))[..., 0]
    assert pixels.max() == 255 and pixels.min() == 0  # the whole 8-bit range is used
    assert pixels[20, 20] == 255  # the bright square is white, not the grey 4 a linear scale gives
    assert inspect(str(path)).label == "TIFF 16-bit"


def test_float_tiff_in_a_narrow_range_with_nan(tmp_path: Path):
    values = narrow_uint16().astype(np.float32) / 1e5  # 0.010 .. 0.012
    values[0, 0] = np.nan
    path = write_tiff(tmp_path / "float.tif", values)
    pixels = np.asarray(load_rgb(path))[..., 0]
    assert pixels[20, 20] == 255 and pixels[40, 60] < 140 and pixels[0, 0] == 0
    assert inspect(str(path)).label == "TIFF float"


def test_percentiles_are_a_setting(tmp_path: Path):
    path = write_tiff(tmp_path / "ramp.tif", np.tile(np.arange(1000, 1100, dtype=np.uint16), (10, 1)))
    wide = np.asarray(load_rgb(path, settings=FormatSettings(stretch_low=0, stretch_high=100)))[0, :, 0]
    tight = np.asarray(load_rgb(path, settings=FormatSettings(stretch_low=25, stretch_high=75)))[0, :, 0]
    assert wide[0] == 0 and wide[-1] == 255 and 0 < wide[25] < 255
    assert tight[24] == 0 and tight[75] == 255  # a quarter clipped at each end


def four_channels(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(100, 200, (40, 50, 4)).astype(np.uint16)
    for c in range(4):  # channel c lights up its own quarter of the width
        pixels[:, c * 12:(c + 1) * 12, c] = 3000
    return pixels


def test_four_channels_first_three_or_chosen_ones(tmp_path: Path):
    path = write_tiff(tmp_path / "four.tif", four_channels())
    assert inspect(str(path)).label == "TIFF 16-bit, 4 channels" and check_image(path) is None
    rgb = np.asarray(load_rgb(path))
    assert rgb[5, 5, 0] == 255 and rgb[5, 5, 1] < 128 and rgb[5, 41, :].max() < 128  # channel 4 not shown
    chosen = np.asarray(load_rgb(path, settings=FormatSettings(channels="4,2,1")))
    assert chosen[5, 41, 0] == 255 and chosen[5, 17, 1] == 255 and chosen[5, 5, 2] == 255
    single = np.asarray(load_rgb(path, settings=FormatSettings(channels="4")))
    assert (single[..., 0] == single[..., 1]).all() and single[5, 41, 0] == 255
    reason = check_image(path, settings=FormatSettings(channels="5,1,2"))
    assert reason == ("The picture has 4 channels, but the channels setting asks for channel 5: choose channels "
                      "between 1 and 4.")


def test_dataset_scope_uses_one_range_for_every_picture(tmp_path: Path):
    dim = write_tiff(tmp_path / "dim.tif", narrow_uint16(low=1000, span=200))
    bright = write_tiff(tmp_path / "bright.tif", narrow_uint16(low=3000, span=200))
    # each picture stretched on its own: both look alike
    assert abs(np.asarray(load_rgb(dim)).mean() - np.asarray(load_rgb(bright)).mean()) < 5
    settings = FormatSettings(stretch="dataset")
    settings = FormatSettings(stretch="dataset", stretch_range=formats.dataset_range([str(dim), str(bright)],
                                                                                     settings))
    assert len(settings.stretch_range) == 1
    assert np.asarray(load_rgb(dim, settings=settings)).mean() + 100 < np.asarray(load_rgb(bright,
                                                                                             settings=settings)).mean()


def test_8_bit_tiffs_are_read_as_before(tmp_path: Path):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    path = tmp_path / "plain.tif"
    Image.fromarray(rgb).save(path)
    assert (np.asarray(load_rgb(path)) == rgb).all()
    assert inspect(str(path)).label == "TIFF"


def test_the_cache_loaders_and_preview_see_the_models_picture(tmp_path: Path):
    from engine.data.cache import ImageCache
    from engine.data.loaders import IMAGENET_DEFAULTS, ImageDataset
    from engine.data.preview import augmented_views

    path = write_tiff(tmp_path / "four.tif", four_channels())
    settings = FormatSettings(channels="4,2,1")
    formats.activate(settings)
    cache = ImageCache(256, root=tmp_path / "cache")
    first = np.asarray(cache.load(path))
    assert (first == np.asarray(load_rgb(path, settings=settings))).all()
    assert (np.asarray(cache.get(path)) == first).all()  # stored and read back
    # other settings are another picture: another cache entry, never the stale one
    other = ImageCache(256, root=tmp_path / "cache", formats=FormatSettings())
    assert other.key(path) != cache.key(path) and other.get(path) is None
    dataset = ImageDataset([str(path)], [0], lambda image: np.asarray(image))
    assert (dataset[0][0] == first).all()
    views = augmented_views(str(path), "none", n=1, data_config={**IMAGENET_DEFAULTS, "input_size": (3, 40, 40),
                                                                 "crop_pct": 1.0})
    assert views[0][5, 38, 0] > 200  # channel 4 (lit at the right) shown red, as the model sees it
