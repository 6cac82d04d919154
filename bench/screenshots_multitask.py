"""Screenshots of the Data, Layers, Evaluate and Predict steps on a multi-task project (issue #17), 1280 x 800,
offscreen: docs/multitask-data.png, docs/multitask-layers.png, docs/multitask-evaluate.png,
docs/multitask-predict.png (the tint task chosen), and the Layers step's LoRA preset, docs/multitask-lora.png.

    python bench/screenshots_multitask.py [--out docs]

The project: generated pictures with two attributes (a pattern drawn in a tint, after the demo project's recipe),
listed in a CSV ``path,pattern,tint`` where some pictures lack their tint; the model: MobileNetV2 with the shared
ImageNet weights (../shared), trained for a few epochs (feature extraction) before the Evaluate step is shown.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import random
import sys
import tempfile
from pathlib import Path

from screenshots_results import REPO, SIZE, WEIGHTS, settle, wait

TINTS = {"red": (230, 60, 50), "green": (60, 200, 80), "blue": (60, 90, 230)}


def make_pictures(root: Path, per: int = 12) -> Path:
    from PIL import ImageOps

    from engine.project.demo import draw_pattern

    rng = random.Random(0)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for pattern in ("stripes", "checks", "dots"):
        for tint, rgb in TINTS.items():
            for i in range(per):
                picture = ImageOps.colorize(ImageOps.grayscale(draw_pattern(pattern, 96, rng)), (20, 20, 20), rgb)
                name = f"{pattern}_{tint}_{i:02d}.png"
                picture.save(root / name)
                rows.append([name, pattern, "" if i % 5 == 4 else tint])
    with (root / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "pattern", "tint"])
        writer.writerows(rows)
    return root / "labels.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "docs"))
    args = parser.parse_args(argv)
    if not WEIGHTS.exists():
        raise SystemExit(f"needs {WEIGHTS} (only on the project's own machines)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # (a QImage saved into a missing folder fails without a word)
    scratch = Path(tempfile.mkdtemp(prefix="transfer-studio-multitask-shots-"))
    source = make_pictures(scratch / "patterns")

    from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from engine.train.trainer import fit

    run = fit(RunConfig(data=DataConfig(source=str(source)), model=ModelConfig("torchvision:mobilenet_v2",
                                                                                str(WEIGHTS)),
                        strategy="feature-extraction", epochs=4, out=str(scratch / "runs"),
                        train=TrainConfig(device="cpu")))
    assert run.status == "completed", run.error

    from PySide6.QtWidgets import QApplication

    from gui.main_window import MainWindow
    from gui.settings import file_settings

    app = QApplication.instance() or QApplication(sys.argv[:1])  # noqa: F841
    window = MainWindow(settings=file_settings(scratch / "settings.ini"), data_dir=scratch / "app")
    window.ask_unsaved = lambda: "discard"
    window.resize(*SIZE)
    window.show()
    window.open_folder(source)
    wait(lambda: window.project.dataset is not None and not window.data_page.scanning, 300)
    config = window.project.config
    window.project.set_config(dataclasses.replace(
        config, model=dataclasses.replace(config.model, name="torchvision:mobilenet_v2", weights=str(WEIGHTS)),
        strategy="feature-extraction", epochs=4, out=str(scratch / "runs")))
    wait(lambda: window.data_page.browser.grid.model().rowCount() > 0, 60)
    window.steps.go_to("data")
    settle(5000)  # the thumbnails arrive
    window.grab().save(str(out / "multitask-data.png"))

    editor = window.training.editor
    window.steps.go_to("layers")
    wait(lambda: editor._tree is not None, 300)
    from engine.models.layers import HEAD

    head = editor.model.find(f"stage:{HEAD}")
    editor.view.expand(head)  # the head stage: one linear head per task, one row each
    settle(300)
    for row in range(editor.model.rowCount(head)):
        editor.view.expand(editor.model.index(row, 0, head))
    editor.view.scrollTo(head)
    settle(800)
    window.grab().save(str(out / "multitask-layers.png"))
    editor.apply_preset("lora")
    settle(800)
    window.grab().save(str(out / "multitask-lora.png"))
    editor.apply_preset("feature-extraction")

    window.steps.go_to("evaluate")
    page = window.results.evaluate
    page.refresh_runs(str(run.run_dir))
    page.select_run(str(run.run_dir))
    page.evaluate()
    wait(lambda: not page.jobs.running("evaluate"), 300)
    index = page.task_chooser.combo.findData("tint")
    page.task_chooser.combo.setCurrentIndex(index)
    settle(1500)
    window.grab().save(str(out / "multitask-evaluate.png"))

    # -- Predict & Export: new pictures, the tint task chosen, one picture with its heat map for that task
    predict = window.results.predict
    predict.select_run(str(run.run_dir))
    window.steps.go_to("export")
    new = scratch / "new"
    new.mkdir()
    for name in sorted(p.name for p in source.parent.glob("*.png"))[::9][:8]:
        (new / name).write_bytes((source.parent / name).read_bytes())
    predict.add_paths([str(new)])
    wait(lambda: predict.model.rowCount() == 8 and not predict.jobs.running("predict"), 300)
    predict.task_chooser.combo.setCurrentIndex(predict.task_chooser.combo.findData("tint"))
    predict.table.selectRow(1)
    predict.panel.heat.setChecked(True)
    wait(lambda: predict.panel.showing_overlay or "color" in predict.panel.status.text(), 120)
    wait(lambda: predict.loader.is_idle(), 60)
    settle(1500)
    window.grab().save(str(out / "multitask-predict.png"))
    window.shutdown()
    window.close()
    print("wrote", *(out / f"multitask-{k}.png" for k in ("data", "layers", "lora", "evaluate", "predict")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
