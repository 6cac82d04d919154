"""Benchmark: the dataset browser on a folder of 50,000 pictures.

Builds a synthetic folder (tiny PNG and JPEG files, 10 classes) in a temporary folder, opens it in the real main
window (offscreen), and prints

- the scan time (every picture is opened once to find unreadable ones), against a plain directory listing of the same
  folder measured in the same run;
- the time from the end of the scan to the first screen of thumbnails shown in the grid (target: under 2 s), against
  decoding that many thumbnails in a plain loop;
- memory: the peak resident size (sampled with psutil every 10 ms) and the resident size after scrolling through the
  whole grid, which shows that memory stays bounded (only painted items are decoded; the cache is capped).

    python bench/bench_browser.py [--count 50000] [--keep]

The folder is deleted afterwards unless --keep is given.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402

CLASSES = 10
VARIANTS = 50  # distinct encoded pictures per class, written again and again


def build_folder(root: Path, count: int) -> float:
    """``count`` tiny pictures in ``CLASSES`` class folders; returns the seconds taken."""
    from PIL import Image, ImageDraw

    began = time.perf_counter()
    rng = random.Random(0)
    per_class = count // CLASSES
    for c in range(CLASSES):
        folder = root / f"class_{c:02d}"
        folder.mkdir(parents=True)
        encoded = []
        for v in range(VARIANTS):
            image = Image.new("RGB", (48, 40), tuple(rng.randrange(256) for _ in range(3)))
            ImageDraw.Draw(image).ellipse([rng.randrange(20), rng.randrange(16), 30, 30],
                                          fill=tuple(rng.randrange(256) for _ in range(3)))
            buffer = io.BytesIO()
            kind = "PNG" if v % 2 else "JPEG"
            image.save(buffer, kind)
            encoded.append((buffer.getvalue(), ".png" if kind == "PNG" else ".jpg"))
        for i in range(per_class):
            data, suffix = encoded[i % VARIANTS]
            (folder / f"img_{i:05d}{suffix}").write_bytes(data)
    return time.perf_counter() - began


class PeakMemory:
    """Samples this process's resident memory every 10 ms on a thread."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def now(self) -> int:
        return self.process.memory_info().rss

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--keep", action="store_true", help="keep the generated folder")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-browser-"))
    root = tmp / "pictures"
    try:
        built = build_folder(root, args.count)
        print(f"built {args.count:,} pictures in {CLASSES} classes in {built:.1f} s ({root})")

        began = time.perf_counter()
        listed = sum(len(files) for _, _, files in os.walk(root))
        listing = time.perf_counter() - began
        return run(tmp, root, listed, listing)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def run(tmp: Path, root: Path, listed: int, listing: float) -> int:
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from gui.steps.data.page import DataPage
    from gui.main_window import MainWindow
    from gui.settings import file_settings
    from gui.widgets.thumbnails import make_thumbnail

    # The clock for "after the scan finished" starts when the scan's result reaches the window, before the window
    # builds the grid, the chart and the health report from it.
    scan_ended = {}
    original = DataPage._on_scanned

    def timed(self, index, extra):
        scan_ended.setdefault("at", time.perf_counter())
        original(self, index, extra)

    DataPage._on_scanned = timed
    app = QApplication.instance() or QApplication([])
    memory = PeakMemory()
    window = MainWindow(settings=file_settings(tmp / "settings.ini"), data_dir=tmp / "data")
    window.resize(1280, 800)
    window.show()
    base_rss = memory.now()
    page = window.data_page
    browser = page.browser
    grid = browser.grid

    def wait_for(condition, timeout: float = 600.0, poll_ms: int = 2) -> float:
        """Run the event loop until ``condition()``; returns the time it became true."""
        loop = QEventLoop()
        deadline = time.perf_counter() + timeout
        result = {}

        def check():
            if condition():
                result["at"] = time.perf_counter()
                loop.quit()
            elif time.perf_counter() > deadline:
                loop.quit()
            else:
                QTimer.singleShot(poll_ms, check)

        QTimer.singleShot(0, check)
        loop.exec()
        if "at" not in result:
            raise SystemExit("timed out")
        return result["at"]

    began = time.perf_counter()
    window.open_folder(root)
    wait_for(lambda: "at" in scan_ended, poll_ms=20)
    scan_s = scan_ended["at"] - began
    index = window.project.dataset
    scan_rss = memory.now()

    def first_screen_shown() -> bool:
        if window.project.dataset is None or browser.model.rowCount() == 0:
            return False
        rows = grid.visible_rows()
        return bool(rows) and all(browser.model.has_thumbnail(r) for r in rows)

    shown_at = wait_for(first_screen_shown)
    grid.viewport().repaint()  # the last thumbnails painted
    first_s = time.perf_counter() - scan_ended["at"]
    visible = len(grid.visible_rows())
    decodes_first = browser.loader.decodes

    # Baseline: decoding the same number of thumbnails in a plain loop on the GUI thread.
    paths = [browser.model.sample(r).path for r in range(visible)]
    began = time.perf_counter()
    for path in paths:
        make_thumbnail(path)
    plain_s = time.perf_counter() - began

    # Scroll through the whole grid, a screen at a time in 40 jumps, letting each screen's thumbnails arrive.
    bar = grid.verticalScrollBar()
    for step in range(1, 41):
        bar.setValue(bar.maximum() * step // 40)
        wait_for(lambda: all(browser.model.has_thumbnail(r) for r in grid.visible_rows()))
    wait_for(browser.loader.is_idle)
    after_scroll_rss = memory.now()
    total_decodes = browser.loader.decodes
    cache = len(browser.model.cache)

    window.shutdown()
    window.close()
    memory.stop()
    del shown_at

    n = len(index.samples)
    print(f"pictures found:        {n:,} readable of {listed:,} files, {len(index.classes)} classes, "
          f"{len(index.health.unreadable)} unreadable")
    print(f"scan time:             {scan_s:6.2f} s   ({n / scan_s:,.0f} pictures/s; a plain directory listing "
          f"takes {listing:.2f} s, ratio {scan_s / listing:.0f}x: every picture is decoded once)")
    print(f"first thumbnails:      {first_s:6.2f} s after the scan finished "
          f"({visible} thumbnails on screen, {decodes_first} decoded; target < 2 s)")
    print(f"  baseline:            {plain_s:6.2f} s to decode those {visible} thumbnails in a plain loop "
          f"(ratio {first_s / plain_s:.2f}x, including the grid, chart and health panel for {n:,} pictures)")
    print(f"scrolled the grid:     40 screens, {total_decodes:,} thumbnails decoded in all "
          f"({total_decodes / n:.1%} of the pictures), {cache:,} kept in the cache (capacity "
          f"{browser.model.cache.capacity:,})")
    print(f"memory:                {mb(base_rss)} with the window open, {mb(scan_rss)} after the scan, "
          f"{mb(after_scroll_rss)} after scrolling; peak {mb(memory.peak)} (psutil RSS, sampled every 10 ms)")
    app.processEvents()
    return 0 if first_s < 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())
