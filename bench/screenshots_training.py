"""Screenshots of the Train step in the real main window (offscreen), on the ants-vs-bees pictures:

    docs/train-live.png      a progressive-unfreezing run of MobileNetV2 in progress: curves, phases, which stages
                             learn (the heat map), progress and messages
    docs/runs-compared.png   the Run history with that run and a feature-extraction run overlaid

Both runs are trained from the Train step, as a user would, into a folder outside the repository.

    python bench/screenshots_training.py [--runs /tmp/transfer-studio-shots/train-runs] [--out docs]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from screenshots_results import HYMENOPTERA, WEIGHTS, settle, wait, window_on_hymenoptera  # noqa: E402

LIVE_AT_EPOCH = 5  # the live screenshot is taken when this epoch ends (phase 3 of progressive unfreezing)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default=str(Path(tempfile.gettempdir()) / "transfer-studio-shots" / "train-runs"))
    parser.add_argument("--out", default=str(REPO / "docs"))
    args = parser.parse_args(argv)
    for needed in (HYMENOPTERA, WEIGHTS):
        if not needed.exists():
            raise SystemExit(f"needs {needed} (only on the project's own machines)")
    out = Path(args.out)
    runs_folder = Path(args.runs)
    if runs_folder.exists():
        import shutil

        shutil.rmtree(runs_folder)

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])  # noqa: F841
    from engine import events as ev

    window = window_on_hymenoptera()
    panel = window.training.train
    window.steps.go_to("train")
    wait(lambda: panel.preloaded.is_set())

    def train(strategy: str, epochs: int, lr: float, live_at: int | None = None) -> None:
        config = window.project.config
        window.project.set_config(dataclasses.replace(
            config, model=dataclasses.replace(config.model, name="torchvision:mobilenet_v2", weights=str(WEIGHTS)),
            strategy=strategy, epochs=epochs, lr=lr, phases=(), out=str(runs_folder), name=strategy,
            train=dataclasses.replace(config.train, augment="light", device="cpu")))
        window.steps.go_to("train")
        state = {"epoch": 0, "done": False}
        panel.controller.event.connect(
            lambda e: state.update(epoch=e.epoch) if isinstance(e, ev.EpochEnded) else None)
        panel.runFinished.connect(lambda _: state.update(done=True))
        panel.start()
        if live_at is not None:
            wait(lambda: state["epoch"] >= live_at or state["done"], 1800)
            wait(lambda: False, 2.5)  # a few steps into the next epoch, and the plots' redraws
            panel.plots.redraw()
            settle()
            window.grab().save(str(out / "train-live.png"))
        wait(lambda: state["done"], 3600)
        result = panel.last_result
        print(f"{strategy}: {result.status}, best validation accuracy {result.best_val_acc}", flush=True)

    train("progressive", epochs=8, lr=3e-3, live_at=LIVE_AT_EPOCH)
    train("feature-extraction", epochs=8, lr=3e-3)

    # -- the two runs compared
    panel.tabs.setCurrentWidget(panel.history)
    panel.history.refresh()
    panel.history.select(list(range(panel.history.table.rowCount())))
    settle()
    window.grab().save(str(out / "runs-compared.png"))

    window.shutdown()
    window.close()
    for name in ("train-live", "runs-compared"):
        print(out / f"{name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
