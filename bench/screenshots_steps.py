"""Screenshots of the welcome page and of every step at 1280 x 800 (offscreen), on the ants-vs-bees pictures with a
trained MobileNetV2: docs/welcome.png and docs/step-<n>-<key>.png.

    python bench/screenshots_steps.py [--out docs]

Needs ../shared (the pictures and the weights); trains a short feature-extraction run first when there is none.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

from screenshots_results import HYMENOPTERA, REPO, SIZE, WEIGHTS, completed_run, settle, wait, window_on_hymenoptera


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default=str(Path(tempfile.gettempdir()) / "transfer-studio-shots" / "runs"))
    parser.add_argument("--out", default=str(REPO / "docs"))
    args = parser.parse_args(argv)
    for needed in (HYMENOPTERA, WEIGHTS):
        if not needed.exists():
            raise SystemExit(f"needs {needed} (only on the project's own machines)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = completed_run(Path(args.runs))

    from PySide6.QtWidgets import QApplication

    from gui.main_window import MainWindow
    from gui.settings import file_settings

    app = QApplication.instance() or QApplication(sys.argv[:1])
    scratch = Path(tempfile.mkdtemp(prefix="transfer-studio-welcome-"))
    welcome = MainWindow(settings=file_settings(scratch / "settings.ini"), data_dir=scratch / "app")
    welcome.resize(*SIZE)
    welcome.show()
    settle(800)
    welcome.grab().save(str(out / "welcome.png"))
    welcome.shutdown()
    welcome.close()

    window = window_on_hymenoptera()
    config = window.project.config
    window.project.set_config(dataclasses.replace(
        config, model=dataclasses.replace(config.model, name="torchvision:mobilenet_v2", weights=str(WEIGHTS)),
        strategy="feature-extraction", epochs=3, out=str(run.parent)))
    wait(lambda: window.data_page.browser.grid.model().rowCount() > 0)
    editor = window.training.editor
    shots = []
    for number, key in enumerate(window.steps.keys, start=1):
        window.steps.go_to(key)
        if key == "layers":
            wait(lambda: editor._tree is not None, 300)
        if key == "train":
            history = window.training.train.history
            window.training.train.tabs.setCurrentWidget(history)
            history.refresh()
            if history.table.rowCount():
                history.select([0])
        if key == "evaluate":
            page = window.results.evaluate
            page.select_run(str(run))
            page.evaluate()
            wait(lambda: not page.jobs.running("evaluate"), 300)
        if key == "export":
            predict = window.results.predict
            predict.select_run(str(run))
            pictures = sorted(str(p) for p in (HYMENOPTERA / "val").rglob("*.jpg"))[3::17][:8]
            predict.add_paths(pictures)
            wait(lambda: predict.model.rowCount() == len(pictures) and not predict.jobs.running("predict"), 300)
            predict.table.selectRow(1)
        settle(1500)
        path = out / f"step-{number}-{key}.png"
        window.grab().save(str(path))
        shots.append(path)
    window.shutdown()
    window.close()
    for path in [out / "welcome.png", *shots]:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
