"""Screenshot of the Data step on the ants-vs-bees pictures (offscreen): docs/browser-hymenoptera.png.

    python bench/screenshots_data.py [docs/browser-hymenoptera.png]
"""

import os
import sys
import tempfile
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))
from screenshots_results import HYMENOPTERA, wait, settle
from PySide6.QtWidgets import QApplication
app = QApplication([])
from gui.main_window import MainWindow
from gui.settings import file_settings
d = tempfile.mkdtemp()
w = MainWindow(settings=file_settings(d + "/s.ini"), data_dir=d + "/app"); w.ask_unsaved = lambda: "discard"
w.resize(1280, 800); w.show()
w.open_folder(HYMENOPTERA)
wait(lambda: w.project.dataset is not None and not w.data_page.scanning)
wait(lambda: w.data_page.browser.grid.model().rowCount() > 0); settle(1500)
w.grab().save(sys.argv[1] if len(sys.argv) > 1 else str(REPO / "docs" / "browser-hymenoptera.png"))
w.shutdown()
