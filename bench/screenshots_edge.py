"""Screenshot of the *Distil into a smaller model* dialog (Predict & Export), as it looks when a distillation ended.

    python bench/screenshots_edge.py --student RUN [--out docs]

RUN is a distilled run folder (``main.py distill`` or ``bench/bench_edge.py`` makes one). The dialog is opened for its
teacher with the run's own settings, and the run's recorded outcome is shown the way the dialog shows a finished job:
the epoch lines from its metrics.jsonl, the teacher-vs-student table from its distill.json (nothing is trained again).
Writes docs/edge-distill.png.
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
    parser.add_argument("--student", required=True, help="a distilled run folder")
    parser.add_argument("--out", default=str(REPO / "docs"))
    args = parser.parse_args(argv)
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
    dialog.weights_combo.setCurrentIndex(max(0, dialog.weights_combo.findData(config.model.weights)))
    dialog.epochs_spin.setValue(config.epochs)
    dialog.soft_spin.setValue(config.distill.soft_weight)
    dialog.temperature_spin.setValue(config.distill.temperature)
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


if __name__ == "__main__":
    sys.exit(main())
