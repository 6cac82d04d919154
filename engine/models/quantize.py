"""ONNX Runtime's static int8 quantisation of an ONNX file, and what of it stays in float.

Shared by the int8 export (engine.results.int8) and the frozen pass in int8 (engine.train.prefix): QDQ format,
8-bit weights per output channel, unsigned 8-bit activations whose ranges are calibrated on a few of the user's own
pictures, each range cut at the 99.999th percentile of the values seen (a few extreme values would otherwise stretch
it: on the ants/bees MobileNetV2 teacher, min-max ranges lost 1.3 points of validation accuracy, percentile ones
0.7). Biases stay in float: ONNX Runtime turns them into the 32-bit integers of its 8-bit operators when it loads the
file (MobileNetV2 still runs as 52 QLinearConv, as fast), while stored quantised each also needs a scale per channel.
With that and the exporter's notes removed (``strip_notes``), MobileNetV2's int8 file went from 0.30x to 0.27x the size
of the fp32 one. ``OPS_TO_QUANTIZE`` None hands the quantiser every operator it knows.
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

__all__ = ["OPS_TO_QUANTIZE", "float_operators", "float_sentence", "quantize_file", "quantized_onnx"]

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


def quantized_onnx(fp32: bytes, calibration: np.ndarray, input_name: str, *, per_channel: bool = True,
                   method: str = "percentile", cache: Path | None = None) -> tuple[bytes, bool]:
    """``quantize_file`` on the bytes of an ONNX file: the int8 file's bytes, and whether they were read back from
    ``cache`` (a folder of engine.diskcache entries: the frozen-output store's, so that its size limit and
    least-recently-used trimming cover them too). The entry's key is a hash of everything the result depends on --
    the fp32 file, the calibration pictures (the preprocessed tensors themselves), the settings and ONNX Runtime's
    version -- so a hit is the file quantising would write again."""
    import hashlib
    import json

    import onnxruntime

    from engine import diskcache

    entry = None
    if cache is not None:
        h = hashlib.sha256()
        h.update(json.dumps({"what": "int8 onnx", "format": 1, "input": input_name, "per_channel": per_channel,
                             "method": method, "onnxruntime": onnxruntime.__version__, "bias": "float",
                             "calibration": [str(calibration.dtype), list(calibration.shape)],
                             "ops": OPS_TO_QUANTIZE}, sort_keys=True).encode())
        h.update(fp32)
        h.update(np.ascontiguousarray(calibration).tobytes())
        entry = diskcache.entry_path(Path(cache), h.hexdigest()[:40])
        try:
            raw = diskcache.read(entry)
            if raw is not None and raw.dtype == np.uint8 and raw.ndim == 1 and raw.size:
                diskcache.touch(entry)
                return raw.tobytes(), True
        except ValueError:  # cut short by a crash: made again
            diskcache.drop(entry)
    with tempfile.TemporaryDirectory(prefix="ts-int8-bytes-") as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(fp32)
        quantize_file(source, target, calibration, input_name, per_channel=per_channel, method=method)
        data = target.read_bytes()
    if entry is not None:
        diskcache.write(entry, np.frombuffer(data, dtype=np.uint8))  # a full or read-only disk: not kept, no harm
    return data, False


def quantize_file(fp32: Path, int8: Path, calibration: np.ndarray, input_name: str, *, per_channel: bool = True,
                  method: str = "percentile") -> None:
    """Static QDQ quantisation of ``fp32`` into ``int8`` (written atomically). ``per_channel``: a scale per output
    channel of each weight (the export's choice: MobileNetV2's depthwise filters differ too much for one scale) or
    one per weight tensor (faster kernels: the frozen pass's choice, whose outputs are checked before use);
    ``method``: how activation ranges are calibrated, "percentile" (99.999th: the export's choice) or "minmax" (about
    3 times faster to calibrate: the frozen pass's choice)."""
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
        clean, source, quantized = Path(tmp) / "clean.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        model = onnx.load(str(fp32))
        strip_notes(model)
        onnx.save(model, str(clean))
        del model
        try:  # shape inference and graph clean-up that the quantiser recommends; optional
            quant_pre_process(str(clean), str(source), skip_symbolic_shape=True)
        except Exception:
            source = clean
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrator's progress notes are not for the user
            quantize_static(str(source), str(quantized), _Calibration(input_name, calibration),
                            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, per_channel=per_channel,
                            calibrate_method={"percentile": CalibrationMethod.Percentile,
                                              "minmax": CalibrationMethod.MinMax}[method],
                            op_types_to_quantize=OPS_TO_QUANTIZE,
                            extra_options={"QuantizeBias": False})
        model = onnx.load(str(quantized))
        strip_notes(model)
        files.atomic_write(int8, lambda target: onnx.save(model, str(target)))


def strip_notes(model) -> None:
    """What the file does not need to run, removed in place: the PyTorch exporter's notes on every node (its
    ``metadata_props``: the Python stack trace, with this computer's file paths, and the module names that made the
    node; they were 7 % of MobileNetV2's int8 file), doc strings, and the shapes of intermediate values (ONNX
    Runtime infers them when it loads the file)."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.value_info[:]
