"""Safe picture decoding: every failure becomes an ImageError with one plain sentence (engine.data.images re-exports
this module, the name every caller uses; it lives here so that the dispatcher and the decoders form one package).

Ordinary pictures are opened only as JPEG, PNG, BMP, GIF, TIFF or WebP, refused when larger than a pixel limit before
any pixel is decoded, fully loaded so that damaged files are caught, turned upright from their EXIF orientation and
converted to 8-bit RGB (transparency is composited on white, 16-bit values are scaled, not clipped).

Lab pictures -- DICOM, 16-bit, float and many-channel TIFF, tiles of whole-slide pictures -- go through the one
dispatcher, :func:`engine.data.formats.open_picture`, with the data settings; JPEG, PNG, BMP, GIF and WebP files keep
the direct path below (a suffix test is all they pay).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["IMAGE_EXTENSIONS", "MAX_PIXELS", "ImageError", "check_image", "is_image_path", "load_ordinary", "load_rgb",
           "too_large_message"]

# The everyday picture formats (TIFF: 8-bit ones through Pillow; 16-bit, float, many channels and pyramids through
# engine.data.formats).
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
_DIRECT_EXTENSIONS = IMAGE_EXTENSIONS - {".tif", ".tiff"}
# Lab pictures, always through engine.data.formats (extension-less DICOM files are recognised by the scan from their
# preamble).
LAB_EXTENSIONS: frozenset[str] = frozenset({".dcm", ".dicom", ".dic",  # DICOM
                                            ".svs", ".ndpi", ".scn", ".mrxs", ".vms", ".vmu", ".bif", ".svslide"})
PICTURE_EXTENSIONS = IMAGE_EXTENSIONS | LAB_EXTENSIONS
MAX_PIXELS = 64_000_000

# Only these decoders are tried: no Ghostscript (EPS) or other exotic plugin ever runs on a user's file.
_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP")
_CHECK_DRAFT_SIZE = (64, 64)
_HIGH_DEPTH_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


class ImageError(Exception):
    """A picture cannot be used; ``str(error)`` is one plain sentence saying why."""


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """True for a visible file whose suffix is a supported picture type, or a slide's tile or a DICOM's frame
    (the file itself is not opened)."""
    p = Path(path)
    if p.suffix.lower() in PICTURE_EXTENSIONS:
        return not p.name.startswith(".")
    from engine.data.formats import split_path

    real, part = split_path(path)
    return (part is not None and not Path(real).name.startswith(".")
            and Path(real).suffix.lower() in PICTURE_EXTENSIONS)


def load_rgb(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
    settings=None,
) -> Image.Image:
    """Decode a picture to an upright 8-bit RGB image; raise ImageError (and nothing else) when it cannot be used.

    ``draft_size`` lets JPEG files decode at a reduced scale (at least that size), which is much faster.
    ``settings`` (engine.data.formats.FormatSettings) decide how lab pictures look; None: the process's active ones.
    """
    try:
        text = os.fspath(path)
        if os.path.splitext(text)[1].lower() in _DIRECT_EXTENSIONS:
            return _load_rgb(Path(text), max_pixels, draft_size)
        from engine.data.formats import open_picture

        return open_picture(text, settings, max_pixels=max_pixels, draft_size=draft_size)
    except ImageError:
        raise
    except PermissionError:
        raise ImageError("The file cannot be read (permission denied).") from None
    except FileNotFoundError:
        raise ImageError(_missing_message(Path(path))) from None
    except IsADirectoryError:
        raise ImageError("This is a folder, not a picture.") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(_too_large_message(_bomb_pixels(error), max_pixels)) from None
    except UnidentifiedImageError:
        raise ImageError(
            "The file is not a picture (it could not be recognised as a JPEG, PNG, BMP, GIF, TIFF or WebP image)."
        ) from None
    except (OSError, SyntaxError, EOFError) as error:
        if "truncated" in str(error).lower() or isinstance(error, EOFError):
            raise ImageError("The picture is cut short (the file is truncated or damaged).") from None
        if isinstance(error, OSError) and error.errno == errno.ELOOP:
            raise ImageError("The file is a link that leads back to itself (a loop of symbolic links): remove the "
                             "link.") from None
        if isinstance(error, OSError) and error.strerror and error.filename:
            raise ImageError(f"The file cannot be read ({error.strerror.lower()}).") from None
        raise ImageError("The picture is damaged and cannot be decoded.") from None
    except MemoryError:
        raise ImageError("There is not enough memory to open the picture.") from None
    except Exception:  # decoders raise many types on bad data; the user only needs the sentence
        raise ImageError("The picture is damaged or uses an unsupported variant of its format.") from None


def check_image(path: str | os.PathLike[str], *, max_pixels: int = MAX_PIXELS, settings=None) -> str | None:
    """Return None when the picture decodes, else the sentence saying why it cannot be used (fast draft decode)."""
    try:
        load_rgb(path, max_pixels=max_pixels, draft_size=_CHECK_DRAFT_SIZE, settings=settings)
    except ImageError as error:
        return str(error)
    return None


def load_ordinary(path: str | os.PathLike[str], *, max_pixels: int = MAX_PIXELS,
                  draft_size: tuple[int, int] | None = None) -> Image.Image:
    """An ordinary picture through Pillow; raises Pillow's and the file system's errors (load_rgb words them)."""
    return _load_rgb(Path(path), max_pixels, draft_size)


def _load_rgb(path: Path, max_pixels: int, draft_size: tuple[int, int] | None) -> Image.Image:
    with path.open("rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            raise ImageError("The file is empty.")
        img = Image.open(fh, formats=_FORMATS)
        width, height = img.size
        if width * height > max_pixels:
            raise ImageError(_too_large_message((width, height), max_pixels))
        if draft_size is not None:
            img.draft("RGB", draft_size)
        img.load()
        with contextlib.suppress(Exception):  # broken EXIF metadata: keep the picture as stored, not refuse it
            ImageOps.exif_transpose(img, in_place=True)
        return _to_rgb(img)


def _missing_message(path: Path) -> str:
    if path.is_symlink():  # a link whose picture was moved or deleted
        try:
            target = os.readlink(path)
        except OSError:
            target = "another file"
        return f"The file is a link to {target}, which does not exist: put the picture back or remove the link."
    return "The file does not exist."


def _bomb_pixels(error: Exception) -> int | None:
    """The pixel count in Pillow's decompression-bomb message ("Image size (1600000000 pixels) exceeds ...")."""
    found = re.search(r"\((\d+) pixels\)", str(error))
    return int(found.group(1)) if found else None


def too_large_message(size: tuple[int, int] | int | None, max_pixels: int) -> str:
    return _too_large_message(size, max_pixels)


def _too_large_message(size: tuple[int, int] | int | None, max_pixels: int) -> str:
    amount = f"{max_pixels / 1e6:g} million" if max_pixels >= 1_000_000 else str(max_pixels)
    limit = f"the limit is {amount} pixels"
    if size is None:
        return f"The picture is too large to open safely ({limit})."
    if isinstance(size, int):  # refused by Pillow before its width and height were known to us
        return f"The picture is too large ({size / 1e6:,.0f} million pixels; {limit})."
    return f"The picture is too large ({size[0]} x {size[1]} pixels; {limit})."


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any decoded mode to 8-bit RGB; transparent parts become white."""
    if img.mode in _HIGH_DEPTH_MODES:
        img = _grey_to_8bit(img)
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _grey_to_8bit(img: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit integer or float grey values down to 8 bits (a linear scale, never a clip)."""
    values = np.asarray(img, dtype=np.float64)
    top = float(values.max(initial=0.0))
    if img.mode.startswith("I;16"):
        full_scale = 65535.0
    elif img.mode == "F" and top <= 1.0:
        full_scale = 1.0
    elif top <= 255.0:
        full_scale = 255.0
    elif top <= 65535.0:
        full_scale = 65535.0
    else:
        full_scale = top
    scaled = np.clip(np.rint(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled)
