"""The int8 export of a multi-task model (issue #17): its accuracy probe measures each task on its own outputs and
labelled pictures, not the combinations of labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.engine.test_multitask import config_for, make_task_csv

pytestmark = pytest.mark.usefixtures("quick_training")


def test_the_int8_probe_measures_each_task(tmp_path):
    from engine.results.evaluate import evaluate_run
    from engine.results.export import export_run
    from engine.train.trainer import fit

    source = make_task_csv(tmp_path / "pictures", per=4, missing_every=4)
    result = fit(config_for(source, tmp_path / "runs"))
    assert result.status == "completed", result.error
    run = Path(result.run_dir)
    export_run(run, "onnx-int8", tmp_path / "export")
    check = json.loads((tmp_path / "export" / "model.json").read_text(encoding="utf-8"))["checks"]["onnx-int8"]
    evaluation = evaluate_run(run, device="cpu")
    assert set(check["task_accuracy"]) == {"colour", "shape"}
    for task, got in check["task_accuracy"].items():
        # fp32 ONNX on the task's own outputs gives the evaluation's accuracy for that task, on its labelled pictures
        assert got["fp32"] == pytest.approx(evaluation.tasks[task].splits["val"].accuracy, abs=1e-6)
        assert got["pictures"] == len(evaluation.tasks[task].splits["val"].samples)
        assert 0.0 <= got["int8"] <= 1.0
    assert check["accuracy_fp32"] == pytest.approx((check["task_accuracy"]["colour"]["fp32"]
                                                    + check["task_accuracy"]["shape"]["fp32"]) / 2)
    card = (tmp_path / "export" / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Accuracy per task" in card and "shape" in card
