"""Whole-slide and very large pictures with OpenSlide (its binary wheel): cut into tiles at a chosen magnification,
background tiles skipped by a tissue test on a low-resolution view, each tile a picture of its own.

A tile is named ``SLIDE::tile-X-Y`` (X, Y: its top-left corner in full-resolution pixels); its size and level follow
from the data settings, so the same name decodes the same pixels wherever the settings travel (a run, a bundle).

The tissue test (hand-written with numpy; scikit-image is not installed): a pixel is tissue when it is coloured
(HSV saturation above Otsu's threshold of the slide's saturation, and at least 0.07) or clearly darker than the glass
(grey level below 220 of 255). A tile is kept when at least ``tissue`` of it is tissue.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from engine.data.formats.settings import FormatSettings

__all__ = ["SLIDE_EXTENSIONS", "SlideGrid", "is_slide", "read_tile", "slide_grid", "tile_of", "tile_path"]

# The formats OpenSlide reads (besides pyramidal TIFF, which engine.data.formats.tiff sends here).
SLIDE_EXTENSIONS = frozenset({".svs", ".ndpi", ".scn", ".mrxs", ".vms", ".vmu", ".bif", ".svslide", ".tif",
                              ".tiff"})
_VENDOR_ONLY = frozenset({".svs", ".ndpi", ".scn", ".mrxs", ".vms", ".vmu", ".bif", ".svslide"})
_TILE = re.compile(r"^tile-(\d+)-(\d+)$")
_THUMB_CELLS = 8  # each tile is judged on about 8 x 8 pixels of the low-resolution view
_OPEN = 8  # slides kept open per process


def is_slide_suffix(suffix: str) -> bool:
    return suffix.lower() in _VENDOR_ONLY


def tile_path(slide: str, x: int, y: int) -> str:
    return f"{slide}::tile-{x}-{y}"


def tile_of(part: str) -> tuple[int, int] | None:
    found = _TILE.match(part)
    return (int(found.group(1)), int(found.group(2))) if found else None


_lock = threading.Lock()
_open: "OrderedDict[tuple[str, int, int], object]" = OrderedDict()


def open_slide(path: str | os.PathLike):
    """An OpenSlide for the file, kept open (a few per process) while the file is unchanged."""
    import openslide

    real = os.path.abspath(path)
    # The process id too: a data-loader process forked from this one must not share its open files' positions.
    key = (real, os.stat(real).st_mtime_ns, os.getpid())
    with _lock:
        slide = _open.get(key)
        if slide is not None:
            _open.move_to_end(key)
            return slide
    slide = openslide.OpenSlide(real)
    with _lock:
        _open[key] = slide
        while len(_open) > _OPEN:  # not closed here: another thread may be reading it; freed when unused
            _open.popitem(last=False)
    return slide


def is_slide(path: str | os.PathLike, pixels: int | None = None, levels: int = 1, max_pixels: int = 0) -> bool:
    """A vendor slide file, or a TIFF that OpenSlide reads that is pyramidal or too large to open whole."""
    if is_slide_suffix(Path(path).suffix):
        return True
    if levels <= 1 and (pixels is None or pixels <= max_pixels):
        return False
    import openslide

    try:
        return openslide.OpenSlide.detect_format(os.fspath(path)) is not None
    except Exception:
        return False


@dataclass(frozen=True)
class SlideGrid:
    """Where a slide's tiles are, at the settings' magnification."""

    level: int  # the pyramid level read
    scale: float  # full-resolution pixels per tile pixel
    step: int  # a tile's side in full-resolution pixels
    columns: int
    rows: int
    kept: tuple[tuple[int, int], ...]  # (column, row) of the tiles with tissue
    magnification: float | None  # the slide's objective power, when it says

    @property
    def background(self) -> int:
        return self.columns * self.rows - len(self.kept)


class SlideError(ValueError):
    """A slide that cannot be tiled; the message is one plain sentence."""


def _scale(slide, settings: FormatSettings) -> tuple[float, float | None]:
    power = slide.properties.get("openslide.objective-power")
    objective = float(power) if power else None
    if settings.magnification <= 0:
        return 1.0, objective
    if objective is None:
        raise SlideError(f"The slide does not say at which magnification it was scanned, so it cannot be cut at "
                         f"{settings.magnification:g}x: set the slide magnification to 0 (full resolution).")
    if settings.magnification > objective:
        raise SlideError(f"The slide was scanned at {objective:g}x; tiles at {settings.magnification:g}x would be "
                         f"enlarged: choose {objective:g}x or less.")
    return objective / settings.magnification, objective


def slide_grid(path: str | os.PathLike, settings: FormatSettings) -> SlideGrid:
    """The tile grid of a slide and the tiles that hold tissue."""
    slide = open_slide(path)
    scale, objective = _scale(slide, settings)
    width, height = slide.dimensions
    step = max(1, int(round(settings.tile * scale)))
    columns, rows = width // step, height // step
    if columns == 0 or rows == 0:
        raise SlideError(f"The slide ({width} x {height} pixels at full resolution) is smaller than one tile "
                         f"({step} x {step}): choose a smaller tile size or a higher magnification.")
    thumb_w, thumb_h = columns * _THUMB_CELLS, rows * _THUMB_CELLS
    thumb = slide.get_thumbnail((max(1, int(thumb_w * width / (columns * step))),
                                 max(1, int(thumb_h * height / (rows * step)))))
    mask = tissue_mask(np.asarray(_on_white(thumb)))
    kept = []
    th, tw = mask.shape
    for r in range(rows):
        for c in range(columns):
            y0, y1 = int(r * step * th / height), int((r + 1) * step * th / height)
            x0, x1 = int(c * step * tw / width), int((c + 1) * step * tw / width)
            cell = mask[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
            if cell.size and float(cell.mean()) >= settings.tissue:
                kept.append((c, r))
    level = slide.get_best_level_for_downsample(scale)
    return SlideGrid(level, scale, step, columns, rows, tuple(kept), objective)


def read_tile(path: str | os.PathLike, x: int, y: int, settings: FormatSettings) -> Image.Image:
    """The tile whose top-left corner is (x, y) at full resolution, as settings.tile x settings.tile RGB pixels."""
    slide = open_slide(path)
    scale, _ = _scale(slide, settings)
    step = max(1, int(round(settings.tile * scale)))
    width, height = slide.dimensions
    if x < 0 or y < 0 or x + step > width or y + step > height:
        raise SlideError("This tile lies outside the slide (the tile size or magnification changed since the scan):"
                         " scan the data again.")
    level = slide.get_best_level_for_downsample(scale)
    down = float(slide.level_downsamples[level])
    size = max(1, int(round(step / down)))
    region = _on_white(slide.read_region((x, y), level, (size, size)))
    if region.size != (settings.tile, settings.tile):
        region = region.resize((settings.tile, settings.tile), Image.Resampling.BILINEAR)
    return region


def _on_white(image: Image.Image) -> Image.Image:
    """OpenSlide's RGBA (transparent outside the scanned area) composited on white, as glass looks."""
    if image.mode != "RGBA":
        return image.convert("RGB")
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, image).convert("RGB")


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1] (hand-written: scikit-image is not installed)."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 1.0
    centres = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(hist)
    weight1 = total - weight0
    mean0 = np.cumsum(hist * centres) / np.maximum(weight0, 1e-12)
    mean1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(weight1, 1e-12)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return float(edges[int(best[len(best) // 2]) + 1])  # values above it are the upper class (a plateau: its middle)


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """True where an HxWx3 uint8 view of a slide shows tissue (see the module's note)."""
    values = rgb.astype(np.float32) / 255.0
    top = values.max(axis=2)
    saturation = np.where(top > 0, (top - values.min(axis=2)) / np.maximum(top, 1e-6), 0.0)
    threshold = max(otsu_threshold(saturation), 0.07)
    grey = rgb.astype(np.float32).mean(axis=2)
    return (saturation > threshold) | (grey < 220.0)


# --- one answer per slide -------------------------------------------------------------------------------------


# Viridis at nine points (matplotlib's table, sampled): the heat map's colours, colour-blind safe.
_VIRIDIS = np.array([[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
                     [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]], dtype=np.float32)


def viridis(values: np.ndarray) -> np.ndarray:
    """HxW values in [0, 1] (NaN: background, shown light grey) as HxWx3 uint8 viridis colours."""
    v = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0) * (len(_VIRIDIS) - 1)
    low = np.floor(v).astype(int)
    high = np.minimum(low + 1, len(_VIRIDIS) - 1)
    frac = (v - low)[..., None]
    out = _VIRIDIS[low] * (1 - frac) + _VIRIDIS[high] * frac
    out[np.isnan(values)] = (235, 235, 235)
    return np.rint(out).astype(np.uint8)


def score_grid(slide: str | os.PathLike, tiles: list[tuple[int, int, float]], settings: FormatSettings
               ) -> np.ndarray:
    """A rows x columns float32 array of tile scores ((x, y, score) per tile; NaN where no tile was scored)."""
    grid = slide_grid(slide, settings)
    out = np.full((grid.rows, grid.columns), np.nan, dtype=np.float32)
    for x, y, score in tiles:
        c, r = x // grid.step, y // grid.step
        if 0 <= r < grid.rows and 0 <= c < grid.columns:
            out[r, c] = score
    return out


def slide_thumbnail(path: str | os.PathLike, size: int) -> Image.Image:
    """The whole slide, at most ``size`` pixels on its longer side, RGB (glass shown white), from the slide's own
    lowest-resolution level (OpenSlide's thumbnail: the full-resolution level is never read whole)."""
    return _on_white(open_slide(path).get_thumbnail((size, size)))


def heat_map_picture(scores: np.ndarray, cell: int = 16) -> Image.Image:
    """The score grid as a picture (each tile a cell x cell square), viridis, background light grey."""
    colours = viridis(scores)
    return Image.fromarray(colours).resize((scores.shape[1] * cell, scores.shape[0] * cell), Image.Resampling.NEAREST)
