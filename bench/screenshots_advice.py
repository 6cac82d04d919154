"""Screenshots of the Train step's learning-rate finder and training doctor (offscreen), on ants-vs-bees:

    docs/lr-finder.png         the finder's curve for MobileNetV2 feature extraction, its suggestion marked
    docs/training-doctor.png   the doctor's verdicts on a real short run, each with its button

    python bench/screenshots_advice.py [--epochs 3] [--out docs]

Both run on the shared pictures through the panel itself: the finder's button, then Start training (feature
extraction for --epochs epochs, on the training thread, as a user would), and the verdicts the panel shows when the
run ends.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
HYMENOPTERA = SHARED / "datasets" / "hymenoptera"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_in1k.safetensors"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the short run the doctor looks at")
    parser.add_argument("--out", default=str(REPO / "docs"))
    args = parser.parse_args()
    from PySide6.QtCore import QEventLoop
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from gui.steps.train.panel import TrainPanel

    panel = TrainPanel()
    panel.resize(1280, 760)
    config = RunConfig(data=DataConfig(source=str(HYMENOPTERA)), model=ModelConfig("torchvision:mobilenet_v2",
                       str(WEIGHTS)), strategy="feature-extraction", epochs=args.epochs, lr=0.001,
                       train=TrainConfig(workers=0), out=tempfile.mkdtemp(prefix="shots-runs-"))
    panel.set_config(config)
    panel.show()
    panel.find_lr()
    while not panel.jobs.idle():
        app.processEvents()
    app.processEvents()
    out = Path(args.out)
    panel.grab().save(str(out / "lr-finder.png"))
    panel.start()
    while panel.last_result is None:
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 100)  # a script driving the window
    for _ in range(5):
        app.processEvents()
    result = panel.last_result
    if result.status != "completed":
        raise SystemExit(f"the short run did not complete: {result.error}")
    print(f"run {result.run_dir}: {result.epochs_completed} epochs, best {result.best_val_acc}", file=sys.stderr)
    panel.grab().save(str(out / "training-doctor.png"))
    panel.shutdown()
    print(f"written to {out / 'lr-finder.png'} and {out / 'training-doctor.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
