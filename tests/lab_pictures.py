"""Lab pictures written by the tests (nothing downloaded): DICOM with rescale, window, MONOCHROME1, several frames and
compressed transfer syntaxes (pydicom writes them), 16-bit and float TIFFs in a narrow range, many-channel TIFFs,
and a small pyramidal TIFF that OpenSlide reads as a slide (tifffile writes it).

Used by tests/engine/test_formats_*.py, tests/gui/test_data_formats*.py, bench/bench_formats.py and the screenshots.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Identifying tags a privacy test looks for in every output file.
PATIENT = {"PatientName": "Zebulon^Quixotic", "PatientID": "PID-7741-XQ", "PatientBirthDate": "19450317",
           "InstitutionName": "Saint Wobbleton Infirmary"}


def write_dicom(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", bits: int | None = None,
                syntax: str | None = None, **tags) -> Path:
    """A DICOM file of ``pixels`` (HxW, FxHxW frames, or HxWx3 RGB) with ``tags`` (RescaleSlope, WindowCenter, ...);
    ``syntax``: "rle" or "j2k" to compress it."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    for key, value in tags.items():
        setattr(ds, key, value)
    if pixels.ndim == 3 and pixels.shape[-1] != 3:
        ds.NumberOfFrames = pixels.shape[0]
    if bits is None:
        bits = 8 if pixels.dtype == np.uint8 else 12
    ds.set_pixel_data(pixels, "RGB" if pixels.ndim == 3 and pixels.shape[-1] == 3 else photometric, bits)
    if syntax == "rle":
        ds.compress(RLELossless)
    elif syntax == "j2k":
        ds.compress(JPEG2000Lossless)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp(height: int = 48, width: int = 64, top: int = 4095) -> np.ndarray:
    """A left-to-right ramp from 0 to ``top`` (uint16)."""
    return np.tile(np.linspace(0, top, width), (height, 1)).round().astype(np.uint16)


def narrow_uint16(height: int = 48, width: int = 64, seed: int = 0, low: int = 1000, span: int = 200) -> np.ndarray:
    """A 16-bit picture using only low..low+span of its range (dark when scaled linearly), with a bright square."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(low, low + span // 2, (height, width)).astype(np.uint16)
    pixels[height // 4: height // 2, width // 4: width // 2] = low + span
    return pixels


def write_tiff(path: Path, pixels: np.ndarray, **kwargs) -> Path:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    if pixels.ndim == 3 and "photometric" not in kwargs:
        kwargs["photometric"] = "rgb" if pixels.shape[-1] == 3 and pixels.dtype == np.uint8 else "minisblack"
        if kwargs["photometric"] == "minisblack":
            kwargs.setdefault("planarconfig", "contig")
    tifffile.imwrite(path, pixels, **kwargs)
    return path


def write_slide(path: Path, width: int = 2048, height: int = 1536, tissue=((400, 300, 1500, 1100),),
                colour=(170, 70, 150), seed: int = 0) -> Path:
    """A pyramidal tiled TIFF (levels 1, 1/2, 1/4, 1/8): glass (near white) with rectangles of pink 'tissue'."""
    import tifffile

    rng = np.random.default_rng(seed)
    data = np.full((height, width, 3), 244, np.uint8)
    for x0, y0, x1, y1 in tissue:
        patch = np.array(colour, np.int16) + rng.integers(-20, 20, (y1 - y0, x1 - x0, 3))
        for _ in range((y1 - y0) * (x1 - x0) // 900):  # nuclei: small dark dots
            cy, cx = rng.integers(3, y1 - y0 - 3), rng.integers(3, x1 - x0 - 3)
            patch[cy - 3:cy + 3, cx - 3:cx + 3] -= np.array((70, 60, 20), np.int16)
        data[y0:y1, x0:x1] = np.clip(patch, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path) as tif:
        tif.write(data, tile=(256, 256), photometric="rgb", compression="zlib")
        for factor in (2, 4, 8):
            tif.write(data[::factor, ::factor], tile=(256, 256), photometric="rgb", compression="zlib",
                      subfiletype=1)
    return path


# --- fuller examples, for the screenshots and the benchmark ----------------------------------------------------------


def xray(seed: int, shadow: bool, size: int = 256) -> np.ndarray:
    """A 12-bit chest-like picture: two lungs (dark) in a body (bright), ribs, and optionally a bright shadow."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    body = 2600 - 900 * ((x - 0.5) ** 2 + (y - 0.55) ** 2)
    for cx in (0.32, 0.68):
        lung = ((x - cx) / 0.15) ** 2 + ((y - 0.5) / 0.3) ** 2 < 1
        body = np.where(lung, body - 1300 + 150 * np.sin(y * 40 + cx * 9), body)
    if shadow:
        cx, cy = (0.3, 0.62) if rng.random() < 0.5 else (0.7, 0.62)
        body += 900 * np.exp(-(((x - cx) / 0.08) ** 2 + ((y - cy) / 0.1) ** 2))
    body += rng.normal(0, 40, body.shape)
    return np.clip(body, 0, 4095).astype(np.uint16)


def cells(seed: int, infected: bool, size: int = 192, channels: int = 1) -> np.ndarray:
    """A 16-bit fluorescence-like picture in a narrow range (about 900..1500): round nuclei; infected cells carry
    small bright spots. With 4 channels: nuclei, membrane, spots, background."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    planes = np.full((channels, size, size), 900.0)
    for _ in range(14):
        cy, cx, r = rng.integers(10, size - 10), rng.integers(10, size - 10), rng.integers(6, 12)
        d = (x - cx) ** 2 + (y - cy) ** 2
        planes[0] += 400 * np.exp(-d / (r * r))
        if channels > 1:
            planes[1] += 250 * np.exp(-((np.sqrt(d) - r * 1.6) ** 2) / 6.0)
        if infected:
            for _ in range(3):
                sy, sx = cy + rng.integers(-r, r), cx + rng.integers(-r, r)
                spot = 500 * np.exp(-((x - sx) ** 2 + (y - sy) ** 2) / 4.0)
                planes[2 if channels > 2 else 0] += spot
    planes += rng.normal(0, 15, planes.shape)
    out = np.clip(planes, 0, 65535).astype(np.uint16)
    return out[0] if channels == 1 else np.moveaxis(out, 0, -1)
