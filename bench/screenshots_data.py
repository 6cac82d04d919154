"""Screenshot of the Data step on the ants-vs-bees pictures (offscreen): docs/browser-hymenoptera.png.

    python bench/screenshots_data.py [docs/browser-hymenoptera.png]
"""

import os
import sys

os.environ["QT_QPA_PLATFORM"] = "offscreen"
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))
from screenshots_results import settle, wait, window_on_hymenoptera
from PySide6.QtWidgets import QApplication

app = QApplication([])
w = window_on_hymenoptera()
wait(lambda: w.data_page.browser.grid.model().rowCount() > 0)
settle(1500)
w.grab().save(sys.argv[1] if len(sys.argv) > 1 else str(REPO / "docs" / "browser-hymenoptera.png"))
w.shutdown()
