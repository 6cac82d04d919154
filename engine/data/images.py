"""Safe picture decoding: every failure becomes an ImageError with one plain sentence.

Ordinary pictures are opened only as JPEG, PNG, BMP, GIF, TIFF or WebP, refused when larger than a pixel limit before
any pixel is decoded, fully loaded so that damaged files are caught, turned upright from their EXIF orientation and
converted to 8-bit RGB (transparency is composited on white, 16-bit values are scaled, not clipped). Lab pictures --
DICOM, 16-bit, float and many-channel TIFF, tiles of whole-slide pictures -- go through the one dispatcher,
:func:`engine.data.formats.open_picture`, with the data settings; JPEG, PNG, BMP, GIF and WebP files keep the direct
path (a suffix test is all they pay).

The code lives in :mod:`engine.data.formats.pictures` (one package with the dispatcher it calls); this module is the
name every caller imports.
"""

from __future__ import annotations

from engine.data.formats.pictures import (  # noqa: F401  (re-exported)
    IMAGE_EXTENSIONS,
    LAB_EXTENSIONS,
    MAX_PIXELS,
    PICTURE_EXTENSIONS,
    ImageError,
    check_image,
    is_image_path,
    load_ordinary,
    load_rgb,
    too_large_message,
)

__all__ = ["IMAGE_EXTENSIONS", "LAB_EXTENSIONS", "MAX_PIXELS", "PICTURE_EXTENSIONS", "ImageError", "check_image",
           "is_image_path", "load_ordinary", "load_rgb", "too_large_message"]
