"""How long the window's event loop stalls while a real run trains from the Train step.

The Train step (``gui.steps.train.panel.TrainPanel``, with its one training thread) trains torchvision's MobileNetV2 with the
shared ImageNet weights on ``../shared/datasets/hymenoptera`` (or, without ../shared, a generated dataset and random
weights). A 10 ms QTimer on the GUI thread records how late each tick fires: its worst lateness is the longest a user
would wait for the window to react. When a tick is late by more than REPORT_MS, a watchdog thread has already sampled
the stacks of every thread, so the report says what the window and the engine were doing meanwhile (a call that holds
Python's global interpreter lock is the usual cause).

    .venv/bin/python bench/bench_gui_stall.py [--strategy fine-tune-deep] [--epochs 2]

The baseline is plain PyTorch's way of showing progress in a window: the training loop on the GUI thread, calling
``processEvents`` after every batch; its stall is the time of one batch.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PySide6.QtCore import QEventLoop, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

SHARED = REPO.parent / "shared"
HYMENOPTERA = SHARED / "datasets" / "hymenoptera"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_in1k.safetensors"
TICK_MS = 10
REPORT_MS = 50


class StallMeter:
    """A 10 ms timer on the GUI thread that records its lateness, with a watchdog that samples the training thread's
    stack whenever the GUI thread has not ticked for REPORT_MS."""

    def __init__(self) -> None:
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.lateness: list[float] = []
        self.ends: list[float] = []  # when each tick fired
        self.samples: list[tuple[float, str]] = []  # (stall so far in s, training thread's stack)
        self._last = time.perf_counter()
        self._alive = True
        self._watch = threading.Thread(target=self._watchdog, daemon=True)

    def start(self, explain: bool = True) -> None:
        self._last = time.perf_counter()
        self.timer.start()
        if explain:
            self._watch.start()

    def stop(self) -> None:
        self._alive = False
        self.timer.stop()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.lateness.append(now - self._last - TICK_MS / 1000)
        self.ends.append(now)
        self._last = now

    def _watchdog(self) -> None:
        while self._alive:
            time.sleep(REPORT_MS / 1000 / 2)
            waited = time.perf_counter() - self._last
            if waited > REPORT_MS / 1000:
                names = {t.ident: t.name for t in threading.enumerate()}
                me = threading.get_ident()
                stacks = [f"[{names.get(ident, ident)}]\n" + "".join(traceback.format_stack(frame)[-3:])
                          for ident, frame in sys._current_frames().items() if ident != me]
                self.samples.append((waited, "".join(stacks)))


def _describe(event) -> str:
    name = type(event).__name__
    if name == "Log":
        return f"Log({event.message[:70]!r})"
    if name in ("StepEnded", "EpochEnded"):
        return f"{name}(epoch {event.epoch})"
    return name


def make_config(args, out: Path):
    from engine.config import ModelConfig, RunConfig, TrainConfig, DataConfig

    if HYMENOPTERA.is_dir() and WEIGHTS.is_file():
        data, weights = str(HYMENOPTERA), str(WEIGHTS)
    else:
        sys.path.insert(0, str(REPO / "tests"))
        from conftest import make_class_folders

        data = str(make_class_folders(out / "pictures", per_class=60, size=(160, 120)))
        weights = "none"
    return RunConfig(data=DataConfig(source=data), model=ModelConfig(name="torchvision:mobilenet_v2", weights=weights),
                     strategy=args.strategy, epochs=args.epochs, lr=1e-3,
                     train=TrainConfig(batch_size=16, augment="light"), out=str(out / "runs"), name="stall")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategy", default="fine-tune-deep")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--show", type=int, default=3,
                        help="how many of the longest stalls to explain; 0 measures without the watchdog, whose "
                             "stack sampling (it reads source files) itself lengthens the stalls it samples")
    parser.add_argument("--engine-scans", action="store_true",
                        help="let the run scan and check the pictures itself (the window hands over its own scan)")
    args = parser.parse_args()

    app = QApplication.instance() or QApplication([])
    from gui.steps.train.panel import TrainPanel

    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(args, Path(tmp))
        panel = TrainPanel()
        panel.resize(1300, 820)
        panel.show()
        panel.set_config(config)
        if not args.engine_scans:  # as in the window: the Data step has scanned and checked the pictures already
            from engine.data.scan import scan

            panel.set_dataset(scan(config.data.source))
        meter = StallMeter()
        loop = QEventLoop()
        panel.runFinished.connect(lambda _: loop.quit())
        while not panel.preloaded.wait(0.05):  # as in the window, where the user takes longer than this to press Train
            app.processEvents()
        seen: list[tuple[float, str]] = []  # (arrival in the GUI thread, the engine event) to place each stall
        panel.controller.event.connect(lambda e: seen.append((time.perf_counter(), _describe(e))))
        before = set(sys.modules)
        began = time.perf_counter()
        meter.start(explain=args.show > 0)
        panel.start()
        loop.exec()
        meter.stop()
        seconds = time.perf_counter() - began
        result = panel.last_result
        new = sorted({m.split(".")[0] + ("." + m.split(".")[1] if m.count(".") else "")
                      for m in set(sys.modules) - before})
        print(f"modules first imported during the run ({len(set(sys.modules) - before)}): {', '.join(new)}")
        worst_at = max(range(len(meter.lateness)), key=meter.lateness.__getitem__) if meter.lateness else None
        if worst_at is not None:
            end = meter.ends[worst_at]
            start = end - meter.lateness[worst_at] - TICK_MS / 1000
            before_events = [d for t, d in seen if t <= start][-2:]
            after_events = [d for t, d in seen if t > start][:2]
            print(f"the longest stall began {start - began:.2f} s into the run; engine events just before it: "
                  f"{before_events}; just after: {after_events}")
        late = sorted(meter.lateness)
        worst = late[-1] * 1000 if late else 0.0
        p99 = late[int(0.99 * (len(late) - 1))] * 1000 if late else 0.0
        over = sum(1 for v in late if v * 1000 > 100)
        print(f"run: {config.strategy}, {config.epochs} epochs, data {config.data.source}: {result.status} "
              f"in {seconds:.0f} s, best validation accuracy {result.best_val_acc}" + (f" ({result.error})" if result.error else ""))
        print(f"GUI event loop during the run: {len(late)} ticks of {TICK_MS} ms; longest stall {worst:.0f} ms, "
              f"99th percentile {p99:.0f} ms, stalls over 100 ms: {over}")
        # The watchdog samples a stall every REPORT_MS / 2: keep the last sample of each stall (its longest).
        stalls = [a for a, b in zip(meter.samples, meter.samples[1:] + [(0.0, "")]) if b[0] < a[0]]
        for waited, stacks in sorted(stalls, key=lambda s: -s[0])[:args.show]:
            print(f"\n--- every thread during a stall of at least {waited * 1000:.0f} ms:\n{stacks}")
        panel.shutdown()
    app.processEvents()


if __name__ == "__main__":
    main()
