"""ONNX Runtime's static int8 quantisation of an ONNX file, and what of it stays in float.

Shared by the int8 export (engine.results.int8) and the frozen pass in int8 (engine.train.prefix): QDQ format,
8-bit weights per output channel, unsigned 8-bit activations whose ranges are calibrated on a few of the user's own
pictures, each range cut at the 99.999th percentile of the values seen (a few extreme values would otherwise stretch
it: on the ants/bees MobileNetV2 teacher, min-max ranges lost 1.3 points of validation accuracy, percentile ones
0.7). ``OPS_TO_QUANTIZE`` None hands the quantiser every operator it knows.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from engine import files

__all__ = ["OPS_TO_QUANTIZE", "float_operators", "float_sentence", "quantize_file"]

OPS_TO_QUANTIZE: list[str] | None = None
# Operators that only move or reshape data (no arithmetic): never named among those "left in float".
_PLUMBING = {"Shape", "Constant", "ConstantOfShape", "Cast", "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
             "Concat", "Gather", "Slice", "Transpose", "Expand", "Range", "QuantizeLinear", "DequantizeLinear"}



class _Calibration:
    """onnxruntime.quantization's CalibrationDataReader over preprocessed pictures, one at a time."""

    def __init__(self, name: str, pictures: np.ndarray):
        self.name, self.pictures, self.i = name, pictures, 0

    def get_next(self):
        if self.i >= len(self.pictures):
            return None
        self.i += 1
        return {self.name: self.pictures[self.i - 1:self.i]}

    def rewind(self):
        self.i = 0


def float_operators(fp32_path: str | os.PathLike, int8_path: str | os.PathLike) -> tuple[dict, int]:
    """The arithmetic operators of the int8 file that still compute in float (their data input is not the output of
    a DequantizeLinear), by type; and how many compute on 8-bit inputs."""
    import onnx

    model = onnx.load(str(int8_path), load_external_data=False)
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    floats, quantized = Counter(), 0
    for node in model.graph.node:
        if node.op_type in _PLUMBING or not node.input:
            continue
        if node.input[0] in dequantized:
            quantized += 1
        else:
            floats[node.op_type] += 1
    return dict(sorted(floats.items(), key=lambda kv: (-kv[1], kv[0]))), quantized


def float_sentence(floats: dict, quantized: int) -> str:
    if not floats:
        return ""
    listed = ", ".join(f"{n} {op}" for op, n in floats.items())
    if quantized == 0:
        return (f"None of this model's operators can be quantised by ONNX Runtime ({listed}): the int8 file computes "
                "in float like the fp32 one, so it brings no gain; use model.onnx.")
    return (f"Left in float because ONNX Runtime does not quantise them here: {listed} operator"
            f"{'s' if sum(floats.values()) > 1 else ''} (the {quantized} others compute in 8 bits).")


def quantize_file(fp32: Path, int8: Path, calibration: np.ndarray, input_name: str) -> None:
    """Static QDQ quantisation of ``fp32`` into ``int8`` (written atomically)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import onnx
    from onnxruntime.quantization.registry import QDQRegistry

    present = {n.op_type for n in onnx.load(str(fp32), load_external_data=False).graph.node}
    if not present & set(OPS_TO_QUANTIZE if OPS_TO_QUANTIZE is not None else QDQRegistry):
        # Nothing the quantiser knows: the file stays in float (float_operators and float_sentence say so).
        files.atomic_write(int8, lambda target: Path(target).write_bytes(Path(fp32).read_bytes()))
        return
    with tempfile.TemporaryDirectory(prefix="ts-int8-") as tmp:
        source = Path(tmp) / "pre.onnx"
        try:  # shape inference and graph clean-up that the quantiser recommends; optional
            quant_pre_process(str(fp32), str(source), skip_symbolic_shape=True)
        except Exception:
            source = fp32

        def write(target):
            with contextlib.redirect_stdout(io.StringIO()):  # the calibrator's progress notes are not for the user
                quantize_static(str(source), str(target), _Calibration(input_name, calibration),
                                quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, per_channel=True,
                                calibrate_method=CalibrationMethod.Percentile, op_types_to_quantize=OPS_TO_QUANTIZE)
        files.atomic_write(int8, write)
