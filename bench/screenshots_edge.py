"""Screenshots of the edge features in the Predict & Export step.

    python bench/screenshots_edge.py --student RUN [--out docs]    # docs/edge-distill.png
    python bench/screenshots_edge.py --export RUN [--out docs]     # docs/edge-export-int8.png

--student: RUN is a distilled run folder (``main.py distill`` or ``bench/bench_edge.py`` makes one). The *Distil into
a smaller model* dialog is opened for its teacher with the run's own settings, and the run's recorded outcome is shown
the way the dialog shows a finished job: the epoch lines from its metrics.jsonl, the teacher-vs-student table from its
distill.json (nothing is trained again).

--export: RUN is any finished run. The Predict & Export step exports it as *ONNX int8* for real (into a temporary
folder, through the step's own button and background job) and is captured with the measured sentence it shows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", help="a distilled run folder")
    parser.add_argument("--export", help="a run to export as ONNX int8 in the Predict & Export step")
    parser.add_argument("--out", default=str(REPO / "docs"))
    args = parser.parse_args(argv)
    if args.export:
        return export_int8_shot(Path(args.export), Path(args.out))
    if not args.student:
        parser.error("give --student RUN or --export RUN")
    from PySide6.QtWidgets import QApplication

    from engine.config import load
    from engine.edge.distill import TABLE, DistillResult
    from engine.project import runs
    from engine.train.trainer import RunResult
    from gui.widgets.distill import DistillDialog

    app = QApplication.instance() or QApplication([])
    student = Path(args.student)
    config = load(student / runs.CONFIG)
    summary = runs.read_summary(student)
    dialog = DistillDialog(config.distill.teacher)
    dialog.student_combo.setCurrentText(config.model.name)
    index = dialog.weights_combo.findData(config.model.weights)
    if index < 0:  # a weight file: chosen as the dialog's "file" entry shows one after the file dialog
        index = dialog.weights_combo.findData("file")
        dialog.weights_file = config.model.weights
        dialog.weights_combo.setItemText(index, f"File: {Path(config.model.weights).name}")
    dialog.weights_combo.setCurrentIndex(index)
    dialog.epochs_spin.setValue(config.epochs)
    dialog.soft_spin.setValue(config.distill.soft_weight)
    dialog.temperature_spin.setValue(config.distill.temperature)
    dialog.feature_spin.setValue(config.distill.feature_weight)
    records = runs.read_metrics(student)
    best = max(r["val_acc"] for r in records)
    for r in records:
        dialog.log.appendPlainText(f"Epoch {r['epoch']} of {config.epochs}: validation accuracy "
                                   f"{100 * r['val_acc']:.1f} %" + (" (best so far)" if r["val_acc"] == best else ""))
    dialog.progress.setRange(0, config.epochs)
    dialog.progress.setValue(len(records))
    table = json.loads((student / TABLE).read_text(encoding="utf-8"))
    dialog._done(DistillResult(RunResult("completed", str(student), summary.get("best_val_acc"),  # noqa: SLF001
                                         summary.get("best_epoch"), len(records), None), table))
    dialog.progress.setVisible(True)
    dialog.show()
    for _ in range(5):
        app.processEvents()
    out = Path(args.out) / "edge-distill.png"
    dialog.grab().save(str(out))
    print(f"wrote {out}")
    return 0


def export_int8_shot(run: Path, out: Path) -> int:
    import tempfile
    import time

    from PySide6.QtWidgets import QApplication

    from gui.steps.predict import PredictPage

    app = QApplication.instance() or QApplication([])
    page = PredictPage()
    page.resize(1200, 800)
    page.set_runs_folder(str(run.parent))
    page.select_run(str(run))
    page.show()
    with tempfile.TemporaryDirectory() as tmp:
        page.out_edit.setText(str(Path(tmp) / "export"))
        page.format_combo.setCurrentIndex(page.format_combo.findData("onnx-int8"))
        page.export()
        began = time.monotonic()
        while page.jobs.running("export") and time.monotonic() - began < 900:
            app.processEvents()
            time.sleep(0.05)
        for _ in range(10):
            app.processEvents()
        target = out / "edge-export-int8.png"
        page.grab().save(str(target))
        print(page.export_result.text())
    page.shutdown()
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
