"""Whole-slide pictures: a pyramidal TIFF cut into tiles at a chosen magnification, background tiles skipped, tiles
inheriting the slide's class and split, and prediction answering once per slide with a heat map of its tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.data import formats
from engine.data.formats import FormatSettings, inspect
from engine.data.formats.slide import otsu_threshold, slide_grid, tissue_mask
from engine.data.images import ImageError, check_image, load_rgb
from lab_pictures import write_slide


@pytest.fixture(autouse=True)
def _default_settings():
    formats.activate(FormatSettings())
    yield
    formats.activate(FormatSettings())


def test_tiles_with_tissue_only(tmp_path: Path):
    slide = write_slide(tmp_path / "slide.tiff")  # 2048 x 1536, tissue at x 400..1500, y 300..1100
    found = inspect(str(slide), FormatSettings(tile=256))
    assert found.label == "slide" and found.reason is None
    corners = {tuple(int(v) for v in p.rsplit("::tile-", 1)[1].split("-")) for p in found.parts}
    assert (512, 512) in corners and (0, 0) not in corners and (1792, 1280) not in corners
    assert found.background == 8 * 6 - len(found.parts)
    tile = np.asarray(load_rgb(f"{slide}::tile-512-512", settings=FormatSettings(tile=256)))
    assert tile.shape == (256, 256, 3) and abs(tile[..., 0].mean() - 170) < 10  # the tissue's colour
    # the slide itself is not one picture: a sentence says what to do
    with pytest.raises(ImageError, match="cuts it into tiles"):
        load_rgb(slide)


def test_the_tissue_fraction_decides(tmp_path: Path):
    slide = write_slide(tmp_path / "slide.tiff")
    strict = inspect(str(slide), FormatSettings(tile=256, tissue=1.0)).parts
    loose = inspect(str(slide), FormatSettings(tile=256, tissue=0.05)).parts
    assert len(strict) < len(loose)
    empty = write_slide(tmp_path / "glass.tiff", tissue=())
    found = inspect(str(empty), FormatSettings(tile=256))
    assert found.parts is None and "No tile of the slide holds enough tissue" in found.reason


def test_magnification_needs_the_slides_own(tmp_path: Path):
    slide = write_slide(tmp_path / "slide.tiff")
    found = inspect(str(slide), FormatSettings(tile=256, magnification=10))
    assert found.reason == ("The slide does not say at which magnification it was scanned, so it cannot be cut at "
                            "10x: set the slide magnification to 0 (full resolution).")


def test_magnification_reads_a_lower_level(tmp_path: Path, monkeypatch):
    slide = write_slide(tmp_path / "slide.tiff")
    from engine.data.formats import slide as slide_module

    real_open = slide_module.open_slide

    class Forty:
        def __init__(self, inner):
            self.inner = inner
            self.properties = {"openslide.objective-power": "40"}

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(slide_module, "open_slide", lambda path: Forty(real_open(path)))
    grid = slide_grid(slide, FormatSettings(tile=128, magnification=10))  # a quarter: level 2, 512 px per tile
    assert grid.level == 2 and grid.step == 512 and (grid.columns, grid.rows) == (4, 3)
    tile = load_rgb(f"{slide}::tile-512-512", settings=FormatSettings(tile=128, magnification=10))
    assert tile.size == (128, 128)


def test_tissue_test_on_colour_and_darkness():
    glass = np.full((20, 20, 3), 240, np.uint8)
    glass[5:15, 5:15] = (180, 70, 150)
    mask = tissue_mask(glass)
    assert mask[10, 10] and not mask[0, 0] and mask.sum() == 100
    assert 0.2 < otsu_threshold(np.r_[np.full(50, 0.1), np.full(50, 0.9)]) < 0.8


def test_a_damaged_slide_is_a_sentence(tmp_path: Path):
    path = tmp_path / "broken.svs"
    path.write_bytes(b"II*\x00" + b"\x00" * 64)
    reason = inspect(str(path)).reason
    assert reason and "slide" in reason.lower() and check_image(path) is not None
