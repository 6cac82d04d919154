"""Thumbnails made on demand, off the GUI thread, with a capped queue and a bounded cache.

The grid asks for a thumbnail only when it paints an item (``QAbstractItemModel.data(DecorationRole)``), so a folder
of 50,000 pictures decodes only the few dozen on screen. Requests wait in a queue capped at ``max_pending``: when the
user scrolls past faster than pictures decode, the oldest requests (items no longer on screen) are dropped and asked
for again if they are painted again. Finished thumbnails are kept in an LRU cache of ``capacity`` pixmaps, by path.

The queue is written by hand rather than starting one job per request because a pool offers neither "newest first"
nor "drop the stale ones": a few decoding jobs of the window's job service (``gui.support.jobs``, on a lane of their
own so that a long evaluation never holds up the thumbnails) drain it, and hand each thumbnail back as it is made.
"""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

import os
import threading
from collections import OrderedDict

from PySide6.QtCore import QObject, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap

from engine.data.images import ImageError, load_rgb
from gui.support.jobs import Jobs, Progress

THUMB_SIZE = 96  # pixels, the longer side
CACHE_CAPACITY = 1200  # thumbnails kept (96 x 96 x 4 bytes each: about 45 MB at most)
MAX_PENDING = 256  # requests waiting to be decoded


def make_thumbnail(path: str, size: int = THUMB_SIZE) -> QImage:
    """Decode ``path`` (upright, RGB; JPEGs at a reduced scale) into a QImage whose longer side is ``size``."""
    from PIL import Image

    image = load_rgb(path, draft_size=(size * 2, size * 2))
    image.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    data = image.tobytes("raw", "RGB")
    return QImage(data, image.width, image.height, 3 * image.width, QImage.Format.Format_RGB888).copy()


class ThumbnailCache:
    """The most recently used thumbnails, by file path, at most ``capacity`` of them."""

    def __init__(self, capacity: int = CACHE_CAPACITY) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, QPixmap] = OrderedDict()

    def get(self, path: str) -> QPixmap | None:
        pixmap = self._items.get(path)
        if pixmap is not None:
            self._items.move_to_end(path)
        return pixmap

    def put(self, path: str, pixmap: QPixmap) -> None:
        self._items[path] = pixmap
        self._items.move_to_end(path)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __contains__(self, path: str) -> bool:
        return path in self._items

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()


class ThumbnailLoader(QObject):
    """Decodes requested thumbnails with a few jobs of the job service; results arrive on the GUI thread as
    signals. The jobs run on a lane of their own in ``jobs`` (the window's job service), or on a service of the
    loader's own."""

    loaded = Signal(str, QImage)  # path, thumbnail
    failed = Signal(str, str)  # path, the reason it cannot be shown

    def __init__(self, size: int = THUMB_SIZE, max_pending: int = MAX_PENDING, threads: int | None = None,
                 parent: QObject | None = None, jobs: Jobs | None = None) -> None:
        super().__init__(parent)
        self.size = size
        self.max_pending = max_pending
        self.threads = threads or max(1, min(4, os.cpu_count() or 1))
        self.jobs = Jobs(self, self.threads, service=jobs)
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, None] = OrderedDict()  # oldest first
        self._in_progress: set[str] = set()
        self._drainers = 0
        self._closed = False
        self.decodes = 0  # pictures decoded so far (a test checks that only visible ones are)
        self.dropped = 0  # requests dropped because the queue was full

    def request(self, path: str) -> None:
        """Ask for the thumbnail of ``path``; asking again for one already waiting moves it to the front."""
        with self._lock:
            if self._closed or path in self._in_progress:
                return
            self._pending[path] = None
            self._pending.move_to_end(path)
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
                self.dropped += 1
            start = self._drainers < self.threads
            if start:
                self._drainers += 1
        if start and self.jobs.start(None, self._drain, lambda _: None, on_item=self._deliver,
                                     what="Making thumbnails") is None:
            with self._lock:  # the service has shut down
                self._drainers -= 1

    def cancel_pending(self) -> None:
        """Forget every request not yet started (e.g. when the grid shows other pictures)."""
        with self._lock:
            self._pending.clear()

    def is_idle(self) -> bool:
        with self._lock:
            return not self._pending and not self._in_progress and self._drainers == 0

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def shutdown(self) -> None:
        """Drop every request and wait for the pictures being decoded (the window's job service also does this)."""
        with self._lock:
            self._closed = True
            self._pending.clear()
        self.jobs.shutdown()

    def _drain(self, progress: Progress, stop: threading.Event) -> None:
        """A decoding job: the newest request first (what is on screen now), until none is left."""
        ended = False
        try:
            while True:
                with self._lock:
                    if self._closed or stop.is_set() or not self._pending:
                        self._drainers -= 1
                        ended = True
                        return
                    path, _ = self._pending.popitem(last=True)
                    self._in_progress.add(path)
                    self.decodes += 1
                try:
                    image, error = make_thumbnail(path, self.size), None
                except ImageError as exc:
                    image, error = None, str(exc)
                except Exception as exc:  # never let a decoder's surprise end the job with the queue still full
                    image, error = None, f"The picture cannot be shown ({exc.__class__.__name__})."
                with self._lock:
                    self._in_progress.discard(path)
                progress.send((path, image, error))
        finally:
            if not ended:
                with self._lock:
                    self._drainers -= 1

    def _deliver(self, item: tuple[str, QImage | None, str | None]) -> None:
        path, image, error = item
        if self._closed:
            return
        if image is not None:
            self.loaded.emit(path, image)
        else:
            self.failed.emit(path, error)


def placeholder_pixmap(size: int, colour: QColor) -> QPixmap:
    """A faint rounded square shown while a thumbnail is on its way."""
    pixmap = QPixmap(QSize(size, size))
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(colour)
    inset = size // 8
    painter.drawRoundedRect(inset, inset, size - 2 * inset, size - 2 * inset, 6, 6)
    painter.end()
    return pixmap
