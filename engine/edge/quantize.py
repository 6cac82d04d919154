"""int8 for the edge, in one place: the int8 ONNX export with its measured cost (engine.results.int8, which
``export RUN --format onnx-int8`` runs) and the static quantisation it shares with the frozen pass in int8
(engine.models.quantize). Those live in their layers because the export and training use them; this module is the
public face for code above them (benchmarks, scripts)."""

from __future__ import annotations

import os

from engine.models.quantize import float_operators, float_sentence, quantize_file
from engine.results.int8 import CALIBRATION_PICTURES, Int8ExportResult, card_lines

__all__ = ["CALIBRATION_PICTURES", "Int8ExportResult", "card_lines", "export_int8", "float_operators",
           "float_sentence", "quantize_file"]


def export_int8(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, **options) -> Int8ExportResult:
    """``export RUN --format onnx-int8``: see engine.results.int8."""
    from engine.results.export import export_run

    return export_run(run_dir, "onnx-int8", out, **options)
