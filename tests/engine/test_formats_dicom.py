"""DICOM pictures as the model sees them: rescale, the file's window or an automatic one, MONOCHROME1 inverted,
multi-frame files (middle frame or every frame), compressed transfer syntaxes, and plain sentences for the rest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.data.formats import FormatSettings, inspect, kind_of
from engine.data.images import ImageError, check_image, load_rgb
from lab_pictures import ramp, write_dicom


def grey(path, settings=None) -> np.ndarray:
    image = load_rgb(path, settings=settings)
    pixels = np.asarray(image)
    assert image.mode == "RGB" and (pixels[..., 0] == pixels[..., 2]).all()
    return pixels[..., 0].astype(int)


def test_rescale_then_the_files_window(tmp_path: Path):
    # stored 0..4095, rescaled to -1024..7166; the window 2000..4000 (centre 3000, width 2000) spans black to white
    path = write_dicom(tmp_path / "ct.dcm", ramp(top=4095), RescaleSlope=2, RescaleIntercept=-1024,
                       WindowCenter=3000, WindowWidth=2000)
    row = grey(path)[10]
    stored = ramp(top=4095)[10].astype(float)
    values = stored * 2 - 1024
    assert (row[values < 1990] == 0).all() and (row[values > 4010] == 255).all()
    middle = np.argmin(abs(values - 3000))
    assert abs(row[middle] - 128) <= 3  # the window's centre is mid grey
    # without the rescale the same window would leave everything below 2000 stored black: a different picture
    plain = write_dicom(tmp_path / "plain.dcm", ramp(top=4095), WindowCenter=3000, WindowWidth=2000)
    assert (grey(plain) != grey(path)).any()


def test_auto_window_stretches_a_narrow_range(tmp_path: Path):
    pixels = ramp(top=300) + 1000  # 1000..1300 of 4095: nearly black when scaled linearly
    path = write_dicom(tmp_path / "narrow.dcm", pixels)
    out = grey(path)
    assert out.max() >= 250 and out.min() <= 5
    # a window in the file wins over the automatic one, unless the setting asks for the automatic one
    windowed = write_dicom(tmp_path / "windowed.dcm", pixels, WindowCenter=1100, WindowWidth=100)
    assert (grey(windowed)[:, -5:] == 255).all()
    auto = grey(windowed, FormatSettings(window="auto"))
    assert (auto == out).all()


def test_monochrome1_is_inverted(tmp_path: Path):
    two = write_dicom(tmp_path / "m2.dcm", ramp(top=4095))
    one = write_dicom(tmp_path / "m1.dcm", ramp(top=4095), photometric="MONOCHROME1")
    assert (grey(one) == 255 - grey(two)).all()
    assert grey(one)[0, 0] == 255  # low values are white in MONOCHROME1


def test_multi_frame_middle_or_every_frame(tmp_path: Path):
    frames = np.stack([np.full((32, 40), v, np.uint16) for v in (100, 2000, 4000)])
    frames[:, :, :16] = 0  # each frame: a dark half and a bright half of its own level
    path = write_dicom(tmp_path / "cine.dcm", frames, WindowCenter=2048, WindowWidth=4096)
    middle = grey(path)
    assert abs(middle[0, -1] - 2000 * 255 / 4095) < 3
    every = inspect(str(path), FormatSettings(frames="all"))
    assert every.reason is None and len(every.parts) == 3
    levels = [grey(part)[0, -1] for part in every.parts]
    assert levels[0] < levels[1] < levels[2]
    assert inspect(str(path)).parts is None  # the middle frame: the file is one picture


@pytest.mark.parametrize("syntax", ["rle", "j2k"])
def test_compressed_syntaxes_decode_like_the_uncompressed_file(tmp_path: Path, syntax):
    pixels = ramp(top=4095)
    plain = write_dicom(tmp_path / "plain.dcm", pixels, WindowCenter=2048, WindowWidth=4096)
    packed = write_dicom(tmp_path / f"{syntax}.dcm", pixels, WindowCenter=2048, WindowWidth=4096, syntax=syntax)
    assert (grey(packed) == grey(plain)).all()
    assert "Lossless" in inspect(str(packed)).label  # the scan names the syntax


def test_a_syntax_without_decoder_is_named(tmp_path: Path, monkeypatch):
    path = write_dicom(tmp_path / "rle.dcm", ramp(), syntax="rle")
    import pydicom.pixels

    def refuse(*args, **kwargs):
        raise RuntimeError("Unable to decode as there are no pixel data plugins available")

    monkeypatch.setattr(pydicom.pixels, "pixel_array", refuse)
    reason = check_image(path)
    assert reason == ("The DICOM file is compressed as RLE Lossless, which no installed decoder can read: convert "
                      "it to an uncompressed DICOM.")


def test_extension_less_dicom_and_files_without_pictures(tmp_path: Path):
    path = write_dicom(tmp_path / "IM0001", ramp())
    assert kind_of(path) == "dicom" and check_image(path) is None
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # a structured report: no pixels
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.save_as(tmp_path / "report.dcm", enforce_file_format=True)
    with pytest.raises(ImageError, match="holds no picture"):
        load_rgb(tmp_path / "report.dcm")
    (tmp_path / "fake.dcm").write_bytes(b"not a dicom at all" * 20)
    assert check_image(tmp_path / "fake.dcm") is not None


def test_colour_dicom(tmp_path: Path):
    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[..., 0] = 200
    pixels[..., 2] = 50
    out = np.asarray(load_rgb(write_dicom(tmp_path / "colour.dcm", pixels)))
    assert tuple(out[5, 5]) == (200, 0, 50)
