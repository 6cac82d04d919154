"""Screenshots of the Predict & Export step with pictures unlike the training pictures (docs/shift-*.png):
flagged pictures in the table, the drift report of a darkened folder, and the *Adapt to these pictures* dialog.

    python bench/screenshots_shift.py --run RUN [--out docs]

RUN: an ants-vs-bees run folder (bench/bench_shift.py trains one). Pictures are made in a temporary folder: a few
real validation pictures, a few generated pictures of nothing (the bench's), and the validation pictures darkened."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_shift import DATA, make_generated, make_shifted, shift_dark  # noqa: E402
from bench.screenshots_results import settle, wait  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", required=True)
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args()
    from PySide6.QtWidgets import QApplication

    from gui.steps.predict import PredictPage

    app = QApplication.instance() or QApplication([])  # noqa: F841
    work = Path(tempfile.mkdtemp(prefix="shots-shift-"))
    new = work / "new pictures"
    rng = random.Random(0)
    for cls in ("ants", "bees"):
        for p in rng.sample(sorted((DATA / "val" / cls).glob("*.jpg")), 5):
            (new / cls).mkdir(parents=True, exist_ok=True)
            shutil.copy(p, new / cls / p.name)
    generated = make_generated(work, 6, 1)
    for p in generated.iterdir():
        shutil.move(str(p), new / p.name)
    dark = make_shifted(work, "darkened", shift_dark, DATA / "val", 7)
    out = Path(args.out)
    page = PredictPage()
    page.resize(1280, 900)
    run = Path(args.run)
    page.set_runs_folder(run.parent)
    page.select_run(str(run))
    page.show()
    page.add_paths([str(new)])
    assert wait(lambda: page.model.rowCount() == 16 and not page.jobs.running("predict"))
    flagged = next(r for r, p in enumerate(page.model.rows) if p.in_domain is False)
    page.table.selectRow(flagged)
    settle(2500)
    page.grab().save(str(out / "shift-predict-flagged.png"))
    page.drift(str(dark))
    assert wait(lambda: page.last_report is not None)
    settle(800)
    page.grab().save(str(out / "shift-drift-report.png"))
    dialog = page.open_adapt("unlabelled")
    dialog.resize(660, 420)
    settle(500)
    dialog.grab().save(str(out / "shift-adapt-dialog.png"))
    dialog.go_button.click()
    assert wait(lambda: dialog.result_run is not None or "color" in dialog.result.text())
    settle(300)
    dialog.adjustSize()
    dialog.grab().save(str(out / "shift-adapt-done.png"))
    print(dialog.result.text())
    if dialog.result_run:
        shutil.rmtree(dialog.result_run, ignore_errors=True)  # the screenshot's run is not kept
    page.shutdown()
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out}/shift-*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
