"""Screenshots of the Data step on lab pictures (offscreen): the browser and the preview on 12-bit DICOMs, on 16-bit
fluorescence TIFFs and on a whole slide's tiles -- docs/formats-*.png. The pictures are generated here.

    python bench/screenshots_formats.py [OUT_FOLDER]
"""

import os
import sys
import tempfile

os.environ["QT_QPA_PLATFORM"] = "offscreen"
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from lab_pictures import PATIENT, cells, write_dicom, write_slide, write_tiff, xray  # noqa: E402


def make_data(root: Path) -> dict[str, Path]:
    dicom = root / "chest x-rays"
    for i in range(10):
        for name, shadow in (("clear", False), ("shadow", True)):
            write_dicom(dicom / name / f"study_{i:03d}.dcm", xray(i + 100 * shadow, shadow), RescaleSlope=1,
                        RescaleIntercept=-1024, WindowCenter=600, WindowWidth=2600,
                        photometric="MONOCHROME2", syntax="rle" if i % 3 == 0 else None, **PATIENT)
    tiff = root / "infected cells"
    for i in range(10):
        for name, infected in (("healthy", False), ("infected", True)):
            write_tiff(tiff / name / f"well_{i:02d}.tif", cells(i + 50 * infected, infected))
    slides = root / "biopsies"
    for i in range(3):
        write_slide(slides / "benign" / f"case_{2 * i + 1:02d}.tiff", width=2048, height=1536,
                    tissue=((300 + 60 * i, 200, 1200, 900), (1300, 700, 1800, 1300)), colour=(200, 120, 190), seed=i)
        write_slide(slides / "tumour" / f"case_{2 * i + 2:02d}.tiff", width=2048, height=1536,
                    tissue=((500, 300 + 80 * i, 1700, 1200),), colour=(150, 50, 140), seed=10 + i)
    return {"dicom": dicom, "tiff16": tiff, "slide": slides}


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs"
    from PySide6.QtWidgets import QApplication

    from screenshots_results import SIZE, settle, wait
    from gui.main_window import MainWindow
    from gui.settings import file_settings

    app = QApplication([])  # noqa: F841
    scratch = Path(tempfile.mkdtemp(prefix="transfer-studio-formats-"))
    data = make_data(scratch / "data")
    for name, folder in data.items():
        window = MainWindow(settings=file_settings(scratch / f"{name}.ini"), data_dir=scratch / f"app-{name}")
        window.ask_unsaved = lambda: "discard"
        window.resize(*SIZE)
        window.show()
        window.open_folder(folder)
        wait(lambda: window.project.dataset is not None and not window.data_page.scanning)
        if name == "slide":  # tiles of 256 px: more of them in the grid
            window.data_page._on_formats_changed({"slide_tile": 256})
            wait(lambda: not window.data_page.scanning and window.project.dataset is not None)
        browser = window.data_page.browser
        wait(lambda: browser.grid.model().rowCount() > 0)
        settle(2500)
        window.grab().save(str(out / f"formats-{name}-browser.png"))
        browser._open(browser.grid.model().index(1, 0))
        wait(lambda: browser.preview is not None and browser.preview.image.pixmap() is not None
             and not browser.preview.image.pixmap().isNull())
        settle(800)
        browser.preview.grab().save(str(out / f"formats-{name}-preview.png"))
        browser.preview.close()
        window.shutdown()
        window.close()


if __name__ == "__main__":
    main()
