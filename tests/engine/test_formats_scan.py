"""The scan of a mixed lab folder: every format read, slides cut into tiles that keep their slide's class and split,
multi-frame DICOMs per frame when asked, the dataset's contrast range, and the lines saying what was read with which
settings (command line included); the data settings round-trip through config.toml."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from engine.config import DataConfig, RunConfig, dumps, loads
from engine.data import formats
from engine.data.formats import FormatSettings
from engine.data.scan import format_lines, scan
from lab_pictures import narrow_uint16, ramp, write_dicom, write_slide, write_tiff


@pytest.fixture(autouse=True)
def _default_settings():
    formats.activate(FormatSettings())
    yield
    formats.activate(FormatSettings())


def lab_folder(root: Path) -> Path:
    for k, name in enumerate(("benign", "tumour")):
        folder = root / name
        for i in range(3):
            Image.new("RGB", (40, 30), (40 + 80 * k, 90, 60 + i)).save(folder / f"photo{i}.jpg") if folder.mkdir(
                parents=True, exist_ok=True) is None else None
            write_dicom(folder / f"ct{i}.dcm", ramp(top=4000 - 900 * k - i), RescaleSlope=1, RescaleIntercept=-1024)
            write_tiff(folder / f"micro{i}.tif", narrow_uint16(seed=i + 10 * k))
        write_dicom(folder / "IM0007", ramp())  # extension-less DICOM
        write_tiff(folder / "four.tif", np.random.default_rng(k).integers(0, 4000, (30, 40, 4)).astype(np.uint16))
        write_slide(folder / "slide.tiff", seed=k)
    return root


def test_a_mixed_lab_folder_is_read_whole(tmp_path: Path):
    index = scan(lab_folder(tmp_path / "lab"), val_fraction=0.5, formats=DataConfig(slide_tile=256))
    assert index.health.unreadable == []
    files = index.formats["files"]
    assert files == {"DICOM": 8, "JPEG": 6, "TIFF 16-bit": 6, "slide": 2, "TIFF 16-bit, 4 channels": 2}
    tiles = [s for s in index.samples if "::tile-" in s.path]
    assert index.formats["slides"]["tiles"] == len(tiles) > 20
    for slide in {s.path.split("::")[0] for s in tiles}:  # a slide's tiles never straddle train and validation
        own = [s for s in tiles if s.path.startswith(slide + "::")]
        assert len({s.split for s in own}) == 1 and len({s.label for s in own}) == 1
        assert index.classes[own[0].label] == Path(slide).parent.name
    lines = format_lines(index)
    assert lines[0] == "Read 24 files: 8 DICOM, 6 JPEG, 6 TIFF 16-bit, 2 TIFF 16-bit, 4 channels, 2 slides."
    assert lines[1].startswith("2 slides cut into") and "background tiles skipped" in lines[1]
    assert lines[2].startswith("Settings: 16-bit and float pictures contrast stretched from the 0.5 to the 99.5 "
                               "percentile of each picture")
    summary = json.dumps(index.to_dict(with_samples=True))
    assert '"tile": 256' in summary


def test_every_frame_of_a_multi_frame_dicom(tmp_path: Path):
    root = tmp_path / "cine"
    for name in ("a", "b"):
        for i in range(2):
            write_dicom(root / name / f"{i}.dcm", np.stack([ramp(top=1000 + 500 * f) for f in range(5)]))
    middle = scan(root, val_fraction=0.5)
    every = scan(root, val_fraction=0.5, formats=DataConfig(dicom_frames="all"))
    assert len(middle.samples) == 4 and len(every.samples) == 20
    assert every.formats["frames"] == {"files": 4, "pictures": 20}
    assert "4 multi-frame DICOMs gave 20 pictures (one per frame)." in format_lines(every)
    by_file = {}
    for s in every.samples:
        by_file.setdefault(s.path.split("::")[0], set()).add(s.split)
    assert all(len(splits) == 1 for splits in by_file.values())


def test_the_dataset_range_is_resolved_and_recorded(tmp_path: Path):
    root = tmp_path / "micro"
    for k, name in enumerate(("a", "b")):
        for i in range(2):
            write_tiff(root / name / f"{i}.tif", narrow_uint16(seed=i, low=1000 + 2000 * k))
    index = scan(root, val_fraction=0.5, formats=DataConfig(stretch="dataset"))
    (lo, hi), = index.formats["settings"]["stretch_range"]
    assert 1000 <= lo < 1100 and 3100 < hi <= 3200
    assert formats.active().stretch_range == ((lo, hi),)  # the browser and preview now read with it
    assert any("The dataset's contrast range: " in line for line in format_lines(index))


def test_an_ordinary_folder_is_unchanged(tiny_dataset):
    index = scan(tiny_dataset)
    assert index.formats == {"files": {"PNG": 24}}
    assert format_lines(index) == ["Read 24 files: 24 PNG."]


def test_data_settings_round_trip_and_are_checked():
    config = RunConfig(data=DataConfig(source="x", dicom_frames="all", dicom_window="auto", stretch="dataset",
                                       stretch_low=1.0, stretch_high=99.0, channels="3,2,1", slide_tile=256,
                                       slide_magnification=20.0, slide_tissue=0.3))
    assert loads(dumps(config)) == config
    assert loads(dumps(RunConfig())).data == DataConfig()
    from engine.errors import ConfigError

    for bad, words in [(dict(channels="1,2"), "channels setting '1,2'"), (dict(dicom_frames="first"), "frames"),
                       (dict(slide_tissue=2.0), "tissue fraction")]:
        with pytest.raises(ConfigError, match=words):
            dataclasses.replace(config, data=dataclasses.replace(config.data, **bad)).validate()


def run_cli(*args):
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def test_the_command_line_says_what_was_read(tmp_path: Path):
    root = tmp_path / "cli"
    for name in ("a", "b"):
        for i in range(2):
            write_tiff(root / name / f"{i}.tif",
                       np.random.default_rng(i).integers(0, 4000, (30, 40, 4)).astype(np.uint16))
            write_dicom(root / name / f"{i}.dcm", ramp(), syntax="rle")
    done = run_cli("scan", str(root), "--data-setting", "channels=4,2,1")
    assert done.returncode == 0, done.stderr
    assert "Read 8 files: 4 DICOM (RLE Lossless), 4 TIFF 16-bit, 4 channels." in done.stdout
    assert "channels 4,2,1 as red, green and blue" in done.stdout
    bad = run_cli("scan", str(root), "--data-setting", "channels=9,9")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "channels setting '9,9'" in bad.stderr
