"""A whole slide in Predict & Export: choosing its row shows the slide (its thumbnail, not the sentence that a
slide is not one picture), and its heat map colours the tissue tiles by the model's certainty, leaving the glass
as it is."""

from __future__ import annotations

import numpy as np
import pytest

from gui.support.jobs import ModelCache, heat_map_view, load_view
from tests.engine.test_formats_privacy import lab_run  # noqa: F401  (the module's trained run on DICOMs and slides)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _array(qimage) -> np.ndarray:
    from PySide6.QtGui import QImage

    image = qimage.convertToFormat(QImage.Format.Format_RGB888)
    width, height, line = image.width(), image.height(), image.bytesPerLine()
    data = np.frombuffer(image.constBits(), np.uint8, count=line * height).reshape(height, line)
    return data[:, :width * 3].reshape(height, width, 3).copy()


def test_a_slide_shows_as_its_thumbnail(lab_run, qapp):  # noqa: F811
    _run, root, _ = lab_run
    view = load_view(str(root / "shadow" / "slide.tiff"), size=256)
    assert view.size == (256, 192)  # the 1024 x 768 slide, whole
    pixels = np.asarray(view)
    assert pixels[5, 5].min() > 230 and pixels[96, 128].max() < 220  # glass at the corner, tissue in the middle


def test_a_slides_heat_map_colours_its_tissue_tiles(lab_run, qapp):  # noqa: F811
    run, root, _ = lab_run
    plain, mixed, words = heat_map_view(ModelCache("cpu"), str(run), str(root / "shadow" / "slide.tiff"), size=256)
    plain, mixed = _array(plain), _array(mixed)
    assert plain.shape == mixed.shape == (192, 256, 3)
    assert np.array_equal(plain[:20, :20], mixed[:20, :20])  # glass (skipped tiles) left as it was
    assert np.abs(plain[96, 128].astype(int) - mixed[96, 128].astype(int)).sum() > 30  # tissue tiles coloured
    assert "tissue tiles" in words and "%" in words


def test_the_predict_page_answers_once_per_slide_and_maps_it(lab_run, qtbot, tmp_path):  # noqa: F811
    from gui.steps.predict import PredictPage

    run, root, _ = lab_run
    page = PredictPage()
    qtbot.addWidget(page)
    page.set_runs_folder(run.parent)
    page.select_run(str(run))
    page.add_paths([str(root / "shadow" / "slide.tiff"), str(root / "clear" / "study0.dcm")])
    qtbot.waitUntil(lambda: page.model.rowCount() == 2 and not page.jobs.running("predict"), timeout=120_000)
    slide, dicom = page.model.rows
    assert slide.path.endswith("slide.tiff") and slide.error is None and slide.class_name in ("clear", "shadow")
    assert slide.in_domain is not None and dicom.error is None  # the slide is scored like a picture
    page.table.selectRow(0)
    qtbot.waitUntil(lambda: page.panel.view.image is not None, timeout=60_000)
    page.panel.heat.setChecked(True)
    qtbot.waitUntil(lambda: "tissue tiles" in page.panel.status.text(), timeout=60_000)
