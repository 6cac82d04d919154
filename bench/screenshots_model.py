"""A small window with the Model and Layers steps, for trying them out and for screenshots.

    python bench/screenshots_model.py                 # pick a model, then edit what to retrain
    python bench/screenshots_model.py --model timm:resnet18 # open the layer editor on a model at once
    python bench/screenshots_model.py --screenshots docs # write docs/model-picker.png and docs/layer-editor-*.png

"Save plan ..." writes the configuration as TOML; ``python main.py train FILE --data FOLDER`` trains it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtWidgets import (QApplication, QFileDialog, QHBoxLayout, QLabel, QListWidget, QMainWindow,
                               QPushButton, QSpinBox, QStackedWidget, QVBoxLayout, QWidget)

from engine import config as config_io
from engine.config import ModelConfig, RunConfig
from engine.project.library import ModelLibrary
from gui.steps.layers import PRESETS, LayerEditor, stage_list
from gui.steps.model import ModelPicker


class ModelStepWindow(QMainWindow):
    """The two steps side by side with a step list, wired as the main window will wire them."""

    def __init__(self, config: RunConfig | None = None, library: ModelLibrary | None = None,
                 cache_dir=None) -> None:
        super().__init__()
        self.setWindowTitle("Transfer Studio \u2014 model and layers")
        self.config = config or RunConfig()
        self.steps = QListWidget()
        self.steps.addItems(["2  Model", "3  Layers"])
        self.steps.setFixedWidth(130)
        self.picker = ModelPicker(runs_folder=self.config.out, library=library, cache_dir=cache_dir)
        self.editor = LayerEditor()
        self.editor.set_config(self.config)
        self.pages = QStackedWidget()
        self.pages.addWidget(self.picker)
        self.pages.addWidget(self.editor)
        self.steps.currentRowChanged.connect(self.pages.setCurrentIndex)
        self.classes = QSpinBox()
        self.classes.setRange(2, 10000)
        self.classes.setValue(2)
        self.classes.setToolTip("How many classes your pictures have (the Data step will know).")
        self.plan_label = QLabel()
        self.plan_label.setWordWrap(True)
        save = QPushButton("Save plan ...")
        save.setToolTip("Save the configuration as TOML (python main.py train FILE trains it).")
        save.clicked.connect(self.save)
        bottom = QHBoxLayout()
        bottom.addWidget(QLabel("Classes:"))
        bottom.addWidget(self.classes)
        bottom.addWidget(self.plan_label, 1)
        bottom.addWidget(save)
        central = QWidget()
        layout = QVBoxLayout(central)
        row = QHBoxLayout()
        row.addWidget(self.steps)
        row.addWidget(self.pages, 1)
        layout.addLayout(row, 1)
        layout.addLayout(bottom)
        self.setCentralWidget(central)
        self.picker.modelChosen.connect(self.model_chosen)
        self.editor.planChanged.connect(self.plan_changed)
        self.steps.setCurrentRow(0)
        self.resize(1280, 800)

    def model_chosen(self, name: str, weights: str) -> None:
        self.config = dataclasses.replace(self.config, model=ModelConfig(name, weights))
        self.editor.open_model(name, weights, self.classes.value())
        self.steps.setCurrentRow(1)

    def plan_changed(self, phases, strategy: str) -> None:
        self.config = self.editor.apply_to(self.config)
        parts = [f"{p.name}: {p.epochs} epoch{'s' if p.epochs != 1 else ''}, "
                 f"{stage_list(p.stages, self.editor.model.tree)}" for p in phases]
        self.plan_label.setText(f"{self.config.model.name} \u2014 {strategy}: " + "; ".join(parts))

    def save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the plan", "config.toml", "TOML (*.toml)")
        if path:
            config_io.save(self.config, path)


def _wait(app: QApplication, condition, timeout_s: float = 300) -> None:
    loop = QEventLoop()
    timer = QTimer()
    timer.timeout.connect(lambda: loop.quit() if condition() else None)
    timer.start(50)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    timer.stop()


def screenshots(out: Path, model: str, import_file: str | None) -> None:
    """Render the picker and the editor with each preset to PNG files."""
    app = QApplication.instance()
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="transfer-studio-shots-"))
    library = ModelLibrary(scratch / "library")
    if import_file:
        library.import_file(import_file, "torchvision:mobilenet_v2")
    window = ModelStepWindow(RunConfig(epochs=6, out=str(scratch / "runs")), library=library)
    window.show()
    picker = window.picker
    _wait(app, lambda: bool(picker._all))
    picker.select(model)
    _wait(app, lambda: "\u2026" not in [picker.proxy.index(r, 1).data() for r in range(picker.proxy.rowCount())])
    app.processEvents()
    window.grab().save(str(out / "model-picker.png"))

    picker.none_radio.setChecked(True)
    picker.choose()
    _wait(app, lambda: window.editor.stack.currentIndex() == 2)
    editor = window.editor
    rows = editor.model.rowCount()
    editor.view.expand(editor.model.index(rows - 2, 0))  # the last body stage, to show what is inside one
    shown_phase = {"progressive": 2, "lp-ft": 1}  # a phase that shows what the strategy does
    for strategy, _, _ in PRESETS:
        editor.apply_preset(strategy)
        editor.select_phase(shown_phase.get(strategy, 0))
        app.processEvents()
        window.grab().save(str(out / f"layer-editor-{strategy}.png"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/screenshots_model.py", description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="open the layer editor on this model at once (e.g. timm:resnet18)")
    parser.add_argument("--weights", default="none", help="pretrained, none, or a weight file (with --model)")
    parser.add_argument("--screenshots", metavar="DIR", help="write the screenshots to DIR and quit")
    parser.add_argument("--import-file", help="(with --screenshots) a mobilenet_v2 weight file to import first")
    args = parser.parse_args(argv)
    if args.screenshots:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # screenshots need no display
    app = QApplication.instance() or QApplication(sys.argv[:1])
    if args.screenshots:
        screenshots(Path(args.screenshots), args.model or "timm:resnet18", args.import_file)
        return 0
    window = ModelStepWindow()
    window.show()
    if args.model:
        window.model_chosen(args.model, args.weights)
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())
