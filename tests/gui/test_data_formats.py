"""The Data step on lab pictures: DICOMs, 16-bit and many-channel TIFFs and a slide's tiles show in the grid (captions
from the file name, never a patient tag) exactly as the model sees them; 'How pictures are read' says what the scan
read and changes the data settings, which the project keeps and the grid re-reads with; an ordinary folder keeps the
box hidden."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from engine.data import formats
from engine.data.formats import FormatSettings
from engine.data.images import load_rgb
from gui.steps.data.picture_model import PathRole
from lab_pictures import PATIENT, cells, ramp, write_dicom, write_slide, write_tiff
from tests.gui.test_dataset_browser import open_and_wait, window  # noqa: F401  (the same main-window fixture)


@pytest.fixture(autouse=True)
def _default_settings():
    formats.activate(FormatSettings())
    yield
    formats.activate(FormatSettings())


def lab_folder(root):
    for k, name in enumerate(("clear", "shadow")):
        for i in range(3):
            write_dicom(root / name / f"study{i}.dcm", ramp(top=3000 + 300 * k), **PATIENT)
            four = np.dstack([cells(i + 10 * k, bool(k), size=64)] * 3 + [ramp(64, 64, 2000)])
            write_tiff(root / name / f"well{i}.tif", four)
        write_slide(root / name / "slide.tiff", width=1024, height=768, tissue=((100, 100, 900, 700),), seed=k)
    return root


def shown(model):
    return {model.index(r).data(PathRole): model.index(r).data() for r in range(model.rowCount())}


def thumbnail_of(qtbot, model, path):
    row = next(r for r in range(model.rowCount()) if model.index(r).data(PathRole) == path)
    qtbot.waitUntil(lambda: model.has_thumbnail(row), timeout=20_000)
    return model.index(row).data(Qt.ItemDataRole.DecorationRole).toImage()


def test_lab_pictures_show_as_the_model_sees_them(qtbot, window, tmp_path):
    index = open_and_wait(qtbot, window, lab_folder(tmp_path / "lab"))
    page = window.data_page
    assert page.formats_box.isVisibleTo(window)
    summary = page.formats.summary.text()
    assert "Read 14 files: 6 DICOM, 6 TIFF 16-bit, 4 channels, 2 slides." in summary
    assert "2 slides cut into" in summary
    captions = shown(page.browser.model)
    assert len(captions) == len(index.samples) > 14
    tile = next(p for p in captions if "::tile-" in p)
    assert captions[tile].startswith("slide ") and "," in captions[tile]  # 'slide 512,256': the tile's place
    assert all(v not in caption for caption in captions.values() for v in PATIENT.values())
    # the thumbnail is the model's picture, shrunk: the 4-channel TIFF with channels 1-3 as red, green and blue
    well = str(tmp_path / "lab" / "clear" / "well0.tif")
    image = thumbnail_of(qtbot, page.browser.model, well)
    model_view = np.asarray(load_rgb(well).resize((image.width(), image.height())))
    colour = image.pixelColor(image.width() // 2, image.height() // 2)
    assert abs(colour.red() - int(model_view[image.height() // 2, image.width() // 2, 0])) < 40


def test_changing_the_channels_reads_the_pictures_again(qtbot, window, tmp_path):
    open_and_wait(qtbot, window, lab_folder(tmp_path / "lab"))
    page = window.data_page
    well = str(tmp_path / "lab" / "clear" / "well0.tif")
    before = thumbnail_of(qtbot, page.browser.model, well)
    page.formats.channels.setText("4")
    page.formats.channels.editingFinished.emit()
    assert window.project.config.data.channels == "4"  # kept in the project's RunConfig (config.toml)
    qtbot.waitUntil(lambda: not page.scanning and window.project.dataset is not None, timeout=20_000)
    after = thumbnail_of(qtbot, page.browser.model, well)
    assert after != before
    colour = after.pixelColor(after.width() - 2, 2)  # channel 4: the ramp, bright at the right, shown in grey
    assert colour.red() == colour.green() == colour.blue() and colour.red() > 200
    assert formats.active().channels == "4"  # the preview and the health report read with it too


def test_a_setting_that_cannot_work_is_a_sentence(qtbot, window, tmp_path):
    open_and_wait(qtbot, window, lab_folder(tmp_path / "lab"))
    page = window.data_page
    page.formats.channels.setText("1,2")
    page.formats.channels.editingFinished.emit()
    assert page.formats.problem.isVisibleTo(window) and "channels setting '1,2'" in page.formats.problem.text()
    assert window.project.config.data.channels == "rgb" and window.errors == []


def test_an_ordinary_folder_keeps_the_box_hidden(qtbot, window, tiny_dataset):
    open_and_wait(qtbot, window, tiny_dataset)
    assert not window.data_page.formats_box.isVisibleTo(window)
