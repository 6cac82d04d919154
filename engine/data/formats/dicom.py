"""DICOM pictures with pydicom: modality LUT, then the file's VOI LUT or window (or an automatic one), MONOCHROME1
inverted, one frame of a multi-frame file, compressed transfer syntaxes through pydicom's pixel-data plugins.

Patient data stays private: nothing read from a file's tags but the pixel description ever leaves this module
(no name, ID, date or institution in a caption, a message, a run folder or an export).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from engine.data.formats.channels import channel_ranges, stretch_to_uint8, to_picture
from engine.data.formats.settings import FormatSettings

__all__ = ["DICOM_EXTENSIONS", "frame_count", "is_dicom_file", "read_dicom", "syntax_name"]

DICOM_EXTENSIONS = frozenset({".dcm", ".dicom", ".dic"})
_PREAMBLE = 128
# Only what decoding needs is read from a file: the pixel module, the LUTs and the windows (never patient tags).
_NOT_PIXELS = "The DICOM file holds no picture (it may be a report, a structured document or a series index)."


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when the file starts with the DICOM preamble ('DICM' after 128 bytes); reads 132 bytes."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_PREAMBLE + 4)
    except OSError:
        return False
    return len(head) == _PREAMBLE + 4 and head[_PREAMBLE:] == b"DICM"


def _read(path: str | os.PathLike, *, pixels: bool = True):
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about slightly non-conformant files it reads well
        return pydicom.dcmread(os.fspath(path), stop_before_pixels=not pixels, force=Path(path).suffix.lower()
                               in DICOM_EXTENSIONS)


def syntax_name(ds) -> str:
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return uid.name if uid is not None else "an unknown transfer syntax"


def frame_count(path: str | os.PathLike) -> int:
    """The number of frames of a DICOM picture (1 for a single picture); raises like read_dicom."""
    ds = _read(path, pixels=False)
    return max(1, int(getattr(ds, "NumberOfFrames", 1) or 1))


class DicomError(ValueError):
    """A DICOM file that cannot be shown; the message is one plain sentence without any patient data."""


def read_dicom(path: str | os.PathLike, settings: FormatSettings, frame: int | None = None) -> Image.Image:
    """One frame (the middle one unless ``frame`` is given, counted from 0) as an 8-bit RGB picture."""
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import pixel_array

    try:
        ds = _read(path)
    except InvalidDicomError:
        raise DicomError("The file is not a DICOM file (it lacks the DICOM preamble and header).") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DicomError(_NOT_PIXELS)
    frames = max(1, int(getattr(ds, "NumberOfFrames", 1) or 1))
    index = frames // 2 if frame is None else frame
    if not 0 <= index < frames:
        raise DicomError(f"The DICOM file has {frames} frames; frame {index + 1} does not exist.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = pixel_array(ds, index=index if frames > 1 else None)
    except (NotImplementedError, RuntimeError, ImportError) as exc:
        text = str(exc).lower()
        if "plugin" in text or "decoder" in text or "not supported" in text or "no pixel data" in text:
            raise DicomError(f"The DICOM file is compressed as {syntax_name(ds)}, which no installed decoder can "
                             "read: convert it to an uncompressed DICOM.") from None
        raise DicomError("The DICOM file's pixel data is damaged and cannot be decoded.") from None
    except (ValueError, AttributeError, KeyError, TypeError):
        raise DicomError("The DICOM file's pixel description is incomplete or damaged (rows, columns or bits "
                         "missing).") from None
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and not photometric.startswith("MONOCHROME"):
        return to_picture(arr[..., :3], settings)  # colour (pydicom has converted YBR to RGB)
    if arr.ndim != 2:
        raise DicomError("The DICOM frame is not a two-dimensional picture.")
    return Image.fromarray(_grey(arr, ds, settings, photometric)).convert("RGB")


def _grey(arr: np.ndarray, ds, settings: FormatSettings, photometric: str) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(arr, ds).astype(np.float64, copy=False)  # rescale slope/intercept, or modality LUT
    out: np.ndarray | None = None
    if settings.window == "file":
        if "VOILUTSequence" in ds:
            lut = ds.VOILUTSequence[0]
            bits = int(lut.LUTDescriptor[2]) if "LUTDescriptor" in lut else 16
            out = apply_voi_lut(values, ds, index=0, prefer_lut=True).astype(np.float64) / float(2 ** bits - 1)
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            out = _window(values, _first(ds.WindowCenter), _first(ds.WindowWidth),
                          str(getattr(ds, "VOILUTFunction", "LINEAR")).upper())
    if out is None:  # no window in the file, or an automatic one asked for: the percentile stretch
        lo, hi = channel_ranges(values[..., None], settings)[0]
        grey = stretch_to_uint8(values, lo, hi)
    else:
        grey = np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
    if photometric == "MONOCHROME1":  # low values are white in this interpretation
        grey = 255 - grey
    return grey


def _first(value) -> float:
    try:
        return float(value[0])  # a multi-valued window: the first is the one the modality recommends
    except (TypeError, IndexError):
        return float(value)


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """The VOI window of DICOM PS3.3 C.11.2.1.2 (LINEAR, LINEAR_EXACT, SIGMOID), output in [0, 1]. Hand-written:
    pydicom's apply_windowing scales to the stored bit depth, which the percentile-free 8-bit mapping here avoids."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / max(width, 1e-6)))
    if function == "LINEAR_EXACT":
        width = max(width, 1e-6)
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    width = max(width, 1.0)
    if width == 1.0:
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)
