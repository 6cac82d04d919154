"""Screenshots of the advisor (issue 13): the Model step's suggested models and the Layers step's stage bars, on
ants-vs-bees with the shared MobileNetV2 weights (../shared; nothing is written when they are absent).

    python bench/screenshots_advisor.py [--out docs]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TRANSFER_STUDIO_CACHE", tempfile.mkdtemp(prefix="shots-cache-"))
SHARED = REPO.parent / "shared"
DATA = SHARED / "datasets" / "hymenoptera"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_in1k.safetensors"
MODEL = "torchvision:mobilenet_v2"


def wait(app, done, seconds: float = 900) -> None:
    import time

    from PySide6.QtCore import QEventLoop

    end = time.monotonic() + seconds
    while not done():
        if time.monotonic() > end:
            raise SystemExit("timed out waiting for the scores")
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 100)  # a script driving the window, not the app


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(REPO / "docs"))
    args = parser.parse_args()
    if not (DATA.is_dir() and WEIGHTS.is_file()):
        print("../shared is absent: no screenshots", file=sys.stderr)
        return 0
    from PySide6.QtWidgets import QApplication

    from engine.advise.transfer import Candidate
    from engine.config import DataConfig, ModelConfig, RunConfig
    from gui.steps.layers import LayerEditor
    from gui.support.model_builder import build_now
    from gui.widgets.advice import SuggestionsDialog

    app = QApplication.instance() or QApplication([])
    out = Path(args.out)
    models = [Candidate(MODEL, str(WEIGHTS), "mobilenet_v2, ImageNet weights (imported file)", "file"),
              Candidate("timm:resnet18", "none", "resnet18, random weights", "given"),
              Candidate(MODEL, "none", "mobilenet_v2, random weights", "given")]
    dialog = SuggestionsDialog(None, None, str(DATA), models=models)
    dialog.resize(980, 360)
    dialog.show()
    dialog.start()
    wait(app, lambda: dialog.advice is not None or "failed" in dialog.status.text())
    dialog.grab().save(str(out / "advisor-suggest-models.png"))
    print(f"wrote {out / 'advisor-suggest-models.png'}", file=sys.stderr)

    editor = LayerEditor()
    editor.resize(1200, 900)
    editor.set_config(RunConfig(data=DataConfig(source=str(DATA)), model=ModelConfig(MODEL, str(WEIGHTS))))
    editor.set_build_result(build_now(MODEL, str(WEIGHTS), 2))
    editor.show()
    editor.advice.start()
    wait(app, lambda: editor.advice.advice is not None or "failed" in editor.advice.text.text())
    editor.grab().save(str(out / "advisor-layer-scores.png"))
    print(f"wrote {out / 'advisor-layer-scores.png'}", file=sys.stderr)
    dialog.jobs.shutdown()
    editor.advice.jobs.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
