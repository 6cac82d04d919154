"""The data settings that decide how lab pictures become the model's 8-bit RGB pictures.

They live in ``RunConfig.data`` (config.toml), travel with a trained model inside its ``data_config["formats"]``
(model.json, exported bundles), and are part of every picture-cache key of a file they change. Their defaults leave
ordinary JPEG, PNG, BMP, GIF, WebP and 8-bit TIFF pictures exactly as they were.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["FRAMES", "WINDOWS", "SCOPES", "FormatSettings", "activate", "active", "channel_indices",
           "settings_problem"]

FRAMES = ("middle", "all")  # multi-frame DICOM (and stacks in a TIFF): the middle frame, or every frame a picture
WINDOWS = ("file", "auto")  # DICOM: the window stored in the file (automatic when none), or always automatic
SCOPES = ("picture", "dataset")  # contrast stretch of 16-bit and float pictures: each its own, or the dataset's


@dataclass(frozen=True)
class FormatSettings:
    frames: str = "middle"
    window: str = "file"
    stretch: str = "picture"
    stretch_low: float = 0.5  # percentiles of the values mapped to black and to white
    stretch_high: float = 99.5
    # "rgb": pictures with more than three channels show their first three as red, green and blue; "3,2,1": those
    # channels (counted from 1) as red, green and blue; "all": every channel goes into the model.
    channels: str = "rgb"
    tile: int = 512  # slides: tiles of tile x tile pixels
    magnification: float = 0.0  # slides: the objective magnification to cut tiles at; 0 = the full resolution
    tissue: float = 0.5  # slides: the fraction of a tile that must be tissue for the tile to be kept
    # Resolved by the scan when stretch == "dataset": per source channel (low, high), the dataset's percentiles.
    stretch_range: tuple[tuple[float, float], ...] = ()

    @classmethod
    def from_data(cls, data: Any) -> "FormatSettings":
        """From a ``DataConfig`` (or anything with its field names)."""
        return cls(frames=data.dicom_frames, window=data.dicom_window, stretch=data.stretch,
                   stretch_low=float(data.stretch_low), stretch_high=float(data.stretch_high),
                   channels=str(data.channels), tile=int(data.slide_tile),
                   magnification=float(data.slide_magnification), tissue=float(data.slide_tissue))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "FormatSettings":
        """From ``to_dict``'s output (a model's ``data_config["formats"]``); unknown keys are ignored."""
        if not values:
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in known}
        if "stretch_range" in kwargs:
            kwargs["stretch_range"] = tuple((float(lo), float(hi)) for lo, hi in kwargs["stretch_range"])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["stretch_range"] = [list(pair) for pair in self.stretch_range]
        return out

    def key(self) -> str:
        """A short text that changes whenever a setting that changes a decoded picture changes (for cache keys)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def all_channels(self) -> bool:
        return self.channels.strip().lower() == "all"

    def words(self) -> str:
        """The settings in words, for the scan's lines and the model card."""
        stretch = (f"contrast stretched from the {self.stretch_low:g} to the {self.stretch_high:g} percentile "
                   f"{'of each picture' if self.stretch == 'picture' else 'of the whole dataset'}")
        channels = {"rgb": "the first three channels as red, green and blue",
                    "all": "every channel into the model"}.get(self.channels.strip().lower(),
                                                                f"channels {self.channels} as red, green and blue")
        window = "the window stored in each file" if self.window == "file" else "an automatic window"
        return (f"16-bit and float pictures {stretch}; DICOM with {window}, {self.frames} frame"
                f"{'s' if self.frames == 'all' else ''}; {channels}; slides cut into {self.tile} px tiles at "
                f"{'full resolution' if self.magnification <= 0 else f'{self.magnification:g}x'}, keeping tiles "
                f"with at least {self.tissue:.0%} tissue")


def channel_indices(text: str) -> tuple[int, ...] | None:
    """``"3,2,1"`` as zero-based indices (2, 1, 0); None for "rgb" or "all"; ValueError when malformed."""
    text = text.strip().lower()
    if text in ("rgb", "all", ""):
        return None
    if not re.fullmatch(r"\d+(\s*,\s*\d+){0,2}", text):
        raise ValueError(text)
    values = tuple(int(v) - 1 for v in text.split(","))
    if any(v < 0 for v in values) or len(values) == 2:
        raise ValueError(text)
    return values


def settings_problem(data: Any) -> str | None:
    """The sentence for the first data setting of ``data`` (a DataConfig) that cannot work, or None."""
    if data.dicom_frames not in FRAMES:
        return f"Unknown DICOM frames setting '{data.dicom_frames}': choose middle or all."
    if data.dicom_window not in WINDOWS:
        return f"Unknown DICOM window setting '{data.dicom_window}': choose file (the file's own) or auto."
    if data.stretch not in SCOPES:
        return f"Unknown stretch setting '{data.stretch}': choose picture or dataset."
    if not 0 <= data.stretch_low < data.stretch_high <= 100:
        return ("The stretch percentiles must satisfy 0 <= low < high <= 100 "
                f"(got {data.stretch_low:g} and {data.stretch_high:g}).")
    try:
        channel_indices(str(data.channels))
    except ValueError:
        return (f"The channels setting '{data.channels}' is not understood: write rgb, all, one channel number "
                "(shown in grey) or three channel numbers such as 3,2,1 (red, green, blue; counted from 1).")
    if not 32 <= data.slide_tile <= 4096:
        return f"The slide tile size must be between 32 and 4096 pixels (got {data.slide_tile})."
    if data.slide_magnification < 0:
        return "The slide magnification cannot be negative (0 means the full resolution)."
    if not 0 <= data.slide_tissue <= 1:
        return f"The slide tissue fraction must be between 0 and 1 (got {data.slide_tissue:g})."
    return None


# The settings this process decodes with when a caller names none (thumbnails, previews, the health report):
# set by the scan and by loading a model, so that every view of a picture matches what the model sees.
_lock = threading.Lock()
_active = FormatSettings()


def activate(settings: FormatSettings) -> None:
    global _active
    with _lock:
        _active = settings


def active() -> FormatSettings:
    return _active


_FIELDS = {"dicom_frames": str, "dicom_window": str, "stretch": str, "stretch_low": float, "stretch_high": float,
           "channels": str, "slide_tile": int, "slide_magnification": float, "slide_tissue": float}


def from_pairs(pairs: list[str] | None, base: Any = None) -> FormatSettings:
    """Settings from the command line's ``--data-setting NAME=VALUE`` (the [data] names of config.toml) on top of
    ``base`` (a DataConfig; default: the defaults). Raises engine.errors.ConfigError with a sentence."""
    from types import SimpleNamespace

    from engine.errors import ConfigError

    values: dict[str, Any] = {}
    for pair in pairs or []:
        name, sep, text = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in _FIELDS:
            raise ConfigError(f"'{pair}' is not a data setting: write NAME=VALUE with NAME one of "
                              f"{', '.join(_FIELDS)}.")
        try:
            values[name] = _FIELDS[name](text.strip())
        except ValueError:
            raise ConfigError(f"The data setting {name} must be a {'whole number' if _FIELDS[name] is int else 'number'}"
                              f", not '{text}'.") from None
    defaults = FormatSettings()
    current = {"dicom_frames": defaults.frames, "dicom_window": defaults.window, "stretch": defaults.stretch,
               "stretch_low": defaults.stretch_low, "stretch_high": defaults.stretch_high,
               "channels": defaults.channels, "slide_tile": defaults.tile,
               "slide_magnification": defaults.magnification, "slide_tissue": defaults.tissue}
    if base is not None:
        current = {name: getattr(base, name) for name in _FIELDS}
    data = SimpleNamespace(**{**current, **values})
    problem = settings_problem(data)
    if problem:
        raise ConfigError(problem)
    return FormatSettings.from_data(data)


def card_lines(data_config: Mapping[str, Any]) -> list[str]:
    """The model card's line on how pictures must be read (empty for a model of ordinary pictures)."""
    stored = data_config.get("formats") if data_config else None
    if not stored:
        return []
    settings = FormatSettings.from_dict(stored)
    line = (f"- Reading pictures (data settings, recorded in model.json's data_config.formats and applied to new "
            f"pictures): {settings.words()}; channels setting `{settings.channels}`.")
    if settings.stretch == "dataset" and settings.stretch_range:
        line += " The training dataset's contrast range per channel: " + "; ".join(
            f"{lo:.6g} to {hi:.6g}" for lo, hi in settings.stretch_range) + "."
    return [line]
