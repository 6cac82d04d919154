"""How long the layer tree of a large model takes to open, and whether the window stays responsive meanwhile.

For each model (weights "none"): the model is built by gui.support.model_builder.ModelBuilder on its background thread, then
the layer editor fills its tree on the GUI thread (top-level rows; then every row opened, the worst case). A 10 ms
QTimer on the GUI thread records how late each of its ticks fires: the longest lateness is the longest stall a user
could feel. The baseline is the plain PyTorch way, measured in the same run: ``timm.create_model`` on the GUI
thread, which would freeze the window for its whole duration. Run:

    .venv/bin/python bench/bench_layer_tree.py [MODEL ...]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PySide6.QtCore import QEventLoop, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

MODELS = ("timm:vit_base_patch16_224", "timm:convnext_base")
TICK_MS = 10
NUM_CLASSES = 2


class StallMeter:
    """A timer that notes how late it fires; its worst lateness is the GUI thread's longest stall."""

    def __init__(self) -> None:
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.worst = 0.0
        self._last = 0.0

    def start(self) -> None:
        self.worst = 0.0
        self._last = time.perf_counter()
        self.timer.start()

    def stop(self) -> float:
        self._tick()
        self.timer.stop()
        return self.worst

    def _tick(self) -> None:
        now = time.perf_counter()
        self.worst = max(self.worst, now - self._last - TICK_MS / 1000)
        self._last = now


def open_everything(editor) -> int:
    """Open every row of the tree (fetching children as the view would); returns the number of rows."""
    model = editor.model
    rows = 0
    pending = [model.index(r, 0) for r in range(model.rowCount())]
    while pending:
        index = pending.pop()
        rows += 1
        if model.canFetchMore(index):
            model.fetchMore(index)
        editor.view.expand(index)
        pending.extend(model.index(r, 0, index) for r in range(model.rowCount(index)))
    return rows


def measure(name: str, editor, meter: StallMeter) -> dict:
    from gui.support.model_builder import ModelBuilder

    builder = ModelBuilder()
    loop = QEventLoop()
    results = []
    builder.built.connect(lambda r: (results.append(r), loop.quit()))
    builder.failed.connect(lambda m: (results.append(m), loop.quit()))
    meter.start()
    began = time.perf_counter()
    builder.build(name, "none", NUM_CLASSES)
    loop.exec()
    built_at = time.perf_counter()
    result = results[0]
    if isinstance(result, str):
        raise SystemExit(result)
    editor.set_build_result(result)
    QApplication.processEvents()  # paint the first view
    shown_at = time.perf_counter()
    stall_while_building = meter.stop()
    meter.start()
    opened_at = time.perf_counter()
    rows = open_everything(editor)
    QApplication.processEvents()
    all_open = time.perf_counter() - opened_at
    stall_opening_all = meter.stop()
    builder.shutdown()  # its job has ended: this joins the pool's thread
    return {"build_s": built_at - began, "first_view_s": shown_at - built_at, "total_s": shown_at - began,
            "stall_s": stall_while_building, "rows": rows, "open_all_s": all_open,
            "open_all_stall_s": stall_opening_all, "stages": len(result.tree.names)}


def baseline(name: str) -> float:
    """The naive way: build the model on the GUI thread (the window freezes for all of it)."""
    import timm

    began = time.perf_counter()
    timm.create_model(name.split(":", 1)[1], pretrained=False, num_classes=NUM_CLASSES)
    return time.perf_counter() - began


def main(names: list[str]) -> None:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    from gui.steps.layers import LayerEditor

    editor = LayerEditor()
    editor.resize(1100, 760)
    editor.show()
    meter = StallMeter()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"stall = worst lateness of a {TICK_MS} ms GUI timer")
    cold = measure(names[0], editor, meter)  # the first build also imports timm on the worker thread
    print(f"cold start ({names[0]}, includes importing timm on the worker): {cold['total_s']:.2f} s, "
          f"longest GUI stall {cold['stall_s'] * 1000:.0f} ms")
    for name in names:
        m = measure(name, editor, meter)
        naive = baseline(name)
        print(f"{name}: {m['stages']} stages; build (background thread) {m['build_s']:.2f} s, "
              f"tree shown {m['first_view_s'] * 1000:.0f} ms after, total {m['total_s']:.2f} s; "
              f"longest GUI stall {m['stall_s'] * 1000:.0f} ms")
        print(f"    opening all {m['rows']} rows: {m['open_all_s'] * 1000:.0f} ms "
              f"(longest stall {m['open_all_stall_s'] * 1000:.0f} ms)")
        print(f"    baseline, timm.create_model on the GUI thread: {naive:.2f} s frozen; "
              f"stall ratio {m['stall_s'] / naive:.3f} (GUI frozen {naive / max(m['stall_s'], 1e-9):.0f}x "
              "less long)")
    app.quit()


if __name__ == "__main__":
    main(sys.argv[1:] or list(MODELS))
