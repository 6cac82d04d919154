"""Models for the edge: distillation into a smaller model (``distill``) and the int8 ONNX export (``quantize``)."""
