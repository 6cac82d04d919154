"""Screenshots of the Evaluate and Predict & Export steps in the real main window, on the ants-vs-bees pictures.

Trains (once) a MobileNetV2 feature-extraction run on ``../shared/datasets/hymenoptera`` from the weights in
``../shared/weights`` into a folder outside the repository, opens the dataset in the main window (offscreen), points the
project's runs folder at that run, evaluates it from the Evaluate step, and writes

    docs/evaluate-matrix.png    the figures, the confusion matrix and the calibration
    docs/evaluate-cell.png      a clicked cell of the matrix: the pictures behind it, the first one large
    docs/evaluate-heatmap.png   a picture with its heat map
    docs/predict.png            predictions of new pictures, one with its heat map, and a finished export

    python bench/screenshots_results.py [--runs /tmp/transfer-studio-shots/runs] [--out docs]
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
SHARED = REPO.parent / "shared"
HYMENOPTERA = SHARED / "datasets" / "hymenoptera"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_in1k.safetensors"
SIZE = (1280, 800)


def wait(condition, timeout_s: float = 600) -> bool:
    """Run the event loop until ``condition()`` holds (checked every 50 ms) or the time is up."""
    from PySide6.QtCore import QEventLoop, QTimer

    if condition():
        return True
    loop = QEventLoop()
    timer = QTimer()
    timer.timeout.connect(lambda: loop.quit() if condition() else None)
    timer.start(50)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    timer.stop()
    return condition()


def settle(ms: int = 400) -> None:
    """Let thumbnails arrive and layouts settle before a screenshot."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def window_on_hymenoptera():
    """A main window of the app's own (settings and data folder in a scratch folder), SIZE pixels, showing the
    ants-vs-bees pictures once their scan has finished. Needs a QApplication."""
    from gui.main_window import MainWindow
    from gui.settings import file_settings

    scratch = Path(tempfile.mkdtemp(prefix="transfer-studio-shots-"))
    window = MainWindow(settings=file_settings(scratch / "settings.ini"), data_dir=scratch / "app")
    window.ask_unsaved = lambda: "discard"
    window.resize(*SIZE)
    window.show()
    window.open_folder(HYMENOPTERA)
    wait(lambda: window.project.dataset is not None and not window.data_page.scanning)
    return window


def completed_run(runs_folder: Path) -> Path:
    """A completed run in ``runs_folder``, trained now when there is none."""
    from engine.project import runs
    from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from engine.train.trainer import fit

    for info in runs.list_runs(runs_folder):
        if info.status == "completed" and info.model == "torchvision:mobilenet_v2" and \
                (Path(info.path) / runs.BEST).is_file():
            return Path(info.path)
    print(f"training a MobileNetV2 feature-extraction run into {runs_folder} ...", flush=True)
    config = RunConfig(data=DataConfig(source=str(HYMENOPTERA)),
                       model=ModelConfig("torchvision:mobilenet_v2", str(WEIGHTS)), strategy="feature-extraction",
                       epochs=3, out=str(runs_folder), name="ants-vs-bees", train=TrainConfig(device="cpu"))
    result = fit(config)
    if result.status != "completed":
        raise SystemExit(f"the run did not complete: {result.error}")
    return Path(result.run_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default=str(Path(tempfile.gettempdir()) / "transfer-studio-shots" / "runs"),
                        help="folder for the run (outside the repository)")
    parser.add_argument("--out", default=str(REPO / "docs"), help="where the PNG files go")
    args = parser.parse_args(argv)
    for needed in (HYMENOPTERA, WEIGHTS):
        if not needed.exists():
            raise SystemExit(f"needs {needed} (only on the project's own machines)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = completed_run(Path(args.runs))

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = window_on_hymenoptera()
    # The project as the run was made: its model, weights and strategy (the status bar and the Model step agree).
    config = window.project.config
    window.project.set_config(dataclasses.replace(
        config, model=dataclasses.replace(config.model, name="torchvision:mobilenet_v2", weights=str(WEIGHTS)),
        strategy="feature-extraction", epochs=3, out=str(run.parent)))
    results = window.results
    page = results.evaluate
    page.select_run(str(run))

    # -- Evaluate: the figures, the matrix and the calibration
    window.steps.go_to("evaluate")
    page.evaluate()
    wait(lambda: not page.jobs.running("evaluate"))
    if page.evaluation is None:
        raise SystemExit(f"the evaluation failed: {page.status.text()}")
    split = page.split
    page.tabs.setCurrentWidget(page.calibration)
    settle()
    window.grab().save(str(out / "evaluate-matrix.png"))

    # -- a clicked cell: bees taken for ants (or the largest confusion)
    classes = list(split.classes)
    off = [(split.confusion[t][p], t, p) for t in range(len(classes)) for p in range(len(classes)) if t != p]
    count, true, predicted = max(off)
    if "bees" in classes and "ants" in classes and split.confusion[classes.index("bees")][classes.index("ants")]:
        true, predicted = classes.index("bees"), classes.index("ants")
    rect = page.matrix.cell_rect(true, predicted)
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    QTest.mouseClick(page.matrix.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    wait(lambda: page.panel.base is not None, 60)
    wait(lambda: page.cell_model.loader.is_idle(), 60)
    settle()
    window.grab().save(str(out / "evaluate-cell.png"))

    # -- a heat map: a bee the model recognised, most confident first
    t = classes.index("bees") if "bees" in classes else 0
    rect = page.matrix.cell_rect(t, t)
    QTest.mouseClick(page.matrix.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    page.cell_gallery.select_row(min(1, page.cell_model.rowCount() - 1))
    page.panel.heat.setChecked(True)
    page.right.setSizes([230, 420])  # room for the picture (the user drags the splitter the same way)
    wait(lambda: page.panel.showing_overlay or "color" in page.panel.status.text(), 120)
    wait(lambda: page.cell_model.loader.is_idle(), 60)
    settle()
    window.grab().save(str(out / "evaluate-heatmap.png"))

    # -- Predict & Export: a few new pictures, one with its heat map, and an export
    predict = results.predict
    predict.select_run(str(run))
    window.steps.go_to("export")
    pictures = sorted(str(p) for p in (HYMENOPTERA / "val").rglob("*.jpg"))[5::15][:10]
    predict.add_paths(pictures)
    wait(lambda: predict.model.rowCount() == len(pictures) and not predict.jobs.running("predict"), 120)
    predict.table.selectRow(2)
    predict.panel.heat.setChecked(True)
    wait(lambda: predict.panel.showing_overlay or "color" in predict.panel.status.text(), 120)
    predict.out_edit.setText(str(Path(args.runs).parent / "export"))
    predict.export()
    wait(lambda: not predict.jobs.running("export"), 300)
    wait(lambda: predict.loader.is_idle(), 60)
    settle()
    window.grab().save(str(out / "predict.png"))

    results.shutdown()
    window.shutdown()
    window.close()
    for name in ("evaluate-matrix", "evaluate-cell", "evaluate-heatmap", "predict"):
        print(out / f"{name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
