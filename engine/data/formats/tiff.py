"""TIFF pictures with tifffile: 16-bit, 32-bit and float pictures contrast-stretched by percentiles, any number of
channels (fluorescence, multispectral) mapped to red, green and blue, stacks shown by their middle plane.

Ordinary 8-bit RGB, RGBA and grey TIFFs are left to Pillow, as before (EXIF orientation, transparency on white).
Pyramidal TIFFs (and tiled ones too large to open whole) are slides: engine.data.formats.slide cuts them into tiles.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from engine.data.formats.channels import to_picture
from engine.data.formats.settings import FormatSettings

__all__ = ["TIFF_EXTENSIONS", "TiffInfo", "describe_tiff", "read_tiff"]

TIFF_EXTENSIONS = frozenset({".tif", ".tiff"})


class TiffInfo:
    """What a TIFF holds, read from its header: how to open it and how the scan names it."""

    def __init__(self, dtype: np.dtype, shape: tuple[int, ...], axes: str, levels: int, tiled: bool,
                 extrasamples: tuple[int, ...]):
        self.dtype, self.shape, self.axes, self.levels, self.tiled = np.dtype(dtype), shape, axes, levels, tiled
        self.extrasamples = extrasamples

    @property
    def channels(self) -> int:
        for axis in "SC":
            if axis in self.axes:
                return int(self.shape[self.axes.index(axis)])
        return 1

    @property
    def pixels(self) -> int:
        return int(self.shape[self.axes.index("Y")]) * int(self.shape[self.axes.index("X")])

    @property
    def ordinary(self) -> bool:
        """An 8-bit grey, RGB or RGB-with-alpha picture that Pillow opens exactly as before."""
        if self.dtype != np.uint8 or self.axes not in ("YX", "YXS"):
            return False
        return self.channels in (1, 3) or (self.channels == 4 and bool(self.extrasamples))

    def label(self) -> str:
        """How the scan counts it: 'TIFF 16-bit', 'TIFF float', 'TIFF 4 channels', ..."""
        if self.ordinary:
            return "TIFF"
        depth = ("float" if self.dtype.kind == "f" else f"{self.dtype.itemsize * 8}-bit")
        extra = f", {self.channels} channels" if self.channels not in (1, 3) else ""
        return f"TIFF {depth}{extra}"


def describe_tiff(path: str | os.PathLike) -> TiffInfo:
    """The header of a TIFF's first series; raises tifffile's errors (the caller turns them into sentences)."""
    import tifffile

    with tifffile.TiffFile(os.fspath(path)) as tif:
        series = tif.series[0]
        page = series.pages[0] if series.pages else tif.pages[0]
        extrasamples = tuple(getattr(page, "extrasamples", ()) or ())
        return TiffInfo(series.dtype, tuple(series.shape), series.axes, len(series.levels),
                        bool(getattr(page, "is_tiled", False)), extrasamples)


def read_tiff(path: str | os.PathLike, settings: FormatSettings, info: TiffInfo | None = None) -> Image.Image:
    """A non-ordinary TIFF as an 8-bit RGB picture (the middle plane of stacks, channels last, stretched)."""
    import tifffile

    with tifffile.TiffFile(os.fspath(path)) as tif:
        series = tif.series[0]
        data = series.asarray(level=0) if len(series.levels) > 1 else series.asarray()
        axes = series.axes
    pixels = _plane(np.asarray(data), axes)
    return to_picture(pixels, settings)


def _plane(data: np.ndarray, axes: str) -> np.ndarray:
    """HxWxC from any tifffile axes ('YX', 'YXS', 'CYX', 'ZCYX', 'TZCYX', ...): other axes at their middle."""
    channel_axis = "S" if "S" in axes else ("C" if "C" in axes else None)
    index = []
    kept = []
    for i, axis in enumerate(axes):
        if axis in ("Y", "X") or axis == channel_axis:
            index.append(slice(None))
            kept.append(axis)
        else:
            index.append(data.shape[i] // 2)
    plane = data[tuple(index)]
    order = [kept.index("Y"), kept.index("X")] + ([kept.index(channel_axis)] if channel_axis else [])
    plane = np.transpose(plane, order)
    return plane if plane.ndim == 3 else plane[..., None]
