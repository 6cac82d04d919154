"""Pictures as labs have them: one dispatcher from a file to the 8-bit RGB picture the model sees.

``open_picture(path, settings)`` reads DICOM (engine.data.formats.dicom), 16-bit, float and many-channel TIFF
(.tiff), and tiles of whole-slide pictures (.slide); ordinary JPEG, PNG, BMP, GIF, WebP and 8-bit TIFF files never
come here (engine.data.images.load_rgb keeps its own fast path for them). Every view of a picture -- the browser,
the preview, the health report, the picture cache, the augmentation preview, training, evaluation and prediction --
goes through engine.data.images.load_rgb and so through this one function, with the same settings.

Some files give several pictures: a slide gives its tissue tiles (``SLIDE::tile-X-Y``), a multi-frame DICOM read
with ``frames = "all"`` gives its frames (``FILE::frame-N``, N from 1). Such names are the samples' paths; the scan
makes them (``inspect``) and keeps every picture of one file in the same split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from engine.data.formats.settings import FormatSettings, activate, active, settings_problem

__all__ = ["EXTENSIONS", "FormatSettings", "Inspection", "activate", "active", "dataset_range", "expand",
           "inspect", "is_picture_file", "kind_of", "open_picture", "real_path", "settings_problem", "split_path"]

SEPARATOR = "::"
ORDINARY_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})
_DICOM = frozenset({".dcm", ".dicom", ".dic"})
_TIFF = frozenset({".tif", ".tiff"})
_SLIDE = frozenset({".svs", ".ndpi", ".scn", ".mrxs", ".vms", ".vmu", ".bif", ".svslide"})
# Every suffix a picture may have (extension-less files are pictures when they carry the DICOM preamble).
EXTENSIONS = ORDINARY_EXTENSIONS | _DICOM | _TIFF | _SLIDE
_ORDINARY_LABELS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF", ".webp": "WebP"}


def split_path(path: str | os.PathLike) -> tuple[str, str | None]:
    """("FILE", "tile-X-Y") for a tile or frame name, (path, None) for a plain file."""
    text = os.fspath(path)
    head, sep, part = text.rpartition(SEPARATOR)
    if sep and (part.startswith("tile-") or part.startswith("frame-")):
        return head, part
    return text, None


def real_path(path: str | os.PathLike) -> str:
    """The file a picture comes from (a tile's slide, a frame's DICOM)."""
    return split_path(path)[0]


def kind_of(path: str | os.PathLike) -> str | None:
    """'ordinary', 'dicom', 'tiff' or 'slide' by the file's name (an extension-less file: by its preamble)."""
    real, part = split_path(path)
    suffix = Path(real).suffix.lower()
    if part is not None and part.startswith("tile-"):
        return "slide"
    if suffix in ORDINARY_EXTENSIONS:
        return "ordinary"
    if suffix in _DICOM:
        return "dicom"
    if suffix in _TIFF:
        return "tiff"
    if suffix in _SLIDE:
        return "slide"
    if not suffix or part is not None:
        from engine.data.formats.dicom import is_dicom_file

        if is_dicom_file(real):
            return "dicom"
    return None


def is_picture_file(path: str | os.PathLike) -> bool:
    """A visible file whose name (or, without a suffix, whose DICOM preamble) says it is a picture."""
    name = Path(real_path(path)).name
    if name.startswith("."):
        return False
    return kind_of(path) is not None


def _error(message: str):
    from engine.data.formats.pictures import ImageError

    return ImageError(message)


def open_picture(path: str | os.PathLike, settings: FormatSettings | None = None, *,
                 max_pixels: int | None = None, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """The picture as the model sees it, 8-bit RGB; raises engine.data.images.ImageError with a sentence."""
    from engine.data.formats.pictures import MAX_PIXELS, ImageError, load_ordinary

    settings = settings or active()
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    real, part = split_path(path)
    kind = kind_of(path)
    try:
        if kind == "ordinary":
            return load_ordinary(real, max_pixels=max_pixels, draft_size=draft_size)
        if kind == "dicom":
            from engine.data.formats.dicom import read_dicom

            frame = int(part.removeprefix("frame-")) - 1 if part and part.startswith("frame-") else None
            return _limited(read_dicom(real, settings, frame), max_pixels)
        if kind == "slide" or (kind == "tiff" and part is not None):
            from engine.data.formats.slide import read_tile, tile_of

            where = tile_of(part or "")
            if where is None:
                raise ImageError("This is a whole-slide picture: the scan cuts it into tiles, which are the pictures "
                                 "(choose the slide's folder, not the slide itself).")
            return read_tile(real, where[0], where[1], settings)
        if kind == "tiff":
            from engine.data.formats.tiff import describe_tiff, read_tiff

            try:
                info = describe_tiff(real)
            except Exception:  # not a TIFF tifffile can read: Pillow's own sentences say why
                return load_ordinary(real, max_pixels=max_pixels, draft_size=draft_size)
            if info.pixels > max_pixels or info.levels > 1:
                from engine.data.formats.slide import is_slide

                if is_slide(real, info.pixels, info.levels, max_pixels):
                    raise ImageError("This is a whole-slide picture: the scan cuts it into tiles, which are the "
                                     "pictures (choose the slide's folder, not the slide itself).")
                if info.pixels > max_pixels:
                    from engine.data.formats.pictures import too_large_message

                    raise ImageError(too_large_message(None, max_pixels))
            if info.ordinary:
                return load_ordinary(real, max_pixels=max_pixels, draft_size=draft_size)
            return read_tiff(real, settings, info)
        # Not a lab picture by its name: Pillow decides, with its own sentences (as before the lab formats).
        return load_ordinary(real, max_pixels=max_pixels, draft_size=draft_size)
    except ImageError:
        raise
    except ValueError as error:  # our own sentences (DicomError, SlideError, ChannelError)
        if type(error).__name__ in ("DicomError", "SlideError", "ChannelError"):
            raise ImageError(str(error)) from None
        raise _damaged(kind) from None
    except (OSError, MemoryError):
        raise  # load_rgb turns them into sentences
    except Exception as error:  # tifffile, openslide and pydicom raise many types on bad data
        if type(error).__name__ == "OpenSlideUnsupportedFormatError":
            raise ImageError("OpenSlide does not recognise this whole-slide format.") from None
        raise _damaged(kind) from None


def _damaged(kind: str | None):
    what = {"dicom": "DICOM file", "tiff": "TIFF file", "slide": "whole-slide file"}.get(kind or "", "picture")
    return _error(f"The {what} is damaged or uses a variant that cannot be read.")


def _limited(image: Image.Image, max_pixels: int) -> Image.Image:
    if image.size[0] * image.size[1] > max_pixels:
        from engine.data.formats.pictures import too_large_message

        raise _error(too_large_message(image.size, max_pixels))
    return image


# --- what the scan learns about each file ------------------------------------------------------------------------


@dataclass(frozen=True)
class Inspection:
    """One file as the scan sees it: how to count it, the pictures it gives (None: itself), or why it is unusable."""

    label: str  # "JPEG", "DICOM", "DICOM (JPEG 2000 Image Compression (Lossless Only))", "TIFF 16-bit", "slide", ...
    parts: tuple[str, ...] | None = None
    reason: str | None = None
    background: int = 0  # slides: tiles skipped as background


def inspect(path: str, settings: FormatSettings | None = None, *, decode: bool = True) -> Inspection:
    """Check that a file gives pictures (decoding them at a reduced size where possible) and say which. Without
    ``decode`` only what lists the pictures is read (a slide's low-resolution view, a DICOM's or TIFF's header)."""
    from engine.data.formats.pictures import ImageError
    from engine.data.formats.pictures import check_image as _check

    settings = settings or active()

    def check_image(p: str) -> str | None:
        return _check(p, settings=settings) if decode else None

    kind = kind_of(path)
    suffix = Path(path).suffix.lower()
    if kind == "ordinary":
        return Inspection(_ORDINARY_LABELS.get(suffix, suffix.lstrip(".").upper()), None, check_image(path))
    try:
        if kind == "dicom":
            return _inspect_dicom(path, settings, check_image)
        if kind == "tiff":
            from engine.data.formats.tiff import describe_tiff
            from engine.data.formats.pictures import MAX_PIXELS

            try:
                info = describe_tiff(path)
            except Exception:
                return Inspection("TIFF", None, check_image(path))  # let Pillow's sentences speak
            from engine.data.formats.slide import is_slide

            if (info.levels > 1 or info.pixels > MAX_PIXELS) and is_slide(path, info.pixels, info.levels, MAX_PIXELS):
                return _inspect_slide(path, settings)
            return Inspection(info.label(), None, check_image(path))
        if kind == "slide":
            return _inspect_slide(path, settings)
    except ImageError as error:
        return Inspection(_label_of(kind), None, str(error))
    except OSError as error:
        return Inspection(_label_of(kind), None, f"The file cannot be read ({(error.strerror or 'error').lower()}).")
    return Inspection("other", None, check_image(path))


def _label_of(kind: str | None) -> str:
    return {"dicom": "DICOM", "tiff": "TIFF", "slide": "slide"}.get(kind or "", "other")


def _inspect_dicom(path: str, settings: FormatSettings, check_image) -> Inspection:
    from engine.data.formats.dicom import _read, syntax_name

    try:
        ds = _read(path, pixels=False)
        frames = max(1, int(getattr(ds, "NumberOfFrames", 1) or 1))
        syntax = syntax_name(ds)
    except Exception:
        return Inspection("DICOM", None, "The file is not a DICOM file or its header is damaged.")
    label = "DICOM" if "Implicit" in syntax or "Explicit" in syntax else f"DICOM ({syntax})"
    if frames > 1 and settings.frames == "all":
        parts = tuple(f"{path}{SEPARATOR}frame-{i + 1}" for i in range(frames))
        reason = check_image(parts[0])
        return Inspection(label + ", multi-frame", None if reason else parts, reason)
    return Inspection(label + (", multi-frame" if frames > 1 else ""), None, check_image(path))


def _inspect_slide(path: str, settings: FormatSettings) -> Inspection:
    from engine.data.formats.slide import slide_grid, tile_path

    try:
        grid = slide_grid(path, settings)
    except ValueError as error:
        if type(error).__name__ == "SlideError":
            return Inspection("slide", None, str(error))
        raise
    except Exception as error:
        if type(error).__name__ == "OpenSlideUnsupportedFormatError":
            return Inspection("slide", None, "OpenSlide does not recognise this whole-slide format.")
        return Inspection("slide", None, "The whole-slide file is damaged or uses a variant that cannot be read.")
    if not grid.kept:
        return Inspection("slide", None, f"No tile of the slide holds enough tissue ({grid.columns * grid.rows} "
                                         f"tiles, all background): lower the tissue fraction or check the slide.",
                          grid.background)
    parts = tuple(tile_path(path, c * grid.step, r * grid.step) for c, r in grid.kept)
    return Inspection("slide", parts, None, grid.background)


def expand(path: str, settings: FormatSettings | None = None) -> tuple[list[str], str | None]:
    """The pictures a file gives (its tiles, its frames, or itself) and the reason when it gives none."""
    kind = kind_of(path)
    if kind in ("ordinary", None):
        return [path], None
    found = inspect(path, settings)
    if found.reason is not None and found.parts is None and kind == "slide":
        return [], found.reason
    return (list(found.parts) if found.parts is not None else [path]), None


# --- the dataset's contrast range ---------------------------------------------------------------------------------

_RANGE_FILES = 32  # files the dataset's percentiles are taken on, spread over the dataset


def dataset_range(paths: Sequence[str], settings: FormatSettings) -> tuple[tuple[float, float], ...]:
    """Per channel, the dataset's (low, high) percentiles over the 16-bit and float TIFFs and the DICOMs read with
    an automatic window among ``paths`` (a regular sample of at most 32 files). Empty when there are none."""
    from engine.data.formats.channels import SAMPLE_PIXELS, needs_stretch

    candidates = list(dict.fromkeys(real_path(p) for p in paths if kind_of(p) in ("tiff", "dicom")))
    if not candidates:
        return ()
    step = max(1, len(candidates) // _RANGE_FILES)
    samples: list[list[np.ndarray]] = []
    for p in candidates[::step][:_RANGE_FILES]:
        try:
            values = _raw_values(p, settings)
        except Exception:
            continue
        if values is None or not needs_stretch(values):
            continue
        if samples and values.shape[2] != len(samples):
            continue  # another channel count: such pictures keep their own stretch
        if not samples:
            samples = [[] for _ in range(values.shape[2])]
        per = max(1, SAMPLE_PIXELS // _RANGE_FILES)
        stride = max(1, int(np.ceil(np.sqrt(values.shape[0] * values.shape[1] / per))))
        for c in range(values.shape[2]):
            v = values[::stride, ::stride, c].astype(np.float64).ravel()
            samples[c].append(v[np.isfinite(v)])
    out = []
    for per_channel in samples:
        allv = np.concatenate(per_channel) if per_channel else np.zeros(0)
        if allv.size == 0:
            return ()
        lo, hi = np.percentile(allv, [settings.stretch_low, settings.stretch_high])
        out.append((float(lo), float(hi)))
    return tuple(out)


def _raw_values(path: str, settings: FormatSettings) -> np.ndarray | None:
    """HxWxC values before the stretch: a TIFF's plane, a DICOM's modality values (when its window is automatic)."""
    real, part = split_path(path)
    if kind_of(path) == "tiff":
        import tifffile

        from engine.data.formats.tiff import _plane, describe_tiff

        info = describe_tiff(real)
        if info.ordinary or info.levels > 1:
            return None
        with tifffile.TiffFile(real) as tif:
            series = tif.series[0]
            return _plane(np.asarray(series.asarray()), series.axes)
    from pydicom.pixels import apply_modality_lut, pixel_array

    from engine.data.formats.dicom import _read

    ds = _read(real)
    if settings.window == "file" and ("VOILUTSequence" in ds or "WindowCenter" in ds):
        return None
    frames = max(1, int(getattr(ds, "NumberOfFrames", 1) or 1))
    arr = pixel_array(ds, index=frames // 2 if frames > 1 else None)
    if arr.ndim != 2:
        return None
    return apply_modality_lut(arr, ds).astype(np.float64)[..., None]


def summary(labels: Iterable[str]) -> dict[str, int]:
    """How many files of each format, most frequent first."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def display_name(path: str | os.PathLike, short: bool = False) -> str:
    """What the user sees for a picture: its file name, with the tile or frame it is ('slide.svs, tile at 512, 1024';
    'cine.dcm, frame 3'; ``short``: 'slide 512,1024', 'cine #3', for captions under thumbnails). Never anything read
    from inside the file (no patient data)."""
    real, part = split_path(path)
    name = os.path.basename(real)
    if part is None:
        return name
    stem = os.path.splitext(name)[0]
    if part.startswith("tile-"):
        x, _, y = part.removeprefix("tile-").partition("-")
        return f"{stem} {x},{y}" if short else f"{name}, tile at {x}, {y}"
    frame = part.removeprefix("frame-")
    return f"{stem} #{frame}" if short else f"{name}, frame {frame}"


def lab_facts(path: str | os.PathLike) -> tuple[int, str, str, int, int] | None:
    """(file size, format, Pillow-like mode, width, height) of a lab picture from its header, for the preview's facts;
    None for an ordinary picture (Pillow's header says it) or when it cannot be read. No patient data."""
    real, part = split_path(path)
    kind = kind_of(path)
    try:
        size = os.path.getsize(real)
        if kind == "dicom":
            from engine.data.formats.dicom import _read, syntax_name

            ds = _read(real, pixels=False)
            bits = int(getattr(ds, "BitsStored", 8) or 8)
            colour = int(getattr(ds, "SamplesPerPixel", 1) or 1) > 1
            mode = "RGB" if colour else ("L" if bits <= 8 else "I;16")
            frames = max(1, int(getattr(ds, "NumberOfFrames", 1) or 1))
            what = f"DICOM, {syntax_name(ds)}" + (f", {frames} frames" if frames > 1 else "")
            if part:
                what += f" ({part.replace('-', ' ')})"
            return size, what, mode, int(ds.Columns), int(ds.Rows)
        if kind == "slide" or (kind == "tiff" and part is not None):
            from engine.data.formats.slide import open_slide

            slide = open_slide(real)
            settings = active()
            width, height = slide.dimensions
            where = part.removeprefix("tile-").replace("-", ", ") if part else ""
            return (size, f"whole slide ({slide.detect_format(real)}, {width} x {height}), tile at {where}", "RGB",
                    settings.tile, settings.tile)
        if kind == "tiff":
            from engine.data.formats.tiff import describe_tiff

            info = describe_tiff(real)
            if info.ordinary:
                return None
            y, x = info.axes.index("Y"), info.axes.index("X")
            mode = {"u2": "I;16", "f4": "F", "f8": "F", "u1": "L"}.get(info.dtype.str[1:], str(info.dtype))
            if info.channels > 1:
                mode = f"{info.channels} channels of {info.dtype.name}"
            return size, info.label(), mode, int(info.shape[x]), int(info.shape[y])
    except Exception:
        return None
    return None


# --- every channel into the model (channels = "all") ---------------------------------------------------------------


def open_array(path: str | os.PathLike, settings: FormatSettings | None = None, *, max_pixels: int | None = None,
               draft_size: tuple[int, int] | None = None) -> np.ndarray:
    """The picture as the model sees it when the channels setting is "all": HxWxC uint8 with every channel (a TIFF's
    channels stretched one by one; a DICOM: 1; an ordinary picture, a slide's tile: 3). Raises ImageError."""
    from engine.data.formats.pictures import MAX_PIXELS, ImageError, load_rgb

    settings = settings or active()
    real, part = split_path(path)
    if kind_of(path) == "tiff" and part is None:
        from engine.data.formats.tiff import _plane, describe_tiff

        try:
            info = describe_tiff(real)
        except Exception:
            info = None
        if info is not None and not info.ordinary and info.levels <= 1:
            if info.pixels > (MAX_PIXELS if max_pixels is None else max_pixels):
                return np.asarray(load_rgb(path, max_pixels=max_pixels, settings=settings))  # its sentence
            import tifffile

            from engine.data.formats.channels import to_array

            try:
                with tifffile.TiffFile(real) as tif:
                    series = tif.series[0]
                    return to_array(_plane(np.asarray(series.asarray()), series.axes), settings)
            except Exception:
                raise ImageError("The TIFF file is damaged or uses a variant that cannot be read.") from None
    image = load_rgb(path, max_pixels=MAX_PIXELS if max_pixels is None else max_pixels, draft_size=draft_size,
                     settings=settings)
    pixels = np.asarray(image)
    if kind_of(path) == "dicom" and _dicom_grey(path):
        return np.ascontiguousarray(pixels[..., :1])  # grey: one channel
    return pixels


def channel_count(path: str | os.PathLike, settings: FormatSettings | None = None) -> int | None:
    """How many channels ``open_array`` gives for the file (read from its header where possible); None if unknown."""
    kind = kind_of(path)
    if kind == "dicom":
        return 1 if _dicom_grey(path) else 3
    if kind == "tiff" and split_path(path)[1] is None:
        from engine.data.formats.tiff import describe_tiff

        try:
            info = describe_tiff(real_path(path))
        except Exception:
            return None
        return 3 if info.ordinary or info.levels > 1 else info.channels
    return 3 if kind in ("ordinary", "slide") else None


def _dicom_grey(path) -> bool:
    from engine.data.formats.dicom import _read

    try:
        ds = _read(real_path(path), pixels=False)
    except Exception:
        return True
    return int(getattr(ds, "SamplesPerPixel", 1) or 1) == 1
