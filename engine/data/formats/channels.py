"""From any number of channels of any depth to the 8-bit picture the model sees: percentile contrast stretch
(never a clip at 255) and the choice of channels shown as red, green and blue.

Hand-written with numpy: a percentile stretch and a channel pick are a few lines, not worth another dependency.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from engine.data.formats.settings import FormatSettings, channel_indices

__all__ = ["SAMPLE_PIXELS", "percentile_range", "stretch_to_uint8", "to_picture"]

SAMPLE_PIXELS = 1_000_000  # percentiles are taken on at most about this many pixels per channel (a regular grid)


class ChannelError(ValueError):
    """A channel setting that does not fit a picture; the message is one plain sentence."""


def _sample(channel: np.ndarray) -> np.ndarray:
    step = max(1, int(np.ceil(np.sqrt(channel.size / SAMPLE_PIXELS))))
    values = channel[::step, ::step].astype(np.float64, copy=False).ravel()
    return values[np.isfinite(values)]


def percentile_range(channel: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """The values at the ``low`` and ``high`` percentiles of one channel (NaN and infinities ignored)."""
    values = _sample(channel)
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [low, high])
    return float(lo), float(hi)


def stretch_to_uint8(channel: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``lo`` to 0 and ``hi`` to 255 linearly; a flat picture (hi <= lo) becomes mid grey where it has values."""
    values = channel.astype(np.float32, copy=False)
    if not hi > lo:
        out = np.where(np.isfinite(values), 128.0, 0.0)
    else:
        out = (values - np.float32(lo)) * np.float32(255.0 / (hi - lo))
        out = np.nan_to_num(out, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def needs_stretch(pixels: np.ndarray) -> bool:
    """16-bit, 32-bit and float pictures are stretched; 8-bit ones are shown as stored."""
    return pixels.dtype != np.uint8 and pixels.dtype != np.bool_


def channel_ranges(pixels: np.ndarray, settings: FormatSettings) -> list[tuple[float, float]]:
    """(low, high) per channel of an HxWxC picture: the dataset's when resolved for this many channels, else its own."""
    n = pixels.shape[2]
    if settings.stretch == "dataset" and len(settings.stretch_range) == n:
        return [tuple(pair) for pair in settings.stretch_range]
    return [percentile_range(pixels[..., c], settings.stretch_low, settings.stretch_high) for c in range(n)]


def pick_channels(n: int, settings: FormatSettings) -> tuple[int, ...]:
    """Which of ``n`` channels become red, green and blue (one index: a grey picture)."""
    chosen = channel_indices(settings.channels)
    if chosen is None:
        if n == 2:  # two stains: red and green, blue left dark (the usual two-colour overlay)
            return (0, 1, -1)
        return tuple(range(min(3, n))) if n >= 3 else (0,)
    missing = [c + 1 for c in chosen if c >= n]
    if missing:
        raise ChannelError(f"The picture has {n} channel{'s' if n != 1 else ''}, but the channels setting asks for "
                           f"channel {missing[0]}: choose channels between 1 and {n}.")
    return chosen


def to_picture(pixels: np.ndarray, settings: FormatSettings, *, stretch: bool | None = None) -> Image.Image:
    """An HxW or HxWxC array (any dtype) as an 8-bit RGB picture, stretched when it is not 8-bit."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.dtype == np.bool_:
        pixels = pixels.astype(np.uint8) * 255
    stretch = needs_stretch(pixels) if stretch is None else stretch
    order = pick_channels(pixels.shape[2], settings)
    used = sorted({c for c in order if c >= 0})
    if stretch:
        ranges = channel_ranges(pixels, settings)
        planes = {c: stretch_to_uint8(pixels[..., c], *ranges[c]) for c in used}
    else:
        planes = {c: np.ascontiguousarray(pixels[..., c]).astype(np.uint8, copy=False) for c in used}
    if len(order) == 1:
        return Image.fromarray(planes[order[0]]).convert("RGB")
    dark = np.zeros(pixels.shape[:2], np.uint8)
    return Image.fromarray(np.dstack([planes[c] if c >= 0 else dark for c in order]))


def to_array(pixels: np.ndarray, settings: FormatSettings, *, stretch: bool | None = None) -> np.ndarray:
    """Every channel of an HxW or HxWxC array as HxWxC uint8 (each stretched like ``to_picture``'s): the model's
    input when the channels setting is "all"."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.dtype == np.bool_:
        pixels = pixels.astype(np.uint8) * 255
    stretch = needs_stretch(pixels) if stretch is None else stretch
    if not stretch:
        return np.ascontiguousarray(pixels.astype(np.uint8, copy=False))
    ranges = channel_ranges(pixels, settings)
    return np.dstack([stretch_to_uint8(pixels[..., c], *ranges[c]) for c in range(pixels.shape[2])])
