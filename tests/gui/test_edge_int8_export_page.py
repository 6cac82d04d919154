"""The Predict & Export step offers the int8 ONNX export: picked in the format list, it runs as the step's background
job, writes both ONNX files with the description and the model card, and says in a sentence what the 8-bit file
costs and gains (accuracy, speed and size against full precision, as measured and recorded in model.json)."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt

from engine.results.export import CARD
from tests.gui.test_predict_page import open_page

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_int8_export_is_offered_and_shows_what_it_measured(qtbot, tiny_run, tmp_path):
    page = open_page(qtbot, tiny_run.parent)
    try:
        index = page.format_combo.findData("onnx-int8")
        assert index >= 0, "the format list offers the int8 export"
        assert "8-bit" in page.format_combo.itemData(index, Qt.ItemDataRole.ToolTipRole)
        out = tmp_path / "edge"
        page.out_edit.setText(str(out))
        page.format_combo.setCurrentIndex(index)
        with qtbot.waitSignal(page.exported, timeout=300_000) as done:
            qtbot.mouseClick(page.export_button, Qt.MouseButton.LeftButton)
            assert page.jobs.running("export")  # the one job service runs it, in the background
        result = done.args[0]
        for name in ("model.int8.onnx", "model.onnx", "model.json", CARD):
            assert (out / name).is_file(), name
        check = json.loads((out / "model.json").read_text(encoding="utf-8"))["checks"]["onnx-int8"]
        shown = page.export_result.text()
        assert "8 bits" in shown and "Traceback" not in shown
        assert f"{100 * check['accuracy_int8']:.1f} % against {100 * check['accuracy_fp32']:.1f} %" in shown
        assert f"{check['accuracy_difference_points']:+.1f} points" in shown
        assert f"{check['speedup']:.1f}x as fast" in shown and f"{check['latency_ms_int8']:.1f} ms" in shown
        assert f"{check['size_ratio']:.2f}x the size" in shown
        assert "model.int8.onnx" in shown and str(out / CARD) in shown
        assert result.path == str(out / "model.int8.onnx")
        qtbot.waitUntil(lambda: not page.jobs.running("export"), timeout=10_000)
        assert page.export_button.isEnabled() and not page.export_cancel.isVisible()
    finally:
        page.shutdown()
