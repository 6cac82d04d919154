"""Screenshots of the Label step in the real main window, on ants vs bees with a pool of held-back pictures.

Copies ``../shared/datasets/hymenoptera`` to a scratch folder, holds 40 training pictures back as the unlabelled pool,
trains (once) a MobileNetV2 feature-extraction run (``../shared/weights``), opens the data in the main window
(offscreen), points the Label step at the pool and writes

    docs/active-queue.png   the queue of suggestions with the first picture large, the model's guess pre-selected
    docs/active-label.png   the labelling view a few answers later (number keys pressed), after a retrain: the chart
    docs/active-grid.png    the grid of every picture still to label, several selected
    docs/active-map.png     the map of the pictures (PCA of the features) with a lasso selection

    python bench/screenshots_active.py [--work /tmp/transfer-studio-active-shots] [--out docs]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from screenshots_results import HYMENOPTERA, SIZE, WEIGHTS, settle, wait  # noqa: E402


def prepare(work: Path) -> tuple[Path, Path]:
    data, pool = work / "ants-bees", work / "pool"
    if not data.is_dir():
        shutil.copytree(HYMENOPTERA, data)
        rng = random.Random(0)
        for name in ("ants", "bees"):
            for p in rng.sample(sorted((data / "train" / name).iterdir()), 20):
                pool.mkdir(parents=True, exist_ok=True)
                shutil.move(p, pool / p.name)
    return data, pool


def restart(work: Path) -> None:
    """A reused work folder starts again from its first run: the answers, the rounds and the retrained runs of an
    earlier time are removed (else the queue shows old answers, the newest retrain as the model, and the chart old
    rounds)."""
    runs = work / "runs"
    shutil.rmtree(work / "runs-labels-rounds", ignore_errors=True)
    (work / "runs-labels.csv").unlink(missing_ok=True)
    for run in sorted(runs.iterdir()) if runs.is_dir() else ():
        if "retrain" in run.name or not (run / "best.safetensors").is_file():
            shutil.rmtree(run, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "transfer-studio-active-shots"))
    parser.add_argument("--out", default=str(REPO / "docs"))
    args = parser.parse_args(argv)
    for needed in (HYMENOPTERA, WEIGHTS):
        if not needed.exists():
            raise SystemExit(f"needs {needed} (only on the project's own machines)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # grab().save() into a missing folder fails without a word
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data, pool = prepare(work)
    restart(work)

    from PySide6.QtCore import QPointF, Qt
    from PySide6.QtGui import QPolygonF
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from engine.train.trainer import fit
    from gui.main_window import MainWindow
    from gui.settings import file_settings

    app = QApplication.instance() or QApplication(sys.argv[:1])  # noqa: F841 (kept alive until the end)
    scratch = work / "app"
    window = MainWindow(settings=file_settings(work / "settings.ini"), data_dir=scratch)
    window.ask_unsaved = lambda: "discard"
    window.resize(*SIZE)
    window.show()
    window.open_folder(data)
    wait(lambda: window.project.dataset is not None and not window.data_page.scanning)
    config = window.project.config
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, name="torchvision:mobilenet_v2", weights=str(WEIGHTS)),
        strategy="feature-extraction", epochs=3, out=str(work / "runs"),
        train=dataclasses.replace(config.train, device="cpu", workers=0))
    window.project.set_config(config)
    runs = work / "runs"
    if not any(runs.glob("*/best.safetensors")):
        print("training a MobileNetV2 feature-extraction run ...", flush=True)
        result = fit(config)
        if result.status != "completed":
            raise SystemExit(f"the run did not complete: {result.error}")
    page = window.label_page
    page.refresh_runs()
    window.steps.go_to("label")
    page.set_pool(str(pool))
    wait(lambda: page.found is not None and not page.jobs.running("suggest"))
    wait(lambda: page.view.image.image is not None, 30)
    settle(800)
    window.grab().save(str(out / "active-queue.png"))

    # A few answers with the keys, then a retrain: the chart gets its second point.
    classes = page.classes
    for s in page.queue[:6]:
        truth = "ants" if "ant" in os.path.basename(s.path) or s.path in _ants(pool) else "bees"
        QTest.keyClick(page.view, getattr(Qt.Key, f"Key_{classes.index(truth) + 1}"))
    page.retrain()
    wait(lambda: not page.jobs.running("retrain") and not page.jobs.running("suggest"), 900)
    wait(lambda: page.view.image.image is not None, 30)
    page._go(2)
    wait(lambda: page.view.image.image is not None, 30)
    settle(800)
    window.grab().save(str(out / "active-label.png"))

    page.tabs.setCurrentIndex(1)
    for i in range(min(4, page.grid.count())):
        page.grid.item(i).setSelected(True)
    settle(1500)
    window.grab().save(str(out / "active-grid.png"))

    page.tabs.setCurrentIndex(2)
    settle(300)
    coords = page.map.coords
    x0, x1 = float(coords[:, 0].min()), float(coords[:, 0].max())
    y0, y1 = float(coords[:, 1].min()), float(coords[:, 1].max())
    cut = x0 + 0.45 * (x1 - x0)
    page.map.box.lasso(QPolygonF([QPointF(x0 - 1, y0 - 1), QPointF(cut, y0 - 1), QPointF(cut - 0.1 * (x1 - x0),
                                  (y0 + y1) / 2), QPointF(cut, y1 + 1), QPointF(x0 - 1, y1 + 1)]))
    settle(1500)
    window.grab().save(str(out / "active-map.png"))
    window.jobs.shutdown()
    print(f"written {out}/active-*.png")
    return 0


def _ants(pool: Path) -> set[str]:
    """The pool pictures that came from the ants folder (the hidden truth, for the simulated answers)."""
    return {str(pool / p.name) for p in (HYMENOPTERA / "train" / "ants").iterdir()}


if __name__ == "__main__":
    sys.exit(main())
