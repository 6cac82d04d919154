"""Screenshots of the Train step's learning-rate finder and training doctor (offscreen), on ants-vs-bees:

    docs/lr-finder.png         the finder's curve for MobileNetV2 feature extraction, its suggestion marked
    docs/training-doctor.png   the doctor's verdicts on a run, each with its button

    python bench/screenshots_advice.py --run RUN_FOLDER [--out docs]

RUN_FOLDER is any run (its verdicts are computed again and shown); the finder runs on the shared pictures.
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
    parser.add_argument("--run", required=True)
    parser.add_argument("--out", default=str(REPO / "docs"))
    args = parser.parse_args()
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from engine.train.trainer import RunResult
    from gui.steps.train.panel import TrainPanel

    panel = TrainPanel()
    panel.resize(1280, 760)
    config = RunConfig(data=DataConfig(source=str(HYMENOPTERA)), model=ModelConfig("torchvision:mobilenet_v2",
                       str(WEIGHTS)), strategy="feature-extraction", epochs=10, lr=0.001,
                       train=TrainConfig(workers=0), out=str(Path(tempfile.gettempdir()) / "shots-runs"))
    panel.set_config(config)
    panel.show()
    panel.find_lr()
    while not panel.jobs.idle():
        app.processEvents()
    app.processEvents()
    out = Path(args.out)
    panel.grab().save(str(out / "lr-finder.png"))
    panel.on_finished(RunResult("completed", args.run, None, None, 0, None))
    for _ in range(5):
        app.processEvents()
    panel.grab().save(str(out / "training-doctor.png"))
    panel.shutdown()
    print(f"written to {out / 'lr-finder.png'} and {out / 'training-doctor.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
